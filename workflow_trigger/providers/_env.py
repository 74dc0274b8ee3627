"""Providers built from environment variables: the one reading behind every ``from_env()``.

The variables are the ones ``workflow-trigger --help`` lists (the command
line builds its providers here too). An empty variable counts as unset. A
missing one is an :class:`~workflow_trigger.errors.InvalidInputError` naming
it; no value is ever quoted in a message, since most of them are keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError

if TYPE_CHECKING:
    from .awaitstep import AwaitStep
    from .awaitstep_function import AwaitStepFunction
    from .codika import Codika
    from .pinkfish import Pinkfish
    from .runs_api import RunsApi

__all__ = [
    "ENVIRONMENT",
    "awaitstep_from_env",
    "awaitstep_function_from_env",
    "codika_from_env",
    "pinkfish_from_env",
    "runs_api_from_env",
]

#: provider kind -> (variable, what it holds); required ones are marked in the text
ENVIRONMENT: dict[str, tuple[tuple[str, str], ...]] = {
    "codika": (
        ("CODIKA_API_KEY", "the instance key (ck_...); or CODIKA_ORG_KEY"),
        ("CODIKA_ORG_KEY", "an organisation key (cko_...)"),
        ("CODIKA_PROCESS_INSTANCE_ID", "the process instance (pi_...); required"),
        ("CODIKA_BASE_URL", "default https://api.codika.io"),
        ("CODIKA_SIGNING_SECRET", "sign triggers as Standard Webhooks (whsec_...)"),
    ),
    "runs_api": (
        ("RUNS_API_KEY", "the key (wfk_...); required"),
        ("RUNS_API_BASE_URL", "the platform's root URL; required"),
        ("RUNS_API_CONNECTION_ID", "the connection runs use"),
    ),
    "awaitstep": (
        ("AWAITSTEP_API_KEY", "the key (ask_...); required"),
        ("AWAITSTEP_CONNECTION_ID", "the Cloudflare connection (conn_...); required"),
        ("AWAITSTEP_BASE_URL", "default https://app.awaitstep.dev"),
    ),
    "awaitstep_function": (("AWAITSTEP_FUNCTION_URL", "the function's Worker URL; required"),),
    "pinkfish": (
        ("PINKFISH_API_KEY", "the key; required"),
        ("PINKFISH_BASE_URL", "default https://triggers.app.pinkfish.ai"),
        ("PINKFISH_WAIT", "async (default) or sync"),
    ),
}


class _Env:
    def __init__(self, env: Mapping[str, str] | None) -> None:
        self.env = os.environ if env is None else env

    def get(self, name: str) -> str | None:
        value = self.env.get(name)
        return value if value else None

    def need(self, name: str, what: str) -> str:
        value = self.get(name)
        if value is None:
            raise InvalidInputError(f"{what} is missing: set the {name} environment variable")
        return value

    def url(self, name: str) -> dict[str, Any]:
        """``base_url=`` when the variable is set, else nothing (the provider's default)."""
        value = self.get(name)
        return {"base_url": value} if value else {}


def codika_from_env(env: Mapping[str, str] | None = None) -> Codika:
    from .codika import Codika

    e = _Env(env)
    instance = e.need("CODIKA_PROCESS_INSTANCE_ID", "the Codika process instance id")
    org_key = e.get("CODIKA_ORG_KEY")
    api_key = e.get("CODIKA_API_KEY")
    if api_key is None and org_key is None:
        e.need("CODIKA_API_KEY", "the Codika instance key (or CODIKA_ORG_KEY)")
    return Codika(
        instance,
        api_key=api_key,
        org_key=org_key if api_key is None else None,
        signing_secret=e.get("CODIKA_SIGNING_SECRET"),
        **e.url("CODIKA_BASE_URL"),
    )


def runs_api_from_env(env: Mapping[str, str] | None = None) -> RunsApi:
    from .runs_api import RunsApi

    e = _Env(env)
    base = e.need("RUNS_API_BASE_URL", "the Runs API base URL")
    key = e.need("RUNS_API_KEY", "the Runs API key")
    return RunsApi(base, key, connection_id=e.get("RUNS_API_CONNECTION_ID"))


def awaitstep_from_env(env: Mapping[str, str] | None = None) -> AwaitStep:
    from .awaitstep import AwaitStep

    e = _Env(env)
    key = e.need("AWAITSTEP_API_KEY", "the AwaitStep API key")
    connection = e.need("AWAITSTEP_CONNECTION_ID", "the AwaitStep connection id")
    return AwaitStep(key, connection, **e.url("AWAITSTEP_BASE_URL"))


def awaitstep_function_from_env(env: Mapping[str, str] | None = None) -> AwaitStepFunction:
    from .awaitstep_function import AwaitStepFunction

    return AwaitStepFunction(_Env(env).need("AWAITSTEP_FUNCTION_URL", "the function's URL"))


def pinkfish_from_env(env: Mapping[str, str] | None = None) -> Pinkfish:
    from .pinkfish import Pinkfish

    e = _Env(env)
    key = e.need("PINKFISH_API_KEY", "the Pinkfish API key")
    wait = e.get("PINKFISH_WAIT") or "async"
    if wait not in ("async", "sync"):
        raise InvalidInputError("PINKFISH_WAIT must be 'async' or 'sync'")
    return Pinkfish(key, wait=wait, **e.url("PINKFISH_BASE_URL"))  # type: ignore[arg-type]
