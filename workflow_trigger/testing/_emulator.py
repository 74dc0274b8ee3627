"""The public :class:`Emulator`: the core plus every platform's route set.

Each platform adds its configuration (constructor arguments prefixed with the
platform's name, exposed as attributes of the same names) and mounts its route
set here. Routes of different platforms do not overlap, so one server and one
``base_url`` serve them all. The configuration objects themselves are the
attributes ``codika``, ``runs_api``, ``awaitstep`` and ``pinkfish``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import anyio

from ._awaitstep import AwaitStepConfig, AwaitStepRoutes
from ._banner import describe
from ._codika import CodikaConfig, CodikaRoutes
from ._core import EmulatorCore
from ._model import Scenario
from ._pinkfish import PinkfishConfig, PinkfishRoutes
from ._runs_api import RunsApiConfig, RunsApiRoutes
from ._wire import Setting

__all__ = ["Emulator", "serve"]

_CODIKA = CodikaConfig()
_RUNS = RunsApiConfig()
_AWAIT = AwaitStepConfig()
_PINK = PinkfishConfig()


class Emulator(EmulatorCore):
    """A loopback server speaking the workflow platforms' protocols.

    Use it as ``async with Emulator(seed=0) as emu:`` (or ``start()`` /
    ``close()``) on the asyncio backend. See the package docstring for the
    counters, scenarios and faults.
    """

    def __init__(
        self,
        *,
        seed: int | None = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        strict_workflows: bool = False,
        default_scenario: Scenario = Scenario(),  # noqa: B008 - frozen, so sharing is safe
        shutdown_timeout: float = 0.5,
        codika_instance_id: str = _CODIKA.instance_id,
        codika_api_key: str = _CODIKA.api_key,
        codika_org_key: str = _CODIKA.org_key,
        codika_signing_secret: str = _CODIKA.signing_secret,
        codika_foreign_keys: Iterable[str] = _CODIKA.foreign_keys,
        runs_api_api_key: str = _RUNS.api_key,
        runs_api_read_only_key: str | None = _RUNS.read_only_key,
        runs_api_workflow_version: int = _RUNS.workflow_version,
        runs_api_workflow_status: Mapping[str, str] | None = None,
        runs_api_connection_ids: Iterable[str] | None = None,
        runs_api_rate_limit: int | None = None,
        runs_api_read_rate_limit: int | None = None,
        runs_api_rate_limit_reset: Literal["epoch", "seconds"] = _RUNS.rate_limit_reset,
        runs_api_idempotency_ttl: float = _RUNS.idempotency_ttl,
        runs_api_error_success: bool = _RUNS.error_success,
        runs_api_details_form: Literal["path", "field"] = _RUNS.details_form,
        awaitstep_api_key: str = _AWAIT.api_key,
        awaitstep_read_only_key: str | None = _AWAIT.read_only_key,
        awaitstep_connection_id: str = _AWAIT.connection_id,
        awaitstep_version_id: str = _AWAIT.version_id,
        awaitstep_trigger_reply: Literal["run", "instance"] = _AWAIT.trigger_reply,
        awaitstep_json_strings: bool = _AWAIT.json_strings,
        awaitstep_functions: Iterable[str] = (),
        awaitstep_undeployed: Iterable[str] = (),
        pinkfish_api_key: str = _PINK.api_key,
        pinkfish_sync_limit: float = _PINK.sync_limit,
        pinkfish_automation_ids: Mapping[str, str] | None = None,
        pinkfish_automation_version: int = _PINK.automation_version,
    ) -> None:
        super().__init__(
            seed=seed,
            host=host,
            port=port,
            strict_workflows=strict_workflows,
            default_scenario=default_scenario,
            shutdown_timeout=shutdown_timeout,
        )
        self.codika = CodikaConfig(
            instance_id=codika_instance_id,
            api_key=codika_api_key,
            org_key=codika_org_key,
            signing_secret=codika_signing_secret,
            foreign_keys=frozenset(codika_foreign_keys),
        )
        self.add_route_set(CodikaRoutes(self, self.codika))
        self.runs_api = RunsApiConfig(
            api_key=runs_api_api_key,
            read_only_key=runs_api_read_only_key,
            workflow_version=runs_api_workflow_version,
            workflow_status=dict(runs_api_workflow_status or {}),
            connection_ids=None
            if runs_api_connection_ids is None
            else set(runs_api_connection_ids),
            rate_limit=runs_api_rate_limit,
            read_rate_limit=runs_api_read_rate_limit,
            rate_limit_reset=runs_api_rate_limit_reset,
            idempotency_ttl=runs_api_idempotency_ttl,
            error_success=runs_api_error_success,
            details_form=runs_api_details_form,
        )
        self.add_route_set(RunsApiRoutes(self, self.runs_api))
        self.awaitstep = AwaitStepConfig(
            api_key=awaitstep_api_key,
            read_only_key=awaitstep_read_only_key,
            connection_id=awaitstep_connection_id,
            version_id=awaitstep_version_id,
            trigger_reply=awaitstep_trigger_reply,
            json_strings=awaitstep_json_strings,
            functions=set(awaitstep_functions),
            undeployed=set(awaitstep_undeployed),
        )
        self.add_route_set(AwaitStepRoutes(self, self.awaitstep))
        self.pinkfish = PinkfishConfig(
            api_key=pinkfish_api_key,
            sync_limit=pinkfish_sync_limit,
            automation_ids=dict(pinkfish_automation_ids or {}),
            automation_version=pinkfish_automation_version,
        )
        self.add_route_set(PinkfishRoutes(self, self.pinkfish))

    @property
    def codika_instance_id(self) -> str:
        return self.codika.instance_id

    @property
    def codika_api_key(self) -> str:
        return self.codika.api_key

    @property
    def codika_org_key(self) -> str:
        return self.codika.org_key

    @property
    def codika_signing_secret(self) -> str:
        return self.codika.signing_secret

    @property
    def inactive(self) -> bool:
        """While true, every Codika trigger answers 412 (the process instance is inactive)."""
        return self.codika.inactive

    @inactive.setter
    def inactive(self, value: bool) -> None:
        self.codika.inactive = value

    # Read-write views of the other platforms' settings (the constructor arguments).
    runs_api_api_key = Setting[str]("runs_api", "api_key")
    runs_api_read_only_key = Setting[str | None]("runs_api", "read_only_key")
    runs_api_workflow_version = Setting[int]("runs_api", "workflow_version")
    #: workflow id -> status; a workflow not listed is "active".
    runs_api_workflow_status = Setting[dict[str, str]]("runs_api", "workflow_status")
    runs_api_connection_ids = Setting[set[str] | None]("runs_api", "connection_ids")
    runs_api_rate_limit = Setting[int | None]("runs_api", "rate_limit")
    runs_api_read_rate_limit = Setting[int | None]("runs_api", "read_rate_limit")
    runs_api_rate_limit_reset = Setting[str]("runs_api", "rate_limit_reset")
    runs_api_idempotency_ttl = Setting[float]("runs_api", "idempotency_ttl")
    runs_api_error_success = Setting[bool]("runs_api", "error_success")
    runs_api_details_form = Setting[str]("runs_api", "details_form")
    awaitstep_api_key = Setting[str]("awaitstep", "api_key")
    awaitstep_read_only_key = Setting[str | None]("awaitstep", "read_only_key")
    awaitstep_connection_id = Setting[str]("awaitstep", "connection_id")
    awaitstep_version_id = Setting[str]("awaitstep", "version_id")
    awaitstep_trigger_reply = Setting[str]("awaitstep", "trigger_reply")
    awaitstep_json_strings = Setting[bool]("awaitstep", "json_strings")
    awaitstep_functions = Setting[set[str]]("awaitstep", "functions")
    awaitstep_undeployed = Setting[set[str]]("awaitstep", "undeployed")
    pinkfish_api_key = Setting[str]("pinkfish", "api_key")
    pinkfish_sync_limit = Setting[float]("pinkfish", "sync_limit")
    pinkfish_automation_ids = Setting[dict[str, str]]("pinkfish", "automation_ids")
    pinkfish_automation_version = Setting[int]("pinkfish", "automation_version")

    def pinkfish_automation_id(self, trigger_id: str) -> str:
        """The Pinkfish automation id behind ``trigger_id`` (configured or derived)."""
        return self.pinkfish.automation_id(trigger_id)

    def describe(self) -> str:
        """Each platform's credentials and ids, with a ready-to-run curl line (running only)."""
        return describe(self.base_url, self.codika, self.runs_api, self.awaitstep, self.pinkfish)

    def awaitstep_function_url(self, name: str) -> str:
        """The URL standing for the Worker of the AwaitStep function ``name``."""
        return f"{self.base_url}/fn/{name}"


async def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    seed: int | None = 0,
    on_ready: Callable[[Emulator], object] | None = None,
    scenarios: Mapping[str, Scenario] | None = None,
    **options: Any,
) -> None:
    """Run an :class:`Emulator` on ``host:port`` until cancelled.

    ``scenarios`` (workflow id -> :class:`Scenario`; ``"*"``: every other
    workflow) are registered before ``on_ready`` is called with the running
    emulator (with ``port=0``, read the chosen port from ``emulator.base_url``).
    ``options`` are the :class:`Emulator`'s (``awaitstep_trigger_reply=``...).
    """
    scenarios = dict(scenarios or {})
    if "*" in scenarios:
        options["default_scenario"] = scenarios.pop("*")
    async with Emulator(seed=seed, host=host, port=port, **options) as emulator:
        for workflow_id, scenario in scenarios.items():
            emulator.scenario(workflow_id, scenario)
        if on_ready is not None:
            on_ready(emulator)
        await anyio.sleep_forever()
