"""AsyncClient: trigger, poll until the end, and hand back an ``Outcome``.

How it works. The provider (pure) says what to send and how to read the
answer; the transport sends one request with its retries; this module owns
everything in between that involves time:

- the poll schedule (``PollPolicy``, or the server's ``Retry-After``);
- the overall deadline, an anyio cancel scope around the whole wait, so it
  also bounds the transport's retries and no request starts after it;
- concurrency: one ``CapacityLimiter`` holds a slot per execution in flight
  (``wait``/``run``/``run_many`` items from trigger to outcome; a bare
  ``trigger``/``status`` only for its request);
- a task group owned by the client, where ``run_many`` batches run so that a
  consumer leaving its ``async for`` early cancels them at once.
"""

from __future__ import annotations

import functools
import logging
import os
import pathlib
import random
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar, overload

import aiohttp
import anyio
import attrs

from ._polling import Poller
from ._results import check_result_type, make_converter
from ._transport import RateLimiter, Transport, TransportOptions, held
from .errors import InvalidInputError, TransportError, UnsupportedOperation
from .events import Event, OutcomeEvent
from .models import Artifact, Execution, Outcome, Snapshot, Status
from .options import ClientOptions, ClientOptionsKwargs
from .policies import check_count, check_positive
from .providers.base import (
    Control,
    Provider,
    Request,
    Response,
    TriggerContext,
    TriggerOptions,
    error_for_status,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._batch import Batch

__all__ = ["DEFAULT", "AsyncClient"]

logger = logging.getLogger("workflow_trigger")
logger.addHandler(logging.NullHandler())

T = TypeVar("T")
MiB = 1024 * 1024


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


#: ``timeout=DEFAULT`` means "the poll policy's timeout"; ``None`` means no end.
DEFAULT: Any = _Default()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def trigger_timed_out(workflow_id: str) -> TransportError:
    return TransportError(
        f"the trigger of {workflow_id!r} got no answer before the deadline, so "
        "whether a run started is unknown; raise timeout= or check the platform"
    )


class AsyncClient:
    """Triggers workflows on one platform and waits for their results.

    Use it as ``async with AsyncClient(provider) as client:``; the client owns
    one aiohttp session (or uses ``session=``, which it then never closes).
    """

    def __init__(
        self,
        provider: Provider,
        *,
        session: aiohttp.ClientSession | None = None,
        **options: Unpack[ClientOptionsKwargs],
    ) -> None:
        if not isinstance(provider, Provider):
            raise InvalidInputError(
                f"provider must be a platform such as wt.Codika(...), got {type(provider).__name__}"
            )
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise InvalidInputError(
                f"session must be an aiohttp.ClientSession or None, got {type(session).__name__}"
            )
        self.options = opts = ClientOptions.build(dict(options))
        self.provider = provider
        self.poll_policy = opts.poll or provider.default_poll
        self.retry_policy = opts.retry
        self.max_concurrency = opts.max_concurrency
        self.rate_limit = (
            opts.rate_limit if opts.rate_limit is not None else provider.default_rate_limit
        )
        self._session = session
        self._owns_session = session is None
        self._on_event = opts.on_event
        self._transport_options = TransportOptions(
            retry=self.retry_policy,
            timeout=aiohttp.ClientTimeout(
                total=opts.request_timeout, sock_connect=opts.connect_timeout
            ),
            max_body=opts.max_body,
            ssl=opts.ssl,
            allow_insecure_http=opts.allow_insecure_http,
        )
        self._max_connections = opts.max_connections
        self._converter = opts.converter or make_converter()
        self._rng = random.Random(opts.seed)
        self._transport: Transport | None = None
        self._slots: anyio.CapacityLimiter | None = None
        self._connections: anyio.CapacityLimiter | None = None
        self._trigger_slots: anyio.CapacityLimiter | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"AsyncClient({self.provider!r}, max_concurrency={self.max_concurrency})"

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        self._open()
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            if self._task_group is not None:
                self._task_group.cancel_scope.cancel()
                # The group holds only batch drivers, which never raise; not showing it
                # the body's exception keeps that exception as it is, instead of
                # wrapped in an ExceptionGroup the caller would have to unpack.
                await self._task_group.__aexit__(None, None, None)
        finally:
            self._task_group = None
            await self.aclose()

    async def aclose(self) -> None:
        """Close the session the client opened (never one passed in)."""
        self._closed = True
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _open(self) -> Transport:
        if self._closed:
            raise UnsupportedOperation("this client is closed: create a new AsyncClient")
        if self._transport is None:
            if self._session is None:
                connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0)
                self._session = aiohttp.ClientSession(connector=connector)
            self._slots = anyio.CapacityLimiter(self.max_concurrency)
            self._connections = anyio.CapacityLimiter(self._max_connections)
            # Triggers may use half the connections at most: in a burst of thousands,
            # the polls that notice runs ending never queue behind triggers.
            self._trigger_slots = anyio.CapacityLimiter(max(1, self._max_connections // 2))
            limiter = RateLimiter(self.rate_limit) if self.rate_limit else None
            self._transport = Transport(
                self._session,
                self.provider,
                self._transport_options,
                limiter=limiter,
                connections=self._connections,
                rng=self._rng,
                emit=self._emit if self._on_event is not None else None,
            )
        return self._transport

    def _emit(self, event: Event) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:  # a metrics bug must never fail a run
            logger.exception("the on_event hook raised; the event was %s", type(event).__name__)

    @property
    def requests_sent(self) -> int:
        """How many HTTP requests this client has sent, retries included."""
        return self._transport.requests_sent if self._transport else 0

    async def _send(self, request: Request, deadline: float | None = None) -> Response:
        return await self._open().send(request, deadline=deadline)

    def _slot(self) -> anyio.CapacityLimiter:
        self._open()
        assert self._slots is not None
        return self._slots

    def _check_execution(self, execution: Execution) -> None:
        if not isinstance(execution, Execution):
            raise InvalidInputError(
                f"expected an Execution (from trigger() or Execution.from_token()), "
                f"got {type(execution).__name__}"
            )
        if execution.provider != self.provider.kind:
            raise InvalidInputError(
                f"this execution was triggered on {execution.provider!r}, but this client "
                f"talks to {self.provider.kind!r}: wait on it with a client of that platform"
            )

    # -- one request each ------------------------------------------------------------

    async def trigger(
        self,
        workflow_id: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
        connection_id: str | None = None,
    ) -> Execution:
        """Start a run of ``workflow_id`` and return its handle, without waiting."""
        async with held(self._slot()):
            return (await self._trigger(workflow_id, payload, idempotency_key, connection_id))[0]

    async def _trigger(
        self,
        workflow_id: str,
        payload: Any,
        idempotency_key: str | None,
        connection_id: str | None,
        deadline: float | None = None,
    ) -> tuple[Execution, Snapshot | None]:
        options = TriggerOptions(idempotency_key=idempotency_key, connection_id=connection_id)
        context = TriggerContext(now=_now(), message_id=f"msg_{uuid.uuid4().hex}", options=options)
        request = self.provider.trigger_request(workflow_id, payload, context)
        transport = self._open()
        assert self._trigger_slots is not None
        async with held(self._trigger_slots):
            response = await transport.send(request, deadline=deadline)
        triggered = self.provider.parse_trigger(workflow_id, response, context)
        if triggered.snapshot is not None:  # seen when the answer came, not when the request left
            triggered = attrs.evolve(
                triggered, snapshot=attrs.evolve(triggered.snapshot, observed_at=_now())
            )
        logger.debug("triggered %s: execution %s", workflow_id, triggered.execution.execution_id)
        return triggered.execution, triggered.snapshot

    async def status(self, execution: Execution) -> Snapshot:
        """One poll: where ``execution`` stands now."""
        self._check_execution(execution)
        async with held(self._slot()):
            return await self._status(execution)

    async def _status(
        self, execution: Execution, request: Request | None = None, deadline: float | None = None
    ) -> Snapshot:
        """One poll; ``request`` is the execution's status request when the caller kept it
        (it is a pure function of the execution, so a poll loop builds it once)."""
        request = request or self.provider.status_request(execution)
        response = await self._send(request, deadline)
        snapshot = self.provider.parse_status(execution, response, _now())
        hint = self.retry_policy.poll_hint(response.header("retry-after"), snapshot.retry_after)
        if hint != snapshot.retry_after and not snapshot.status.is_terminal:
            snapshot = attrs.evolve(snapshot, retry_after=hint)
        return snapshot

    async def _control(
        self, execution: Execution, control: Control, data: Any = None, *, hold_slot: bool = True
    ) -> None:
        self._check_execution(execution)
        request = self.provider.control_request(execution, control, data)
        if hold_slot:
            async with held(self._slot()):
                response = await self._send(request)
        else:
            response = await self._send(request)
        self.provider.parse_control(execution, response)

    async def cancel(self, execution: Execution) -> None:
        """Ask the platform to stop the run (where it has such an operation)."""
        await self._control(execution, "cancel")

    async def pause(self, execution: Execution) -> None:
        await self._control(execution, "pause")

    async def resume(self, execution: Execution) -> None:
        await self._control(execution, "resume")

    async def send_event(self, execution: Execution, event_type: str, payload: Any = None) -> None:
        """Deliver an event to a run that waits for one (AwaitStep)."""
        await self._control(execution, "event", {"event_type": event_type, "payload": payload})

    @overload
    async def download(
        self, artifact: Artifact, *, to: None = None, max_bytes: int = ...
    ) -> bytes: ...

    @overload
    async def download(
        self, artifact: Artifact, *, to: str | os.PathLike[str], max_bytes: int = ...
    ) -> pathlib.Path: ...

    async def download(
        self,
        artifact: Artifact,
        *,
        to: str | os.PathLike[str] | None = None,
        max_bytes: int = 100 * MiB,
    ) -> bytes | pathlib.Path:
        """A result file (Pinkfish ``Outcome.artifacts``): its bytes, or with ``to=`` the
        ``pathlib.Path`` it was streamed to. Reads no more than ``max_bytes``."""
        check_count("max_bytes", max_bytes)
        request = self.provider.download_request(artifact)
        path = os.fspath(to) if to is not None else None
        async with held(self._slot()):
            response = await self._open().send(request, max_body=max_bytes, to=path)
        if not 200 <= response.status < 300:
            raise error_for_status(
                response,
                f"the download of {artifact.name!r} answered HTTP {response.status}: the file "
                "may have expired; fetch the run's results again for a fresh link",
            )
        return pathlib.Path(path) if path is not None else response.body

    # -- waiting -----------------------------------------------------------------------

    @overload
    async def wait(
        self,
        execution: Execution,
        *,
        timeout: float | None = ...,
        result_type: None = None,
        cancel_remote_on_exit: bool = ...,
        on_snapshot: Callable[[Snapshot], object] | None = ...,
    ) -> Outcome[Any]: ...

    @overload
    async def wait(
        self,
        execution: Execution,
        *,
        timeout: float | None = ...,
        result_type: type[T],
        cancel_remote_on_exit: bool = ...,
        on_snapshot: Callable[[Snapshot], object] | None = ...,
    ) -> Outcome[T]: ...

    async def wait(
        self,
        execution: Execution,
        *,
        timeout: float | None = DEFAULT,
        result_type: type[Any] | None = None,
        cancel_remote_on_exit: bool = False,
        on_snapshot: Callable[[Snapshot], object] | None = None,
    ) -> Outcome[Any]:
        """Poll ``execution`` until it ends; its ``Outcome``.

        ``timeout`` left out is the poll policy's; ``None`` waits without end.
        Raises ``PollTimeout`` when the deadline passes (the run may go on).
        """
        self._check_execution(execution)
        check_result_type(self._converter, result_type)
        deadline = self._deadline(timeout)
        async with held(self._slot()):
            return await self._wait(
                execution, None, deadline, result_type, cancel_remote_on_exit, on_snapshot
            )

    @overload
    async def run(
        self,
        workflow_id: str,
        payload: Any = ...,
        *,
        result_type: None = None,
        timeout: float | None = ...,
        idempotency_key: str | None = ...,
        connection_id: str | None = ...,
        cancel_remote_on_exit: bool = ...,
        on_snapshot: Callable[[Snapshot], object] | None = ...,
    ) -> Outcome[Any]: ...

    @overload
    async def run(
        self,
        workflow_id: str,
        payload: Any = ...,
        *,
        result_type: type[T],
        timeout: float | None = ...,
        idempotency_key: str | None = ...,
        connection_id: str | None = ...,
        cancel_remote_on_exit: bool = ...,
        on_snapshot: Callable[[Snapshot], object] | None = ...,
    ) -> Outcome[T]: ...

    async def run(
        self,
        workflow_id: str,
        payload: Any = None,
        *,
        result_type: type[Any] | None = None,
        timeout: float | None = DEFAULT,
        idempotency_key: str | None = None,
        connection_id: str | None = None,
        cancel_remote_on_exit: bool = False,
        on_snapshot: Callable[[Snapshot], object] | None = None,
    ) -> Outcome[Any]:
        """Trigger ``workflow_id`` and wait for its ``Outcome``; ``timeout`` covers both."""
        check_result_type(self._converter, result_type)
        deadline = self._deadline(timeout)
        async with held(self._slot()):
            with anyio.CancelScope(deadline=deadline) as scope:
                execution, first = await self._trigger(
                    workflow_id, payload, idempotency_key, connection_id
                )
            if scope.cancelled_caught:
                raise trigger_timed_out(workflow_id)
            return await self._wait(
                execution, first, deadline, result_type, cancel_remote_on_exit, on_snapshot
            )

    def _deadline(self, timeout: float | None) -> float:
        if timeout is DEFAULT:
            timeout = self.poll_policy.timeout
        check_positive("timeout", timeout, allow_none=True, allow_inf=True)
        return anyio.current_time() + timeout if timeout is not None else float("inf")

    async def _wait(
        self,
        execution: Execution,
        first: Snapshot | None,
        deadline: float,
        result_type: type[Any] | None,
        cancel_remote_on_exit: bool,
        on_snapshot: Callable[[Snapshot], object] | None = None,
    ) -> Outcome[Any]:
        """Poll until the end under ``deadline``, without taking a slot."""
        poller = Poller(self, execution, first, on_snapshot)
        outcome = await poller.outcome(deadline, result_type, cancel_remote_on_exit)
        self._ended(outcome)
        return outcome

    def _ended(self, outcome: Outcome[Any]) -> None:
        """Report an execution's end: the ``OutcomeEvent`` hook and one INFO line."""
        execution = outcome.execution
        assert execution is not None
        if self._on_event is not None:
            self._emit(
                OutcomeEvent(
                    provider=self.provider.kind,
                    execution=execution,
                    status=outcome.status or Status.FAILED,
                    polls=outcome.polls,
                )
            )
        logger.info(
            "execution %s of %s ended %s after %d polls",
            execution.execution_id,
            execution.workflow_id,
            outcome.raw_status,
            outcome.polls,
        )

    async def watch(
        self, execution: Execution, *, timeout: float | None = DEFAULT
    ) -> AsyncIterator[Snapshot]:
        """Each change of status or steps, until the execution ends (the last is terminal)."""
        self._check_execution(execution)
        deadline = self._deadline(timeout)
        changes: list[Snapshot] = []
        poller = Poller(self, execution, None, changes.append)
        while not poller.done:
            with anyio.CancelScope(deadline=deadline) as scope:
                async with held(self._slot()):
                    await poller.next()
            if scope.cancelled_caught:
                raise poller.timeout_error()
            while changes:
                yield changes.pop(0)

    # -- batches -------------------------------------------------------------------------

    def run_many(
        self,
        workflow_id: str,
        payloads: Iterable[Any] | AsyncIterable[Any],
        *,
        concurrency: int = 100,
        result_type: type[Any] | None = None,
        timeout: float | None = DEFAULT,
        key: Callable[[Any], Any] | None = None,
        fail_fast: bool = False,
        journal: str | os.PathLike[str] | None = None,
    ) -> Batch:
        """Run ``workflow_id`` once per payload; an async iterator of ``Outcome``s as they end.

        At most ``concurrency`` items are in flight and ``payloads`` is read only
        as slots free up. Leaving the ``async for`` early cancels the rest.
        With ``journal="batch.sqlite"`` every item's intent, token and outcome is
        recorded, and running the same batch again resumes instead of re-triggering.
        """
        return self._batch(
            "run_many",
            workflow_id,
            payloads,
            concurrency=concurrency,
            result_type=result_type,
            timeout=timeout,
            key=key,
            fail_fast=fail_fast,
            journal=journal,
        )

    def wait_many(
        self,
        executions: Iterable[Execution] | AsyncIterable[Execution],
        *,
        concurrency: int = 100,
        result_type: type[Any] | None = None,
        timeout: float | None = DEFAULT,
        fail_fast: bool = False,
    ) -> Batch:
        """Wait on many executions at once; an async iterator of ``Outcome``s as they end.

        ``executions`` are handles from ``trigger()`` or ``Execution.from_token()``
        (resuming thousands after a restart, say), read lazily, at most
        ``concurrency`` at a time. Each outcome carries its ``index`` (also its
        ``key``); an entry that is not an execution of this client's platform
        ends with ``InvalidInputError`` in ``exception`` and the batch goes on.
        """
        return self._batch(
            "wait_many",
            "wait_many",
            executions,
            concurrency=concurrency,
            result_type=result_type,
            timeout=timeout,
            key=None,
            fail_fast=fail_fast,
            journal=None,
            waits=True,
        )

    def _batch(
        self, what: str, workflow_id: str, items: Any, *, timeout: float | None, **options: Any
    ) -> Batch:
        from ._batch import Batch
        from ._engine import Engine

        if self._task_group is None:
            raise UnsupportedOperation(
                f"{what} needs the client's task group: use `async with AsyncClient(...) as "
                "client:` around it"
            )
        deadline_for = functools.partial(self._deadline, timeout)
        engine = Engine(self, workflow_id, items, deadline_for=deadline_for, **options)
        return Batch(self._task_group, engine)
