"""The platform-neutral core of the emulator: state, faults, counters, server lifecycle.

:class:`EmulatorCore` owns one ``aiohttp.web`` application on a loopback port.
Each platform contributes a *route set* (an object with a ``platform`` name and
a ``routes()`` method); the core mounts them all on the same server. A route
handler works in three steps, using the core for everything that is not wire
format:

1. ``core.begin(platform, operation, ...)`` classifies the request (the core's
   middleware has already logged it) and bumps the counters;
2. ``await core.apply_fault(request, render_error)`` consumes a matching
   :class:`Fault` and returns the response to send, if any;
3. it authenticates, then ``core.start_execution(...)`` (or, for a trigger
   that an idempotency key maps to an existing run, ``core.replay(execution)``)
   or, for a status request, ``core.find_execution(...)`` and
   ``core.observe(execution)`` when the answer shows the run's status.

Operations other than triggers and polls (results, run control, downloads)
call ``begin`` with their own operation so faults and counters see them.

Everything runs on the server's event loop, so the state needs no locks. The
counters and waits come from :class:`~._counters.Counters`.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import socket
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Protocol, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict, CIMultiDictProxy

from ._clock import one_instant
from ._counters import Counters
from ._execution import Execution
from ._faults import ErrorRenderer, FaultQueue, fault_response
from ._model import Fault, Operation, Scenario
from ._records import RequestRecord

__all__ = ["EmulatorCore", "ErrorRenderer", "RouteSet"]

_E = TypeVar("_E", bound="EmulatorCore")

# The record of the request being handled; the middleware sets it for the
# handler, which runs in the same task.
_current: contextvars.ContextVar[RequestRecord] = contextvars.ContextVar("_current")


class RouteSet(Protocol):
    """One platform's routes, mounted on the shared server."""

    platform: str

    def routes(self) -> list[web.RouteDef]: ...


class EmulatorCore(Counters):
    """State and lifecycle shared by every platform's routes.

    ``seed`` seeds :attr:`random` (scenario duration ranges) and, separately,
    the run ids, so a test run is reproducible. ``strict_workflows`` makes
    workflows without a registered scenario unknown (404) instead of running
    ``default_scenario``.
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
    ) -> None:
        self.random = random.Random(seed)
        # Ids draw from their own generator so adding a trigger elsewhere in a
        # test does not shift the sequence of drawn durations, and vice versa.
        self._id_random = random.Random(f"ids:{seed}")
        self.host = host
        self.port = port
        self.strict_workflows = strict_workflows
        self.default_scenario = default_scenario
        self._shutdown_timeout = shutdown_timeout
        self._scenarios: dict[str, Scenario] = {}
        self._faults = FaultQueue()
        self._route_sets: list[RouteSet] = []
        self._runner: web.AppRunner | None = None
        self._refusing: socket.socket | None = None
        self.executions: list[Execution] = []
        self._by_id: dict[str, Execution] = {}
        super().__init__()

    # -- configuration -------------------------------------------------------

    def add_route_set(self, route_set: RouteSet) -> None:
        if self._runner is not None:
            raise RuntimeError("add route sets before starting the emulator")
        self._route_sets.append(route_set)

    def scenario(self, workflow_id: str, scenario: Scenario) -> None:
        """Make ``workflow_id`` behave as ``scenario`` for the runs triggered from now on."""
        self._scenarios[workflow_id] = scenario

    def scenario_for(self, workflow_id: str) -> Scenario | None:
        """The scenario for a workflow, or ``None`` if it is unknown (strict mode only)."""
        found = self._scenarios.get(workflow_id)
        if found is None and not self.strict_workflows:
            return self.default_scenario
        return found

    def add_fault(self, fault: Fault) -> None:
        self._faults.add(fault)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def faults_remaining(self) -> int:
        """How many faulty answers are still armed (0 once every fault was used)."""
        return self._faults.remaining

    # -- used by route sets --------------------------------------------------

    def begin(
        self,
        platform: str,
        operation: Operation,
        *,
        workflow_id: str | None = None,
        execution_id: str | None = None,
    ) -> RequestRecord:
        """Classify the current request and count it; returns its record."""
        record = _current.get()
        record.platform = platform
        record.workflow_id = workflow_id
        record.execution_id = execution_id
        if operation != "any":
            record.operation = operation
        self._count_operation(record)
        return record

    async def apply_fault(
        self, request: web.Request, render: ErrorRenderer
    ) -> web.StreamResponse | None:
        """Consume the first armed fault matching the current request.

        Returns the response to send, or ``None`` to answer normally (no fault,
        or a ``slow`` fault whose delay has passed).
        """
        record = _current.get()
        fault = self._faults.take(
            record.platform or "", record.operation or "any", record.workflow_id
        )
        if fault is None:
            return None
        record.fault = fault.kind
        return await fault_response(fault, request, render)

    def new_id(self) -> str:
        """A UUIDv7-shaped id (time-ordered, like Codika's) with seeded random bits."""
        millis = int(time.time() * 1000) & ((1 << 48) - 1)
        rand = self._id_random.getrandbits(74)
        value = (millis << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62)
        return str(uuid.UUID(int=value | (rand & ((1 << 62) - 1))))

    def start_execution(
        self,
        platform: str,
        workflow_id: str,
        payload: Any,
        scenario: Scenario,
        *,
        execution_id: str | None = None,
    ) -> Execution:
        """Start a run of ``workflow_id`` for the current request and count it.

        ``execution_id`` is the platform's run id (default: :meth:`new_id`).
        """
        duration = scenario.duration
        if isinstance(duration, tuple):
            duration = self.random.uniform(*duration)
        if execution_id is None:
            execution_id = self.new_id()
        if execution_id in self._by_id:
            raise ValueError(f"duplicate execution id {execution_id!r}")
        execution = Execution(
            id=execution_id,
            platform=platform,
            workflow_id=workflow_id,
            payload=payload,
            scenario=scenario,
            duration=float(duration),
            result=scenario.resolve_result(payload),
            created_at=datetime.now(timezone.utc),
        )
        self.executions.append(execution)
        self._by_id[execution.id] = execution
        record = _current.get(None)
        if record is not None:
            record.started = execution
        self._count_start(execution)
        return execution

    def replay(self, execution: Execution) -> None:
        """Note that the current trigger returned ``execution`` instead of starting a run."""
        self._count_replay(_current.get(), execution)

    def find_execution(self, execution_id: str, platform: str | None = None) -> Execution | None:
        """The execution with that id (started on ``platform``, if given), else ``None``."""
        found = self._by_id.get(execution_id)
        if found is None or (platform is not None and found.platform != platform):
            return None
        return found

    def observe(self, execution: Execution) -> None:
        """Note that a status response is about to show ``execution``'s current status.

        The first time that status is terminal, the run stops counting as in flight.
        """
        self._count_observed(execution)

    # -- server lifecycle ----------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        record = RequestRecord(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
        )
        self._count_request(record)
        token = _current.set(record)
        try:
            with one_instant():
                response = await handler(request)
        except web.HTTPException as exc:  # the router's 404 / 405
            record.status = exc.status
            raise
        finally:
            _current.reset(token)
        record.status = None if record.fault == "drop" else response.status
        return response

    async def start(self) -> None:
        """Bind ``host:port`` (port 0: a free port) and start answering."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "the emulator is an aiohttp server: run it on anyio's asyncio backend"
            ) from None
        # The platforms other than AwaitStep (whose routes enforce its 1 MB) document
        # no body limit: accept far more than aiohttp's default 1 MiB.
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        for route_set in self._route_sets:
            app.add_routes(route_set.routes())
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        # Bound but never listening: connecting to it is refused, and holding
        # the socket keeps another process from taking the port meanwhile.
        self._refusing = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        self._refusing.bind((self.host, 0))

    async def close(self) -> None:
        """Stop the server; requests still in progress get ``shutdown_timeout`` seconds."""
        runner, self._runner = self._runner, None
        if self._refusing is not None:
            self._refusing.close()
            self._refusing = None
        if runner is not None:
            await runner.cleanup()

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._runner is None:
            raise RuntimeError("the emulator is not running: use `async with` or await start()")
        return f"http://{self.host}:{self.port}"

    @property
    def refused_url(self) -> str:
        """A base URL on the same host where every connection is refused.

        Stands in for a server that is down (a refused connection never
        delivers the request, unlike a ``Fault.drop``).
        """
        if self._refusing is None:
            raise RuntimeError("the emulator is not running: use `async with` or await start()")
        return f"http://{self.host}:{self._refusing.getsockname()[1]}"

    async def __aenter__(self: _E) -> _E:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
