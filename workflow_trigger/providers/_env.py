"""Providers built from environment variables: the one reading behind every ``from_env()``.

The variables are the ones ``workflow-trigger --help`` lists (the command
line builds its providers here too). An empty variable counts as unset. A
missing one is an :class:`~workflow_trigger.errors.InvalidInputError` naming
it; no value is ever quoted in a message, since most of them are keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInputError

__all__ = ["ENVIRONMENT", "Env"]

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


class Env:
    """Reads a provider's variables from ``env`` (or ``os.environ``)."""

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
