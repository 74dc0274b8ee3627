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

import contextlib
import logging
import os
import pathlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, overload

import aiohttp
import anyio
import anyio.abc

from ._calls import DEFAULT, Calls, Hook, T, named, trigger_options
from ._job import Job
from ._results import make_converter
from ._scheduler import Scheduler
from .errors import InvalidInputError, UnsupportedOperation
from .models import Artifact, Execution, Outcome, Snapshot
from .options import ClientOptions, ClientOptionsKwargs
from .providers.base import Provider

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._batch import Batch
    from ._engine import Ledger

__all__ = ["DEFAULT", "AsyncClient", "ledgered_batch"]

logger = logging.getLogger("workflow_trigger")
logger.addHandler(logging.NullHandler())


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
        self._scheduler = Scheduler.for_client(
            self._session,
            self.provider,
            opts,
            policy=self.poll_policy,
            rate_limit=self.rate_limit,
            converter=self._converter,
            emit=opts.event_sink(),
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

    @property
    def requests_sent(self) -> int:
        """How many HTTP requests this client has sent, retries included."""
        return self._scheduler.transport.requests_sent if self._scheduler else 0

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
        return await self._calls.status(execution, timeout)

    async def cancel(self, execution: Execution) -> None:
        """Ask the platform to stop the run (where it has such an operation)."""
        await self._calls.control(execution, "cancel")

    async def pause(self, execution: Execution) -> None:
        await self._calls.control(execution, "pause")

    async def resume(self, execution: Execution) -> None:
        await self._calls.control(execution, "resume")

    async def send_event(self, execution: Execution, event_type: str, payload: Any = None) -> None:
        """Deliver an event to a run that waits for one (AwaitStep)."""
        await self._calls.control(
            execution, "event", {"event_type": event_type, "payload": payload}
        )

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
        max_bytes: int = 100 * 2**20,
    ) -> bytes | pathlib.Path:
        """A result file (Pinkfish ``Outcome.artifacts``): its bytes, or with ``to=`` the
        ``pathlib.Path`` it was streamed to. Reads no more than ``max_bytes``."""
        return await self._calls.download(artifact, to, max_bytes)

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
        # closed with this generator, not when collected: leaving the loop takes the job out
        async with contextlib.aclosing(self._calls.watch(execution, timeout)) as snapshots:
            async for snapshot in snapshots:
                yield snapshot

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
        options = self._calls.options(timeout, result_type, on_snapshot, cancel_remote_on_exit)
        return self._calls.batch(
            self._tasks,
            workflow_id,
            payloads,
            options,
            concurrency,
            key,
            fail_fast,
            journal=journal,
        )

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
        self._calls.check_pollable("wait_many")
        options = self._calls.options(timeout, result_type, on_snapshot, cancel_remote_on_exit)
        return self._calls.batch(
            self._tasks, "wait_many", executions, options, concurrency, None, fail_fast, waits=True
        )


def ledgered_batch(
    client: AsyncClient,
    workflow_id: str,
    payloads: AsyncIterable[Any],
    *,
    concurrency: int,
    timeout: float | None,
    ledger: Ledger,
) -> Batch[Any]:
    """``client.run_many`` whose items' intent, token and outcome go to ``ledger`` instead
    of a journal file, its items named by position (raw results, no hook): how a Ray
    worker runs the items its driver hands it, reporting to the driver's journal."""
    calls = client._calls
    options = calls.options(timeout, None, None, False)
    return calls.batch(
        client._tasks, workflow_id, payloads, options, concurrency, None, False, journal=ledger
    )
