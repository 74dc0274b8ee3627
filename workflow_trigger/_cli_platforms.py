"""Providers for the command line, configured from the environment (never from argv).

Credentials come from environment variables or ``--api-key-file``, so they
never land in shell history or ``ps`` output. A token names its platform, so
``status`` / ``wait`` / ``cancel`` need only that platform's variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .errors import InvalidInputError
from .models import Execution
from .providers import AwaitStep, AwaitStepFunction, Codika, Pinkfish, Provider, RunsApi
from .providers._env import ENVIRONMENT

__all__ = ["ENVIRONMENT_HELP", "PLATFORMS", "provider_for", "provider_for_token"]

#: CLI name -> provider kind (as in tokens)
PLATFORMS = {
    "codika": "codika",
    "runs-api": "runs_api",
    "awaitstep": "awaitstep",
    "awaitstep-function": "awaitstep_function",
    "pinkfish": "pinkfish",
}


def _environment_help() -> str:
    names = {kind: name for name, kind in PLATFORMS.items()}
    lines = ["credentials and settings (environment variables, read by Provider.from_env()):"]
    for kind, variables in ENVIRONMENT.items():
        for index, (variable, what) in enumerate(variables):
            label = names[kind] if index == 0 else ""
            lines.append(f"  {label:<19} {variable:<27} {what}")
    lines.append("  --api-key-file F    reads the platform's key from a file instead")
    lines.append("  --base-url URL      overrides the platform's URL variable")
    return "\n".join(lines) + "\n"


ENVIRONMENT_HELP = _environment_help()


#: provider kind -> the variables its key and its base URL come from (the flags override them)
_KEY = {
    "codika": "CODIKA_API_KEY",
    "runs_api": "RUNS_API_KEY",
    "awaitstep": "AWAITSTEP_API_KEY",
    "pinkfish": "PINKFISH_API_KEY",
}
_URL = {
    "codika": "CODIKA_BASE_URL",
    "runs_api": "RUNS_API_BASE_URL",
    "awaitstep": "AWAITSTEP_BASE_URL",
    "awaitstep_function": "AWAITSTEP_FUNCTION_URL",
    "pinkfish": "PINKFISH_BASE_URL",
}
#: provider kind -> (variable, the token's extra that stands in for it)
_FROM_TOKEN = {
    "codika": ("CODIKA_PROCESS_INSTANCE_ID", "process_instance_id"),
    "awaitstep": ("AWAITSTEP_CONNECTION_ID", "connection_id"),
}
_CLASSES: dict[str, type[Any]] = {
    "codika": Codika,
    "runs_api": RunsApi,
    "awaitstep": AwaitStep,
    "awaitstep_function": AwaitStepFunction,
    "pinkfish": Pinkfish,
}


def _read_key(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read().strip()
    except OSError as exc:
        raise InvalidInputError(f"cannot read --api-key-file {path!r}: {exc.strerror}") from exc


def provider_for(
    platform: str,
    *,
    key_file: str | None = None,
    base_url: str | None = None,
    env: Mapping[str, str] | None = None,
    extras: Mapping[str, str] | None = None,
) -> Provider:
    """The provider for a CLI platform name (``codika``, ``runs-api``...)."""
    kind = PLATFORMS.get(platform, platform)
    if kind not in _CLASSES:
        names = ", ".join(PLATFORMS)
        raise InvalidInputError(f"unknown platform {platform!r}: use one of {names}")
    # The flags and the token override or fill in variables; from_env does the rest.
    merged = dict(os.environ if env is None else env)
    if key_file is not None and kind in _KEY:
        merged[_KEY[kind]] = _read_key(key_file)
    if base_url:
        merged[_URL[kind]] = base_url
    if kind in _FROM_TOKEN:
        name, extra = _FROM_TOKEN[kind]
        if not merged.get(name) and (extras or {}).get(extra):
            merged[name] = (extras or {})[extra]
    provider: Provider = _CLASSES[kind].from_env(merged)
    return provider


def provider_for_token(
    token: str,
    *,
    key_file: str | None = None,
    base_url: str | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[Provider, Execution]:
    execution = Execution.from_token(token)
    provider = provider_for(
        execution.provider, key_file=key_file, base_url=base_url, env=env, extras=execution.extras
    )
    return provider, execution
