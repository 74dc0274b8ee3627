"""A job: one execution a client's scheduler works on, and what its caller asked of it.

``JobOptions`` is what a call asked (shared by every item of a batch); a ``Job`` is
one execution from its trigger (if any) to its end, with the little a worker needs
between steps (``Scheduler`` in ``_scheduler.py`` does the work); its ``owner``, a
batch, is told of each step (``Owner``), and a single call's caller waits on a
``Wake`` made only while it waits (``Job.notify``; an ``anyio.Event`` is about
900 bytes per waiting call, an asyncio future and its iterator 216, a ``Wake``
64, and aiohttp ties the client to asyncio anyway). Cancelling a job takes it
out of the scheduler at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any, Protocol, cast

import anyio
import attrs

from ._state import ExecutionState
from .errors import WorkflowTriggerError
from .models import Execution, Outcome, Snapshot
from .providers.base import TriggerOptions

__all__ = ["Job", "JobOptions", "Owner"]


class Owner(Protocol):
    """A batch that owns jobs: told of each step instead of an event being set."""

    async def before_trigger(self, job: Job) -> None:
        """Just before the trigger is sent (the journal records the intent here)."""

    async def triggered(self, job: Job) -> None:
        """The trigger answered: ``job.execution`` is known (the journal records it)."""

    def trigger_settled(self, job: Job) -> None:
        """The trigger step is over, however it ended (after ``triggered`` if it answered)."""

    async def changed(self, job: Job, snapshot: Snapshot) -> None:
        """A change of status or steps (only for jobs that report them)."""

    async def ended(self, job: Job) -> None:
        """``job.outcome`` or ``job.error`` is set."""


@attrs.frozen(kw_only=True)
class JobOptions:
    """What a call asked of its execution(s); one shared by every item of a batch."""

    timeout: float | None = None  # seconds from the job's start; None: no end
    result_type: type[Any] | None = None
    on_snapshot: Callable[[Snapshot], object] | None = None
    cancel_remote: bool = False
    #: the caller's contextvars, where its hooks and events run
    context: contextvars.Context | None = None
    #: a watch: each change is collected for the caller, and no result is fetched
    snapshots_only: bool = False

    @property
    def reports(self) -> bool:
        """Whether each change of status or steps is reported (to the owner or the caller)."""
        return self.on_snapshot is not None or self.snapshots_only

    def deadline(self, now: float) -> float:
        return now + self.timeout if self.timeout is not None else math.inf


class Job:
    """One execution the scheduler works on, from its trigger (if any) to its end."""

    __slots__ = (
        "changes",
        "deadline",
        "done",
        "due",
        "error",
        "execution",
        "flags",
        "id",
        "options",
        "outcome",
        "owner",
        "payload",
        "scope",
        "state",
        "trigger_options",
        "waiter",
        "workflow_id",
    )

    def __init__(
        self,
        options: JobOptions,
        *,
        workflow_id: str,
        deadline: float = math.inf,
        payload: Any = None,
        execution: Execution | None = None,
        trigger_options: TriggerOptions | None = None,
        trigger_only: bool = False,
        owner: Owner | None = None,
    ) -> None:
        self.options = options
        self.id = next(_ids)
        self.workflow_id = workflow_id
        self.deadline = deadline
        self.payload = payload
        self.execution = execution
        self.trigger_options = trigger_options or _NO_OPTIONS
        #: ``cancelled``, ``started``, ``triggering``, ``trigger_only`` in one small int:
        #: 24 bytes less for each of 100,000 waiting calls than a slot each
        self.flags = _TRIGGER_ONLY if trigger_only else 0
        self.owner = owner
        self.state: ExecutionState | None = None
        self.outcome: Outcome[Any] | None = None
        self.error: WorkflowTriggerError | None = None
        self.done = False  # ended, or cancelled: no worker touches it any more
        self.scope: anyio.CancelScope | None = None
        #: the time of the timer entry that counts (older ones are skipped)
        self.due: float | None = None
        #: the changes the caller's task has yet to see (a single call that reports them)
        self.changes: deque[Snapshot] | None = (
            deque() if owner is None and options.reports else None
        )
        #: what a single call's caller awaits until the job ends or has a change
        self.waiter: Wake | None = None

    @property
    def cancelled(self) -> bool:
        """Taken out by its caller or its batch (``cancel``), not ended by the platform."""
        return bool(self.flags & _CANCELLED)

    @property
    def started(self) -> bool:
        """A worker took its trigger."""
        return bool(self.flags & _STARTED)

    @started.setter
    def started(self, value: bool) -> None:
        self._set(_STARTED, value)

    @property
    def triggering(self) -> bool:
        """Its trigger is on the wire."""
        return bool(self.flags & _TRIGGERING)

    @triggering.setter
    def triggering(self, value: bool) -> None:
        self._set(_TRIGGERING, value)

    @property
    def trigger_only(self) -> bool:
        """A bare ``trigger()``: it ends with its execution, nothing is polled."""
        return bool(self.flags & _TRIGGER_ONLY)

    def _set(self, bit: int, value: bool) -> None:
        self.flags = self.flags | bit if value else self.flags & ~bit

    @property
    def context(self) -> contextvars.Context | None:
        return self.options.context

    @property
    def tracked(self) -> bool:
        """Whether the job ends in an outcome, so its start and end are reported as events
        (not a bare trigger, not a watch)."""
        return not self.trigger_only and not self.options.snapshots_only

    def fields(self) -> dict[str, Any]:
        """What a batch adds to this job's ``Outcome`` (index, key...)."""
        return {}

    def notify(self) -> None:
        """The job ended or has a change: wake its single call's caller, if it waits."""
        waiter = self.waiter
        if waiter is not None:
            waiter.wake()

    def wait(self) -> Wake:
        """For a single call's caller: what to await until the next ``notify``. Check
        ``done`` (and ``changes``) first: a notify before this call is not kept."""
        self.waiter = waiter = Wake()
        return waiter

    async def updates(self) -> AsyncIterator[Snapshot]:
        """For a single call's caller: each change it reports, until the job is done."""
        changes = self.changes
        assert changes is not None
        while not self.done or changes:
            if not changes:
                await self.wait()
            while changes:
                yield changes.popleft()

    def __lt__(self, other: Job) -> bool:
        """Timer entries of the same time, in the order the jobs were made."""
        return self.id < other.id

    def cancel(self, *, let_trigger_finish: bool = False) -> None:
        """Take the job out of the scheduler; with ``let_trigger_finish``, a trigger on
        the wire still gets its answer (and its owner's ``triggered``), nothing after."""
        if self.done:
            return
        self.done = True
        self.flags |= _CANCELLED
        if self.scope is not None and not (let_trigger_finish and self.triggering):
            self.scope.cancel()


class Wake:
    """What a single call's caller awaits until its job's next ``notify``: the least
    an ``asyncio.Task`` can wait on. A task drives any future-like object it is
    handed by the protocol ``asyncio.isfuture`` names (``_asyncio_future_blocking``,
    ``get_loop``, ``add_done_callback``, ``result``, ``cancel``); this one is 64
    bytes, where an ``asyncio.Future`` and the iterator that awaits it are 216, and
    100,000 waiting calls each hold one. Cancelling the caller's task cancels it,
    and its ``await`` raises ``CancelledError`` with the cancel's message, as a
    future's would (anyio tells its cancel scopes' cancels by that message)."""

    __slots__ = ("_asyncio_future_blocking", "_callback", "_context", "_state")

    def __init__(self) -> None:
        self._asyncio_future_blocking = False
        self._callback: Callable[[Wake], object] | None = None
        self._context: contextvars.Context | None = None
        #: None while pending, True once woken, the error to raise once cancelled
        self._state: bool | asyncio.CancelledError | None = None

    def wake(self) -> None:
        if self._state is None:
            self._state = True
            self._schedule()

    # -- what asyncio.Task calls -----------------------------------------------------------

    def __await__(self) -> Generator[Any, None, None]:
        # ``await`` needs an iterator, which this is (``__next__``), not a generator
        return cast("Generator[Any, None, None]", self)

    def __next__(self) -> Wake:
        if self._state is None:
            self._asyncio_future_blocking = True  # the task takes it (and sets it back)
            return self
        self.result()  # raises CancelledError once cancelled
        raise StopIteration

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def add_done_callback(
        self, callback: Callable[[Wake], object], *, context: contextvars.Context | None = None
    ) -> None:
        self._callback, self._context = callback, context
        if self._state is not None:
            self._schedule()

    def result(self) -> None:
        if isinstance(self._state, asyncio.CancelledError):
            raise self._state

    def done(self) -> bool:
        return self._state is not None

    def cancel(self, msg: object = None) -> bool:
        if self._state is not None:
            return False
        self._state = asyncio.CancelledError() if msg is None else asyncio.CancelledError(msg)
        self._schedule()
        return True

    def _schedule(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            asyncio.get_running_loop().call_soon(callback, self, context=self._context)
        self._context = None

    def __repr__(self) -> str:
        state = self._state
        shown = "pending" if state is None else "woken" if state is True else "cancelled"
        return f"<workflow_trigger Wake {shown}>"


_NO_OPTIONS = TriggerOptions()
_CANCELLED, _STARTED, _TRIGGERING, _TRIGGER_ONLY = 1, 2, 4, 8
_ids = itertools.count(1)
