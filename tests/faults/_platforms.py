"""Every platform the suite runs against, as one parametrised fixture.

A ``Platform`` builds its provider pointed at any base URL (the emulator, or
a misbehaving server in front of it), names the workflow a test triggers, the
secrets a test greps for, and forges handles. ``platform`` runs a test once per
polling platform; ``any_platform`` adds the AwaitStep function (one POST, no
polls); ``variant`` runs once per way of holding a credential.

The emulator of this suite uses credentials that look like real ones and
appear nowhere else, so a leak cannot hide behind a default value.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import attrs
import pytest

import workflow_trigger as wt
from workflow_trigger.testing import Emulator

__all__ = [
    "FAST",
    "FAST_RETRY",
    "FUNCTION_HEADERS",
    "KEYS",
    "PLATFORMS",
    "VARIANTS",
    "Platform",
    "any_platform",
    "platform",
    "variant",
]

#: short, jitter-free intervals keep the suite fast and its request counts exact
FAST = wt.PollPolicy(interval=0.02, jitter=0.0, timeout=10.0)
FAST_RETRY = wt.RetryPolicy(attempts=4, backoff=0.01, max_backoff=0.05)

_rng = random.Random(5)
#: the emulator's credentials: unique strings, so any occurrence is a leak
KEYS: dict[str, str] = {
    "codika_api_key": "ck_live_S3CR3T_codika_7f1d9e",
    "codika_org_key": "cko_live_S3CR3T_org_91ab44",
    "codika_signing_secret": "whsec_" + base64.b64encode(_rng.randbytes(24)).decode(),
    "runs_api_api_key": "wfk_live_S3CR3T_runs_c0ffee",
    "awaitstep_api_key": "ask_live_S3CR3T_await_beef42",
    # '+' and '=' are percent-encoded in the URL path: both forms must stay hidden
    "pinkfish_api_key": "pf_live_S3CR3T+pink=fish~77",
}
FUNCTION_HEADERS = {
    "Authorization": "Bearer fn_live_S3CR3T_bearer_0a0b",
    "CF-Access-Client-Secret": "cf_live_S3CR3T_access_5150",
}


def _codika(**options: Any) -> Callable[[Emulator, str], wt.Provider]:
    def build(emu: Emulator, base_url: str) -> wt.Provider:
        kwargs = dict(options)
        if "org_key" in kwargs:
            kwargs["org_key"] = emu.codika_org_key
        elif "signing_secret" in kwargs:
            kwargs["signing_secret"] = emu.codika_signing_secret
            kwargs["api_key"] = emu.codika_api_key
        else:
            kwargs["api_key"] = emu.codika_api_key
        return wt.Codika(emu.codika_instance_id, base_url=base_url, **kwargs)

    return build


def _runs_api(emu: Emulator, base_url: str) -> wt.Provider:
    return wt.RunsApi(base_url, emu.runs_api_api_key)


def _awaitstep(emu: Emulator, base_url: str) -> wt.Provider:
    return wt.AwaitStep(emu.awaitstep_api_key, emu.awaitstep_connection_id, base_url=base_url)


def _pinkfish(**options: Any) -> Callable[[Emulator, str], wt.Provider]:
    def build(emu: Emulator, base_url: str) -> wt.Provider:
        return wt.Pinkfish(emu.pinkfish_api_key, base_url=base_url, **options)

    return build


def _function(emu: Emulator, base_url: str) -> wt.Provider:
    return wt.AwaitStepFunction(f"{base_url}/fn/score-lead", headers=FUNCTION_HEADERS)


@attrs.frozen
class Platform:
    """One platform (or one credential variant of it) under test."""

    name: str
    kind: str  # the provider's kind, as on Execution.provider
    emulated: str  # the emulator's platform name, for Fault(platform=...)
    workflow: str
    build: Callable[[Emulator, str], wt.Provider] = attrs.field(repr=False)
    secret_names: tuple[str, ...] = ()
    polls: bool = True
    fetches_results: bool = False  # Pinkfish: one GET of the results once COMPLETE
    idempotent: bool = False  # the platform honours an idempotency key

    def provider(self, emu: Emulator, base_url: str | None = None) -> wt.Provider:
        """The provider, pointed at ``base_url`` (the emulator's by default)."""
        return self.build(emu, base_url or emu.base_url)

    def secrets(self, emu: Emulator) -> tuple[str, ...]:
        """Every credential value (and its URL-encoded form) that must never show."""
        values: list[str] = []
        for name in self.secret_names:
            value = FUNCTION_HEADERS[name] if name in FUNCTION_HEADERS else getattr(emu, name)
            values.append(value)
            if name in FUNCTION_HEADERS:  # the bearer token on its own, too
                values.append(value.split()[-1])
            if name == "codika_signing_secret":
                values.append(value.removeprefix("whsec_"))
        return tuple(dict.fromkeys(values + [quote(v, safe="") for v in values]))

    def execution(
        self, emu: Emulator, execution_id: str, *, age: float = 60.0, **extras: str
    ) -> wt.Execution:
        """A handle of this platform with ``execution_id``, triggered ``age`` seconds ago."""
        known: dict[str, str] = {}
        if self.kind == "codika":
            known["process_instance_id"] = emu.codika_instance_id
        elif self.kind == "pinkfish":
            known["automation_id"] = emu.pinkfish_automation_id(self.workflow)
        known.update(extras)
        return wt.Execution(
            provider=self.kind,
            workflow_id=self.workflow,
            execution_id=execution_id,
            extras=known,
            triggered_at=datetime.now(timezone.utc) - timedelta(seconds=age),
        )


CODIKA = Platform("codika", "codika", "codika", "wf-codika", _codika(), ("codika_api_key",))
RUNS_API = Platform(
    "runs_api",
    "runs_api",
    "runs_api",
    "wf-runs",
    _runs_api,
    ("runs_api_api_key",),
    idempotent=True,
)
AWAITSTEP = Platform(
    "awaitstep", "awaitstep", "awaitstep", "wf-await", _awaitstep, ("awaitstep_api_key",)
)
PINKFISH = Platform(
    "pinkfish",
    "pinkfish",
    "pinkfish",
    "trig-pink",
    _pinkfish(),
    ("pinkfish_api_key",),
    fetches_results=True,
)
FUNCTION = Platform(
    "awaitstep_function",
    "awaitstep_function",
    "awaitstep",
    "score-lead",
    _function,
    tuple(FUNCTION_HEADERS),
    polls=False,
)

PLATFORMS = (CODIKA, RUNS_API, AWAITSTEP, PINKFISH)
#: every way of holding a credential: each puts its secret somewhere else
VARIANTS = (
    *PLATFORMS,
    attrs.evolve(CODIKA, name="codika_query", build=_codika(auth="query")),
    attrs.evolve(
        CODIKA, name="codika_org", build=_codika(org_key=True), secret_names=("codika_org_key",)
    ),
    attrs.evolve(
        CODIKA,
        name="codika_signed",
        build=_codika(signing_secret=True),
        secret_names=("codika_api_key", "codika_signing_secret"),
    ),
    attrs.evolve(PINKFISH, name="pinkfish_webhook", build=_pinkfish(trigger="webhook")),
    attrs.evolve(PINKFISH, name="pinkfish_sync", build=_pinkfish(wait="sync")),
    FUNCTION,
)


def _ids(platforms: tuple[Platform, ...]) -> list[str]:
    return [p.name for p in platforms]


@pytest.fixture(params=PLATFORMS, ids=_ids(PLATFORMS))
def platform(request: pytest.FixtureRequest, emulator: Emulator) -> Platform:
    """Each polling platform: Codika, Runs API, AwaitStep, Pinkfish."""
    found: Platform = request.param
    return found


@pytest.fixture(params=(*PLATFORMS, FUNCTION), ids=_ids((*PLATFORMS, FUNCTION)))
def any_platform(request: pytest.FixtureRequest, emulator: Emulator) -> Platform:
    """Each platform, the AwaitStep function included."""
    found: Platform = request.param
    return found


@pytest.fixture(params=VARIANTS, ids=_ids(VARIANTS))
def variant(request: pytest.FixtureRequest, emulator: Emulator) -> Platform:
    """Each platform in each of its ways of holding a credential."""
    found: Platform = request.param
    return found


async def send_trigger(
    client: wt.AsyncClient, platform: Platform, workflow_id: Any, payload: Any = None, **kw: Any
) -> wt.Execution:
    """The platform's trigger request: ``trigger()``, or ``run()`` for a function, whose
    trigger is its run (its ``trigger()`` is refused before anything is sent)."""
    if platform.polls:
        return await client.trigger(workflow_id, payload, **kw)
    execution = (await client.run(workflow_id, payload, **kw)).execution
    assert execution is not None
    return execution
