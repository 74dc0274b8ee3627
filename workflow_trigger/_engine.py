"""A batch (``run_many``, ``wait_many``): many jobs on the client's scheduler, outcomes
in completion order.

A driver task pulls payloads one at a time, and only once one of the batch's
``concurrency`` slots is free, so a generator of ten million payloads is
never materialised. Each payload becomes a job (``_Item``) submitted to the
client's ``Scheduler``, which does every trigger and poll; this engine is the
jobs' ``Owner``: it records their intent, token and outcome in the journal
(where there is one: a journal file, or a ``Ledger`` it is given, as a Ray
worker gives itself to report to its driver's journal), runs the batch's
``on_snapshot`` hook in the context ``run_many`` was called in, and hands
each outcome to the consumer.

An item holds its batch slot until the consumer took its outcome (``taken``),
so at most ``concurrency`` outcomes are ever buffered, handing one over never
waits, and a slow consumer slows the pulling of payloads instead of growing
memory or holding up the scheduler's workers.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any, Protocol

import anyio
import anyio.lowlevel

from ._items import BatchCounts, ItemKeys, iterate
from ._job import Job, JobOptions
from ._results import replayed
from ._scheduler import Scheduler
from ._slots import Slots
from ._transport import loop_time
from .errors import APIError, InvalidInputError, PollTimeout, WorkflowTriggerError
from .journal import ItemState, Journal
from .models import Execution, Outcome, Snapshot
from .policies import check_count
from .providers.base import TriggerOptions

__all__ = ["Engine", "Ledger", "no_run_started"]

#: how many items the driver starts before it lets the event loop run
_YIELD_EVERY = 64


class Ledger(Protocol):
    """What a batch records of its items: a ``Journal`` (opened from the path the caller
    gave), or one that a batch is given open, which it neither opens nor closes (the Ray
    worker's, which reports to its driver's journal). Given one, a batch stops as a
    journaled one does (the triggers on the wire finish and their tokens are recorded);
    only a journal file asks for JSON keys, a given ledger's items are named by position."""

    def state(self, key: Any) -> ItemState | None:
        """What was recorded of the item: its token (wait on it), its outcome (hand it over)."""

    async def record_intent(self, key: Any, *, honoured: bool) -> ItemState:
        """The item's trigger is about to be sent; the state says its idempotency key."""

    async def record_token(self, key: Any, execution: Execution) -> None: ...

    async def record_outcome(self, key: Any, outcome: Outcome[Any]) -> None: ...

    async def record_refused(self, key: Any) -> None:
        """The item's trigger was refused outright: it started no run."""


class _Item(Job):
    """One payload of a batch, from its slot to its outcome."""

    __slots__ = ("duplicated", "index", "journal_state", "key")

    def __init__(
        self,
        options: JobOptions,
        owner: Engine,
        index: int,
        key: Any,
        payload: Any,
        journal_state: ItemState | None,
    ) -> None:
        super().__init__(
            options, workflow_id=owner.workflow_id, deadline=math.inf, payload=payload, owner=owner
        )
        self.index = index
        self.key = key
        self.journal_state = journal_state  # what the journal knew of it when it was read
        self.duplicated = False

    def fields(self) -> dict[str, Any]:
        return {"index": self.index, "key": self.key, "possibly_duplicated": self.duplicated}


class Engine:
    """One batch's state and its driver; apart from ``Batch`` so that dropping the handle
    is seen."""

    def __init__(
        self,
        scheduler: Scheduler,
        client_slots: Slots,
        workflow_id: str,
        payloads: Iterable[Any] | AsyncIterable[Any],
        *,
        concurrency: int,
        options: JobOptions,
        key: Callable[[Any], Any] | None,
        fail_fast: bool,
        journal: str | os.PathLike[str] | Ledger | None,
        check_execution: Callable[[Execution], None] | None = None,
    ) -> None:
        check_count("concurrency", concurrency)
        if not isinstance(payloads, (Iterable, AsyncIterable)) or isinstance(
            payloads, (str, bytes, dict)
        ):
            raise InvalidInputError(
                "payloads must be an iterable or async iterable of payloads (a list, a "
                f"generator...), got {type(payloads).__name__}"
            )
        if key is not None and not callable(key):
            raise InvalidInputError("key must be a function of the payload, or None")
        self.scheduler = scheduler
        self.client_slots = client_slots
        self.workflow_id = workflow_id
        self.payloads = payloads
        self.options = options
        self.key = key
        self.fail_fast = fail_fast
        #: with it, the items are executions to wait on (``wait_many``), not payloads
        self.check_execution = check_execution
        self.send, self.receive = anyio.create_memory_object_stream[Outcome[Any]](concurrency)
        self.scope = anyio.CancelScope()
        self.finished = anyio.Event()
        self.error: BaseException | None = None
        self.journal_path: str | os.PathLike[str] | None = None
        self.journal: Ledger | None = None
        if isinstance(journal, (str, os.PathLike)):
            self.journal_path = journal  # opened by ``drive``
        else:
            self.journal = journal
        #: what became of the items so far (``Batch.counts``)
        self.counts = BatchCounts()
        self._slots = Slots(concurrency)
        self._live: set[_Item] = set()  # submitted, not yet ended: each holds a client slot
        self._on_wire: set[_Item] = set()  # whose trigger was sent and has not settled
        self._settled: anyio.Event | None = None  # made once the driver waits on them
        self._undelivered = 0
        self._exhausted = False
        self._all_done = anyio.Event()

    @property
    def name(self) -> str:
        return "wait_many" if self.check_execution else f"run_many {self.workflow_id}"

    def stop(self) -> None:
        """Stop the batch: nothing more is pulled, every item in flight is cancelled."""
        self.receive.close()
        if not self.finished.is_set():
            # RuntimeError: no event loop any more, so nothing runs that could be cancelled
            with contextlib.suppress(RuntimeError):
                self.scope.cancel()

    def taken(self) -> None:
        """The consumer took one outcome: its item's slot is free."""
        self._slots.give()

    async def drive(self) -> None:
        """Pull and start every item, then wait until each was delivered; on a stop (the
        consumer left, ``fail_fast``), take the items in flight out. With a journal, the
        stop is graceful: no trigger starts after it, the triggers on the wire get their
        answers (each bounded by the request timeout) and their tokens are recorded, and
        only then does the journal close, so a resume triggers none of them again."""
        try:
            async with self.send, anyio.create_task_group() as writer:
                if self.journal_path is not None:
                    self.journal = journal = await Journal.open(
                        self.journal_path,
                        provider=self.scheduler.provider.kind,
                        workflow_id=self.workflow_id,
                        stopping=lambda: self.scope.cancel_called,
                    )
                    await writer.start(journal.run_writer)
                with self.scope:
                    await self._pull()
                    if self._undelivered:
                        await self._all_done.wait()
                self._cancel_live()
                while self._on_wire:
                    self._settled = anyio.Event()
                    await self._settled.wait()
                writer.cancel_scope.cancel()
        except Exception as exc:  # a failing payload iterator or key(): surface it to the consumer
            error: BaseException = exc
            inner: tuple[BaseException, ...]
            while len(inner := getattr(error, "exceptions", ())) == 1:  # a group of one
                error = inner[0]
            self.error = error
        finally:
            self._cancel_live()
            self.send.close()
            self.finished.set()

    def _cancel_live(self) -> None:
        scheduler, graceful = self.scheduler, self.journal is not None
        for item in self._live:
            scheduler.withdraw(item, let_trigger_finish=graceful)
            self.client_slots.give()
            if item.options.cancel_remote and item.execution is not None:
                scheduler.cancel_remote_soon(item.execution)
        self._live.clear()

    # -- pulling -------------------------------------------------------------------------

    async def _pull(self) -> None:
        """Read payloads one at a time, each once a slot is free, and start them."""
        journal, index, slots = self.journal, 0, self._slots
        keys = ItemKeys(self.key, journaled=self.journal_path is not None)
        async for payload in iterate(self.payloads):
            named = keys.name(payload, index)
            key = named.key
            state = journal.state(key) if journal is not None and not named.refused else None
            item = _Item(self.options, self, index, key, payload, state)
            index += 1
            if not slots.take_nowait():
                await slots.take()
            self._undelivered += 1
            if named.refused is not None:  # a duplicate key: never triggered, journal untouched
                self.counts.refused += 1
                item.payload = None
                self._deliver(
                    Outcome(
                        execution=None,
                        status=None,
                        index=item.index,
                        key=key,
                        exception=named.refused,
                    )
                )
            elif state is not None and state.outcome is not None:
                self.counts.from_journal += 1
                self._deliver(
                    replayed(
                        self.scheduler.converter,
                        state.outcome,
                        self.options.result_type,
                        index=item.index,
                        key=key,
                    )
                )
            else:
                await self._start(item, state)
            if index % _YIELD_EVERY == 0:
                await anyio.lowlevel.checkpoint()  # the loop gets its turns
        self._exhausted = True
        if not self._undelivered:
            self._all_done.set()

    async def _start(self, item: _Item, state: ItemState | None) -> None:
        if not self.client_slots.take_nowait():
            await self.client_slots.take()
        self._live.add(item)
        item.deadline = self.options.deadline(loop_time())
        if self.check_execution is not None:  # wait_many: the payload is the execution
            execution, item.payload = item.payload, None
            try:
                self.check_execution(execution)
            except WorkflowTriggerError as exc:
                await self.ended_with(item, exc)
                return
            item.execution = execution
        elif state is not None and state.token is not None:  # wait on it, trigger nothing
            self.counts.resumed += 1
            item.payload = None
            item.duplicated = state.possibly_duplicated
            item.execution = Execution.from_token(state.token)
        self.scheduler.submit(item)

    # -- the scheduler's hooks (Owner) -----------------------------------------------------

    async def before_trigger(self, job: Job) -> None:
        assert isinstance(job, _Item)
        if self.scope.cancel_called:  # stopping: the trigger is not sent
            self.scheduler.withdraw(job)
            return
        journal = self.journal
        if journal is not None:
            honoured = self.scheduler.provider.honours_idempotency_key
            # the journal says whether an earlier trigger of this item may have started a run
            job.journal_state = await journal.record_intent(job.key, honoured=honoured)
            job.duplicated = job.journal_state.possibly_duplicated
            if honoured:
                job.trigger_options = TriggerOptions(
                    idempotency_key=job.journal_state.idempotency_key
                )
        self.counts.triggered += 1
        self.counts.flagged += job.duplicated
        self._on_wire.add(job)

    async def triggered(self, job: Job) -> None:
        if self.journal is not None:
            assert isinstance(job, _Item) and job.execution is not None
            await self.journal.record_token(job.key, job.execution)

    def trigger_settled(self, job: Job) -> None:
        if job in self._on_wire:
            assert isinstance(job, _Item)
            self._on_wire.discard(job)
            if self._settled is not None:
                self._settled.set()

    async def changed(self, job: Job, snapshot: Snapshot) -> None:
        hook, context = self.options.on_snapshot, self.options.context
        if hook is None:
            return
        result = context.run(hook, snapshot) if context is not None else hook(snapshot)
        if inspect.isawaitable(result):
            await result

    async def ended(self, job: Job) -> None:
        assert isinstance(job, _Item)
        if job.error is not None:
            await self.ended_with(job, job.error)
            return
        assert job.outcome is not None
        if self.journal is not None:
            await self.journal.record_outcome(job.key, job.outcome)
        self._end(job)
        self._deliver(job.outcome)

    async def ended_with(self, item: _Item, exc: WorkflowTriggerError) -> None:
        if self.journal is not None and item.execution is None and no_run_started(exc):
            await self.journal.record_refused(item.key)
        snapshot = exc.snapshot if isinstance(exc, PollTimeout) else None
        self._end(item)
        self._deliver(
            Outcome(
                execution=item.execution,
                status=snapshot.status if snapshot else None,
                raw_status=snapshot.raw_status if snapshot else None,
                index=item.index,
                key=item.key,
                exception=exc,
                possibly_duplicated=item.duplicated,
            )
        )

    def _end(self, item: _Item) -> None:
        if item in self._live:
            self._live.discard(item)
            self.client_slots.give()

    def _deliver(self, outcome: Outcome[Any]) -> None:
        """Hand ``outcome`` to the consumer: never waits, the item's slot bounds the buffer."""
        try:
            self.send.send_nowait(outcome)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.scope.cancel()  # the consumer is gone
            return
        self._undelivered -= 1
        if self.fail_fast and outcome.exception is not None:
            self.error = outcome.exception
            self.scope.cancel()
        if self._exhausted and not self._undelivered:
            self._all_done.set()


def no_run_started(exc: WorkflowTriggerError) -> bool:
    """Whether a failed trigger certainly started no run (so a re-run may trigger afresh)."""
    if isinstance(exc, InvalidInputError) and exc.status_code is None:
        return True  # refused by the SDK before sending
    status = exc.status_code if isinstance(exc, APIError) else None
    return status is not None and 400 <= status < 500 and status not in (408, 429)
