"""Providers for the command line, configured from the environment (never from argv).

Credentials come from environment variables or ``--api-key-file``, so they
never land in shell history or ``ps`` output. A token names its platform, so
``status`` / ``wait`` / ``cancel`` need only that platform's variables.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from .errors import InvalidInputError
from .models import Execution
from .providers import AwaitStep, AwaitStepFunction, Codika, Pinkfish, Provider, RunsApi

__all__ = ["ENVIRONMENT_HELP", "PLATFORMS", "provider_for", "provider_for_token"]

#: CLI name -> provider kind (as in tokens)
PLATFORMS = {
    "codika": "codika",
    "runs-api": "runs_api",
    "awaitstep": "awaitstep",
    "awaitstep-function": "awaitstep_function",
    "pinkfish": "pinkfish",
}

ENVIRONMENT_HELP = """\
credentials and settings (environment variables):
  codika              CODIKA_API_KEY (or CODIKA_ORG_KEY), CODIKA_PROCESS_INSTANCE_ID,
                      CODIKA_BASE_URL, CODIKA_SIGNING_SECRET
  runs-api            RUNS_API_KEY, RUNS_API_BASE_URL, RUNS_API_CONNECTION_ID
  awaitstep           AWAITSTEP_API_KEY, AWAITSTEP_CONNECTION_ID, AWAITSTEP_BASE_URL
  awaitstep-function  AWAITSTEP_FUNCTION_URL
  pinkfish            PINKFISH_API_KEY, PINKFISH_BASE_URL, PINKFISH_WAIT (async|sync)
  --api-key-file F    reads the platform's key from a file instead
"""


class _Settings:
    def __init__(self, env: Mapping[str, str], key_file: str | None, base_url: str | None) -> None:
        self.env = env
        self.key_file = key_file
        self.base_url = base_url

    def get(self, name: str) -> str | None:
        value = self.env.get(name)
        return value if value else None

    def need(self, name: str, what: str) -> str:
        value = self.get(name)
        if value is None:
            raise InvalidInputError(f"{what} is missing: set the {name} environment variable")
        return value

    def key(self, name: str, what: str, *, optional: bool = False) -> str | None:
        if self.key_file is not None:
            try:
                with open(self.key_file, encoding="utf-8") as file:
                    return file.read().strip()
            except OSError as exc:
                raise InvalidInputError(
                    f"cannot read --api-key-file {self.key_file!r}: {exc.strerror}"
                ) from exc
        return self.get(name) if optional else self.need(name, what)

    def url(self, name: str) -> dict[str, Any]:
        """``base_url=`` for the provider when one is set, else nothing (its default)."""
        value = self.base_url or self.get(name)
        return {"base_url": value} if value else {}


def _codika(s: _Settings, extras: Mapping[str, str]) -> Provider:
    instance = s.get("CODIKA_PROCESS_INSTANCE_ID") or extras.get("process_instance_id")
    if instance is None:
        raise InvalidInputError(
            "the Codika process instance id is missing: set CODIKA_PROCESS_INSTANCE_ID"
        )
    org_key = s.get("CODIKA_ORG_KEY")
    api_key = s.key("CODIKA_API_KEY", "the Codika instance key", optional=org_key is not None)
    return Codika(
        instance,
        api_key=api_key,
        org_key=org_key if api_key is None else None,
        signing_secret=s.get("CODIKA_SIGNING_SECRET"),
        **s.url("CODIKA_BASE_URL"),
    )


def _runs_api(s: _Settings, extras: Mapping[str, str]) -> Provider:
    base = s.base_url or s.need("RUNS_API_BASE_URL", "the Runs API base URL")
    key = s.key("RUNS_API_KEY", "the Runs API key") or ""
    return RunsApi(base, key, connection_id=s.get("RUNS_API_CONNECTION_ID"))


def _awaitstep(s: _Settings, extras: Mapping[str, str]) -> Provider:
    key = s.key("AWAITSTEP_API_KEY", "the AwaitStep API key") or ""
    connection = s.get("AWAITSTEP_CONNECTION_ID") or extras.get("connection_id")
    if connection is None:
        raise InvalidInputError(
            "the AwaitStep connection id is missing: set AWAITSTEP_CONNECTION_ID"
        )
    return AwaitStep(key, connection, **s.url("AWAITSTEP_BASE_URL"))


def _awaitstep_function(s: _Settings, extras: Mapping[str, str]) -> Provider:
    url = s.base_url or s.need("AWAITSTEP_FUNCTION_URL", "the function's URL")
    return AwaitStepFunction(url)


def _pinkfish(s: _Settings, extras: Mapping[str, str]) -> Provider:
    key = s.key("PINKFISH_API_KEY", "the Pinkfish API key") or ""
    wait: Any = s.get("PINKFISH_WAIT") or "async"
    return Pinkfish(key, wait=wait, **s.url("PINKFISH_BASE_URL"))


_BUILDERS: dict[str, Callable[[_Settings, Mapping[str, str]], Provider]] = {
    "codika": _codika,
    "runs_api": _runs_api,
    "awaitstep": _awaitstep,
    "awaitstep_function": _awaitstep_function,
    "pinkfish": _pinkfish,
}


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
    if kind not in _BUILDERS:
        names = ", ".join(PLATFORMS)
        raise InvalidInputError(f"unknown platform {platform!r}: use one of {names}")
    settings = _Settings(os.environ if env is None else env, key_file, base_url)
    return _BUILDERS[kind](settings, extras or {})


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
