"""The caller's side of every call of the client: what ``trigger``, ``wait``, ``run``,
``watch``, ``status``, the controls, ``download`` and the batches (``run_many``,
``wait_many``) do besides the scheduler's work; ``client.py`` keeps the lifecycle and
the public signatures.

Every check of a call's arguments is made here, before anything is sent; a call
that sets no option of its own shares one ``JobOptions``; the caller's
contextvars are kept only where a hook of its will run. ``Calls.wait`` is the
coroutine a waiting call returns: it holds one of the client's slots from
submit to end, runs the caller's ``on_snapshot`` in the caller's own task (so
in its context), and takes the job out at once when the caller is cancelled.
It is the only frame a waiting call keeps: ``trigger``, ``wait`` and ``run``
are plain functions that check and return it, so the caller's frame does not
keep the payload alive once it was sent.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import math
import os
import pathlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
)
from typing import TYPE_CHECKING, Any

import anyio.abc
import cattrs

from ._job import Job, JobOptions
from ._results import check_result_type
from ._scheduler import Scheduler
from ._slots import Slots
from ._transport import DeadlineReached, loop_time
from .errors import InvalidInputError, PollTimeout, UnsupportedOperation
from .models import Artifact, Execution, Snapshot
from .options import ClientOptions
from .policies import PollPolicy, check_count, check_positive
from .providers.base import Control, Provider, TriggerOptions, error_for_status

if TYPE_CHECKING:
    from ._batch import Batch
    from ._engine import Ledger

__all__ = ["DEFAULT", "Calls", "Hook", "T", "named", "trigger_options"]

Hook = Callable[[Snapshot], object]

#: the result type of the clients' methods: Any where no result_type is given (PEP 696)
if TYPE_CHECKING:
    from typing_extensions import TypeVar

    T = TypeVar("T", default=Any)
else:
    from typing import TypeVar

    T = TypeVar("T")


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


#: ``timeout=DEFAULT`` means "the poll policy's timeout"; ``None`` means no end.
DEFAULT: Any = _Default()


class Calls:
    """One client's checks and waiting; ``running`` says whether the client is open."""

    def __init__(
        self,
        provider: Provider,
        options: ClientOptions,
        poll_policy: PollPolicy,
        converter: cattrs.Converter,
        running: Callable[[], Scheduler],
    ) -> None:
        self.provider = provider
        self.client_options = options
        self.poll_policy = poll_policy
        self.converter = converter
        self.running = running
        self.slots = Slots(options.max_concurrency)
        #: the options of a call that sets none of its own, shared by all such calls
        self._plain: JobOptions | None = None

    def timeout(self, timeout: float | None) -> float | None:
        if timeout is DEFAULT:
            timeout = self.poll_policy.timeout
        check_positive("timeout", timeout, allow_none=True, allow_inf=True)
        return timeout if timeout is None or math.isfinite(timeout) else None

    def check_execution(self, execution: Execution, *, polled: bool = False) -> None:
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
        if polled:
            self.check_pollable("waiting on an execution")

    def check_pollable(self, what: str) -> None:
        if not self.provider.pollable:
            raise UnsupportedOperation(
                f"{what} is not possible on {self.provider.kind}: a run has no record to poll "
                "and its result is the reply to the trigger, so use client.run(...)"
            )

    def options(
        self,
        timeout: float | None,
        result_type: type[Any] | None = None,
        on_snapshot: Hook | None = None,
        cancel_remote_on_exit: bool = False,
        *,
        snapshots_only: bool = False,
    ) -> JobOptions:
        """A call's options, checked before anything is sent (and the client open)."""
        hooked = on_snapshot is not None or self.client_options.on_event is not None
        plain = (
            timeout is DEFAULT
            and result_type is None
            and not cancel_remote_on_exit
            and not snapshots_only
            and not hooked
        )
        if plain and self._plain is not None:
            self.running()
            return self._plain
        if on_snapshot is not None and not callable(on_snapshot):
            raise InvalidInputError("on_snapshot must be a function of a Snapshot, or None")
        check_result_type(self.converter, result_type)
        if cancel_remote_on_exit and "cancel" not in self.provider.controls:
            raise UnsupportedOperation(
                f"cancel_remote_on_exit=True needs a remote cancel, which {self.provider.kind} "
                "does not have: leave it out"
            )
        options = JobOptions(
            timeout=self.timeout(timeout),
            result_type=result_type,
            on_snapshot=on_snapshot,
            cancel_remote=cancel_remote_on_exit,
            context=contextvars.copy_context() if hooked else None,
            snapshots_only=snapshots_only,
        )
        self.running()
        if plain:
            self._plain = options
        return options

    # -- one request each ---------------------------------------------------------------

    async def status(self, execution: Execution, timeout: float | None) -> Snapshot:
        self.check_execution(execution, polled=True)
        seconds = self.timeout(timeout)
        scheduler = self.running()
        deadline = loop_time() + seconds if seconds is not None else math.inf
        async with self.slot():
            try:
                return await scheduler.status(execution, deadline=deadline)
            except DeadlineReached:
                raise PollTimeout(
                    f"the status of execution {execution.execution_id} got no answer within "
                    f"{timeout} s; ask again, or raise timeout=",
                    execution=execution,
                    snapshot=None,
                ) from None

    async def control(self, execution: Execution, control: Control, data: Any = None) -> None:
        self.check_execution(execution)
        scheduler = self.running()
        async with self.slot():
            await scheduler.control(execution, control, data)

    async def download(
        self, artifact: Artifact, to: str | os.PathLike[str] | None, max_bytes: int
    ) -> bytes | pathlib.Path:
        check_count("max_bytes", max_bytes)
        request = self.provider.download_request(artifact)
        path = os.fspath(to) if to is not None else None
        transport = self.running().transport
        async with self.slot():
            response = await transport.send(request, max_body=max_bytes, to=path)
        if not 200 <= response.status < 300:
            raise error_for_status(
                response,
                f"the download of {artifact.name!r} answered HTTP {response.status}: the file "
                "may have expired; fetch the run's results again for a fresh link",
            )
        return pathlib.Path(path) if path is not None else response.body

    # -- many changes, many items ---------------------------------------------------------

    async def watch(
        self, execution: Execution, timeout: float | None
    ) -> AsyncGenerator[Snapshot, None]:
        self.check_execution(execution, polled=True)
        options = self.options(timeout, snapshots_only=True)
        job = Job(options, workflow_id=execution.workflow_id, execution=execution)
        scheduler = self.running()
        await self.slots.take()  # each step of the iteration may run in another task
        try:
            job.deadline = options.deadline(loop_time())
            scheduler.submit(job)
            async for snapshot in job.updates():
                yield snapshot
        finally:
            scheduler.withdraw(job)
            self.slots.give()
        if job.error is not None:
            raise job.error

    def batch(
        self,
        tasks: anyio.abc.TaskGroup | None,
        workflow_id: str,
        items: Iterable[Any] | AsyncIterable[Any],
        options: JobOptions,
        concurrency: int,
        key: Callable[[Any], Any] | None,
        fail_fast: bool,
        *,
        journal: str | os.PathLike[str] | Ledger | None = None,
        waits: bool = False,
    ) -> Batch[Any]:
        """A ``run_many`` of ``items`` (payloads), or with ``waits`` a ``wait_many`` (the
        items are executions); ``options`` come checked, and with them that the client is
        open, whose ``tasks`` then exist."""
        from ._batch import Batch
        from ._engine import Engine

        assert tasks is not None

        engine = Engine(
            self.running(),
            self.slots,
            workflow_id,
            items,
            concurrency=concurrency,
            options=options,
            key=key,
            fail_fast=fail_fast,
            journal=journal,
            check_execution=self.check_execution if waits else None,
        )
        return Batch(tasks, engine)

    async def wait(self, job: Job) -> Any:
        """Submit ``job`` and wait for its end, holding one of the client's slots: the
        execution of a bare trigger, else the outcome (see the module's docstring). Its
        frame is what each waiting call keeps, so it has as few locals as can be; the
        hook's loop and the way out are apart."""
        scheduler = self.running()  # the client may have closed since the call
        if not self.slots.take_nowait():
            await self.slots.take()
        try:
            job.deadline = job.options.deadline(loop_time())  # the timeout counts from here
            scheduler.submit(job)
            try:
                if job.options.on_snapshot is None:  # the common case: one wait
                    while not job.done:
                        await job.wait()
                else:
                    await self._report(job)
            except BaseException:
                await self._leave(scheduler, job)
                raise
        finally:
            self.slots.give()
        if job.error is not None:
            raise job.error
        return job.execution if job.trigger_only else job.outcome

    async def _report(self, job: Job) -> None:
        """Run the caller's ``on_snapshot`` (in its task, so in its context) on each change."""
        hook = job.options.on_snapshot
        assert hook is not None
        async for snapshot in job.updates():
            if inspect.isawaitable(result := hook(snapshot)):
                await result

    async def _leave(self, scheduler: Scheduler, job: Job) -> None:
        """The caller left (cancelled, or its hook raised): take the job out, and cancel
        the run where it asked that."""
        ended = job.done and not job.cancelled
        scheduler.withdraw(job)
        if job.options.cancel_remote and job.execution is not None and not ended:
            await scheduler.cancel_remote(job.execution, job)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One of the client's slots, for one request that is not a job."""
        await self.slots.take()
        try:
            yield
        finally:
            self.slots.give()


def trigger_options(
    idempotency_key: str | None, connection_id: str | None
) -> TriggerOptions | None:
    if idempotency_key is None and connection_id is None:
        return None  # the job's shared empty options
    return TriggerOptions(idempotency_key=idempotency_key, connection_id=connection_id)


def named(coroutine: Coroutine[Any, Any, Any], name: str) -> Coroutine[Any, Any, Any]:
    """``coroutine`` under the name of the method that made it, so that a forgotten
    ``await`` warns about ``AsyncClient.run``, not about an internal helper."""
    coroutine.__qualname__ = name  # type: ignore[attr-defined]
    return coroutine
