"""AsyncClient: trigger, wait until the end, and hand back an ``Outcome``.

How it works. The provider (pure) says what to send and how to read the
answer; the transport sends one request with its retries; the client's
``Scheduler`` (``_scheduler.py``), started by ``async with``, owns all the
waiting: every ``trigger``, ``wait``, ``run``, ``watch`` and every item of
``run_many``/``wait_many`` is a job submitted to it. The caller's side of a
call is ``Calls`` (``_calls.py``): the checks of its arguments (all made
before anything is sent), the client's slots (``max_concurrency``: a
``wait``/``run``/``watch`` or batch item holds one from trigger to outcome),
and the waiting, in the caller's own task. What is left here is the
lifecycle and the public methods, each a few lines over those.
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
import random
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, overload

import aiohttp
import anyio
import anyio.abc

from ._calls import DEFAULT, Calls, Hook, named, trigger_options
from ._job import Job
from ._results import make_converter
from ._scheduler import Scheduler
from ._slots import Slots
from ._transport import (
    DeadlineReached,
    RateLimiter,
    Transport,
    TransportOptions,
    loop_time,
)
from .errors import InvalidInputError, PollTimeout, UnsupportedOperation
from .events import Event
from .models import Artifact, Execution, Outcome, Snapshot
from .options import ClientOptions, ClientOptionsKwargs
from .policies import check_count
from .providers.base import Control, Provider, error_for_status

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._batch import Batch

__all__ = ["DEFAULT", "AsyncClient"]

logger = logging.getLogger("workflow_trigger")
logger.addHandler(logging.NullHandler())

if TYPE_CHECKING:  # T defaults to Any where no result_type is given (PEP 696)
    from typing_extensions import TypeVar

    T = TypeVar("T", default=Any)
else:
    from typing import TypeVar

    T = TypeVar("T")
MiB = 1024 * 1024


class AsyncClient:
    """Triggers workflows on one platform and waits for their results.

    Use it as ``async with AsyncClient(provider, **options) as client:`` (the
    options are ``ClientOptions``' fields); the client owns one aiohttp session,
    or uses ``session=``, which it then never closes.
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
        self._transport: Transport | None = None
        self._scheduler: Scheduler | None = None
        self._converter = opts.converter or make_converter()
        self._calls = Calls(provider, opts, self.poll_policy, self._converter, self._running)
        self._tasks: anyio.abc.TaskGroup | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"AsyncClient({self.provider!r}, max_concurrency={self.max_concurrency})"

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        if self._closed or self._tasks is not None:
            raise UnsupportedOperation("this client is closed or open: create a new AsyncClient")
        opts = self.options
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=opts.max_connections, limit_per_host=0)
            self._session = aiohttp.ClientSession(connector=connector)
        rng = random.Random(opts.seed)
        self._transport = transport = Transport(
            self._session,
            self.provider,
            TransportOptions(
                retry=opts.retry,
                timeout=aiohttp.ClientTimeout(
                    total=opts.request_timeout, sock_connect=opts.connect_timeout
                ),
                max_body=opts.max_body,
                ssl=opts.ssl,
                allow_insecure_http=opts.allow_insecure_http,
            ),
            limiter=RateLimiter(self.rate_limit) if self.rate_limit else None,
            connections=Slots(opts.max_connections),
            rng=rng,
            emit=self._emit if opts.on_event is not None else None,
        )
        self._scheduler = Scheduler(
            provider=self.provider,
            transport=transport,
            policy=self.poll_policy,
            retry=opts.retry,
            converter=self._converter,
            rng=rng,
            workers=opts.max_connections,
            emit=transport.emit,
        )
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        await self._tasks.start(self._scheduler.serve)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if self._tasks is not None:
                self._tasks.cancel_scope.cancel()
                # The group holds only the scheduler and batch drivers, which never raise;
                # not showing it the body's exception keeps that exception as it is,
                # instead of wrapped in an ExceptionGroup the caller would have to unpack.
                await self._tasks.__aexit__(None, None, None)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the session the client opened (never one passed in)."""
        self._closed = True
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _emit(self, event: Event) -> None:
        hook = self.options.on_event
        try:
            if hook is not None:
                hook(event)
        except Exception:  # a metrics bug must never fail a run
            logger.exception("the on_event hook raised; the event was %s", type(event).__name__)

    @property
    def requests_sent(self) -> int:
        """How many HTTP requests this client has sent, retries included."""
        return self._transport.requests_sent if self._transport else 0

    def _running(self) -> Scheduler:
        if self._scheduler is None or self._tasks is None or self._closed:
            state = "closed" if self._closed else "not open"
            raise UnsupportedOperation(
                f"this client is {state}: use it inside `async with AsyncClient(...) as client:`"
            )
        return self._scheduler

    # -- one request each -----------------------------------------------------------------

    def trigger(
        self,
        workflow_id: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
        connection_id: str | None = None,
        timeout: float | None = None,
    ) -> Coroutine[Any, Any, Execution]:
        """Start a run of ``workflow_id`` and return its handle, without waiting.

        (Like ``wait`` and ``run``: the arguments are checked when it is called, and
        nothing is sent until the coroutine it returns is awaited.)"""
        self._calls.check_pollable("trigger() without waiting")
        job = Job(
            self._calls.options(timeout),
            workflow_id=workflow_id,
            payload=payload,
            trigger_options=trigger_options(idempotency_key, connection_id),
            trigger_only=True,
        )
        return named(self._calls.wait(job), "AsyncClient.trigger")

    async def status(self, execution: Execution, *, timeout: float | None = None) -> Snapshot:
        """One poll: where ``execution`` stands now."""
        self._calls.check_execution(execution, polled=True)
        seconds = self._calls.timeout(timeout)
        scheduler = self._running()
        deadline = loop_time() + seconds if seconds is not None else math.inf
        async with self._calls.slot():
            try:
                return await scheduler.status(execution, deadline=deadline)
            except DeadlineReached:
                raise PollTimeout(
                    f"the status of execution {execution.execution_id} got no answer within "
                    f"{timeout} s; ask again, or raise timeout=",
                    execution=execution,
                    snapshot=None,
                ) from None

    async def _control(self, execution: Execution, control: Control, data: Any = None) -> None:
        self._calls.check_execution(execution)
        scheduler = self._running()
        async with self._calls.slot():
            await scheduler.control(execution, control, data)

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
        transport = self._running().transport
        async with self._calls.slot():
            response = await transport.send(request, max_body=max_bytes, to=path)
        if not 200 <= response.status < 300:
            raise error_for_status(
                response,
                f"the download of {artifact.name!r} answered HTTP {response.status}: the file "
                "may have expired; fetch the run's results again for a fresh link",
            )
        return pathlib.Path(path) if path is not None else response.body

    # -- waiting ----------------------------------------------------------------------------

    def wait(
        self,
        execution: Execution,
        *,
        timeout: float | None = DEFAULT,
        result_type: type[T] | None = None,
        cancel_remote_on_exit: bool = False,
        on_snapshot: Hook | None = None,
    ) -> Coroutine[Any, Any, Outcome[T]]:
        """Poll ``execution`` until it ends; its ``Outcome``.

        ``timeout`` left out is the poll policy's; ``None`` waits without end.
        Raises ``PollTimeout`` when the deadline passes (the run may go on).
        """
        self._calls.check_execution(execution, polled=True)
        options = self._calls.options(timeout, result_type, on_snapshot, cancel_remote_on_exit)
        job = Job(options, workflow_id=execution.workflow_id, execution=execution)
        return named(self._calls.wait(job), "AsyncClient.wait")

    def run(
        self,
        workflow_id: str,
        payload: Any = None,
        *,
        result_type: type[T] | None = None,
        timeout: float | None = DEFAULT,
        idempotency_key: str | None = None,
        connection_id: str | None = None,
        cancel_remote_on_exit: bool = False,
        on_snapshot: Hook | None = None,
    ) -> Coroutine[Any, Any, Outcome[T]]:
        """Trigger ``workflow_id`` and wait for its ``Outcome``; ``timeout`` covers both."""
        job = Job(
            self._calls.options(timeout, result_type, on_snapshot, cancel_remote_on_exit),
            workflow_id=workflow_id,
            payload=payload,
            trigger_options=trigger_options(idempotency_key, connection_id),
        )
        return named(self._calls.wait(job), "AsyncClient.run")

    async def watch(
        self, execution: Execution, *, timeout: float | None = DEFAULT
    ) -> AsyncIterator[Snapshot]:
        """Each change of status or steps, until the execution ends (the last is terminal)."""
        self._calls.check_execution(execution, polled=True)
        options = self._calls.options(timeout, snapshots_only=True)
        job = Job(options, workflow_id=execution.workflow_id, execution=execution)
        scheduler = self._running()
        await self._calls.slots.take()  # each step of the iteration may run in another task
        try:
            job.deadline = options.deadline(loop_time())
            scheduler.submit(job)
            async for snapshot in job.updates():
                yield snapshot
        finally:
            scheduler.withdraw(job)
            self._calls.slots.give()
        if job.error is not None:
            raise job.error

    # -- batches ------------------------------------------------------------------------------

    def run_many(
        self,
        workflow_id: str,
        payloads: Iterable[Any] | AsyncIterable[Any],
        *,
        concurrency: int = 100,
        result_type: type[T] | None = None,
        timeout: float | None = DEFAULT,
        key: Callable[[Any], Any] | None = None,
        fail_fast: bool = False,
        journal: str | os.PathLike[str] | None = None,
        cancel_remote_on_exit: bool = False,
        on_snapshot: Hook | None = None,
    ) -> Batch[T]:
        """Run ``workflow_id`` once per payload; an async iterator of ``Outcome``s as they end.

        At most ``concurrency`` items are in flight and ``payloads`` is read only
        as slots free up. Use it as ``async with client.run_many(...) as batch:``
        where the batch is held in a variable: leaving that block (or the
        ``async for``) early cancels every item still in flight. With
        ``journal="batch.sqlite"`` every item's intent, token and outcome is
        recorded, and running the same batch again resumes instead of re-triggering.
        """
        from ._batch import Batch
        from ._engine import Engine

        engine = Engine(
            self._running(),
            self._calls.slots,
            workflow_id,
            payloads,
            concurrency=concurrency,
            options=self._calls.options(timeout, result_type, on_snapshot, cancel_remote_on_exit),
            key=key,
            fail_fast=fail_fast,
            journal=journal,
        )
        assert self._tasks is not None
        return Batch(self._tasks, engine)

    def wait_many(
        self,
        executions: Iterable[Execution] | AsyncIterable[Execution],
        *,
        concurrency: int = 100,
        result_type: type[T] | None = None,
        timeout: float | None = DEFAULT,
        fail_fast: bool = False,
        cancel_remote_on_exit: bool = False,
        on_snapshot: Hook | None = None,
    ) -> Batch[T]:
        """Wait on many executions at once; an async iterator of ``Outcome``s as they end.

        ``executions`` are handles from ``trigger()`` or ``Execution.from_token()``
        (resuming thousands after a restart, say), read lazily, at most
        ``concurrency`` at a time. Each outcome carries its ``index`` (also its
        ``key``); an entry that is not an execution of this client's platform
        ends with ``InvalidInputError`` in ``exception`` and the batch goes on.
        """
        from ._batch import Batch
        from ._engine import Engine

        self._calls.check_pollable("wait_many")
        engine = Engine(
            self._running(),
            self._calls.slots,
            "wait_many",
            executions,
            concurrency=concurrency,
            options=self._calls.options(timeout, result_type, on_snapshot, cancel_remote_on_exit),
            key=None,
            fail_fast=fail_fast,
            journal=None,
            check_execution=self._calls.check_execution,
        )
        assert self._tasks is not None
        return Batch(self._tasks, engine)
