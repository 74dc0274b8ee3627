"""A job: one execution a client's scheduler works on, and what its caller asked of it.

``JobOptions`` is what a call asked (shared by every item of a batch); a ``Job`` is
one execution from its trigger (if any) to its end, with the little a worker needs
between steps (``Scheduler`` in ``_scheduler.py`` does the work); its ``owner``, a
batch, is told of each step (``Owner``), and a single call's caller waits on a
bare asyncio future made only while it waits (``Job.notify``; an ``anyio.Event``
is about 900 bytes per waiting call, this about 150, and aiohttp ties the
client to asyncio anyway). Cancelling a job takes it out of the scheduler at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import anyio
import attrs

from ._state import ExecutionState
from .errors import WorkflowTriggerError
from .models import Execution, Outcome, Snapshot
from .providers.base import Request, TriggerOptions

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
        "cancelled",
        "changes",
        "deadline",
        "done",
        "due",
        "error",
        "execution",
        "id",
        "options",
        "outcome",
        "owner",
        "payload",
        "request",
        "scope",
        "started",
        "state",
        "trigger_only",
        "trigger_options",
        "triggering",
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
        self.trigger_only = trigger_only
        self.owner = owner
        self.state: ExecutionState | None = None
        self.request: Request | None = None
        self.outcome: Outcome[Any] | None = None
        self.error: WorkflowTriggerError | None = None
        self.done = False  # ended, or cancelled: no worker touches it any more
        self.cancelled = False
        self.started = False  # a worker took its trigger
        self.triggering = False  # its trigger is on the wire
        self.scope: anyio.CancelScope | None = None
        #: the time of the timer entry that counts (older ones are skipped)
        self.due: float | None = None
        #: the changes the caller's task has yet to see (a single call that reports them)
        self.changes: deque[Snapshot] | None = (
            deque() if owner is None and options.reports else None
        )
        #: what a single call's caller awaits until the job ends or has a change
        self.waiter: asyncio.Future[None] | None = None

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
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wait(self) -> asyncio.Future[None]:
        """For a single call's caller: a future done at the next ``notify``. Check
        ``done`` (and ``changes``) first: a notify before this call is not kept."""
        self.waiter = waiter = asyncio.get_running_loop().create_future()
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
        self.done = self.cancelled = True
        if self.scope is not None and not (let_trigger_finish and self.triggering):
            self.scope.cancel()


_NO_OPTIONS = TriggerOptions()
_ids = itertools.count(1)
