"""run_many's engine: many executions at once, outcomes in completion order.

A driver task pulls payloads one at a time, and only once one of the batch's
``concurrency`` slots is free (a ``CapacityLimiter`` borrowed on behalf of
each item), so a generator of ten million payloads is never materialised.

Items are not tasks. A fixed pool of workers, one per connection the batch
may use, takes the next thing to do: a trigger (while fewer than half the
workers are triggering), else a poll that is due. Between its polls an item
is an entry in a timer heap that one dispatcher task watches. Ten thousand
executions in flight are then ten thousand small objects rather than ten
thousand tasks with their coroutines, sleeps and cancel scopes: far less for
the event loop to run and for the garbage collector to walk. Each request is
bounded by its item's deadline through the transport (aiohttp's own timeout),
and no request or retry starts after it.

An ended item's ``Outcome`` goes into a bounded memory object stream; the
item keeps its slot until the stream took it, so a slow consumer slows
triggering instead of growing memory.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import os
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import attrs

from ._items import BatchCounts, ItemKeys
from ._polling import Poller
from ._results import structure_result
from ._transport import DeadlineReached
from .client import trigger_timed_out
from .errors import APIError, InvalidInputError, PollTimeout, WorkflowTriggerError
from .journal import ItemState, Journal
from .models import Execution, Outcome, Status
from .policies import check_count

if TYPE_CHECKING:
    from .client import AsyncClient

__all__ = ["Engine"]

#: how many items the driver starts before it lets the event loop run
_YIELD_EVERY = 64
#: a poll due this soon is due now (one wake of the dispatcher serves them all)
_EARLY = 0.001


async def _iterate(payloads: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(payloads, AsyncIterable):
        async for payload in payloads:
            yield payload
    else:
        for payload in payloads:
            yield payload


class _Item:
    """One payload of a batch, from its slot to its outcome."""

    __slots__ = (
        "deadline",
        "duplicated",
        "execution",
        "index",
        "key",
        "payload",
        "poller",
        "state",
    )

    def __init__(self, index: int, key: Any, payload: Any, state: ItemState | None) -> None:
        self.index = index
        self.key = key
        self.payload = payload
        self.state = state  # what the journal knew of it when it was read
        self.deadline = math.inf
        self.duplicated = False
        self.execution: Execution | None = None
        self.poller: Poller | None = None


async def _acquire(limiter: anyio.CapacityLimiter, borrower: object) -> None:
    try:  # a free token is taken without a trip through the event loop
        limiter.acquire_on_behalf_of_nowait(borrower)
    except anyio.WouldBlock:
        await limiter.acquire_on_behalf_of(borrower)


class Engine:
    """One batch's state and tasks; apart from ``Batch`` so that dropping the handle is seen."""

    def __init__(
        self,
        client: AsyncClient,
        workflow_id: str,
        payloads: Iterable[Any] | AsyncIterable[Any],
        *,
        concurrency: int,
        result_type: type[Any] | None,
        deadline_for: Callable[[], float],
        key: Callable[[Any], Any] | None,
        fail_fast: bool,
        journal: str | os.PathLike[str] | None,
        waits: bool = False,
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
        deadline_for()  # validate timeout now, not in every item
        self.client = client
        self.workflow_id = workflow_id
        self.payloads = payloads
        self.concurrency = concurrency
        self.result_type = result_type
        self.deadline_for = deadline_for
        self.key = key
        self.fail_fast = fail_fast
        #: the items are executions to wait on (``wait_many``), not payloads to trigger
        self.waits = waits
        self.send, self.receive = anyio.create_memory_object_stream[Outcome[Any]](concurrency)
        self.scope = anyio.CancelScope()
        self.finished = anyio.Event()
        self.error: BaseException | None = None
        self.journal_path = journal
        self.journal: Journal | None = None
        #: what became of the items so far (``Batch.counts``)
        self.counts = BatchCounts()
        # the engine: items to trigger, items due for a poll, a timer heap of the rest
        self._slots = anyio.CapacityLimiter(concurrency)
        self._triggers: deque[_Item] = deque()
        self._due: deque[_Item] = deque()
        self._heap: list[tuple[float, int, _Item]] = []
        self._order = itertools.count()
        self._idle: deque[anyio.Event] = deque()  # one per worker waiting for work
        self._timer: anyio.Event | None = None  # wakes the dispatcher for a sooner poll
        self._sleeping_until = math.inf
        self._triggering = 0
        self._trigger_cap = 1
        self._in_flight = 0
        self._exhausted = False
        self._all_done = anyio.Event()
        self._holding: set[_Item] = set()  # items holding one of the client's slots

    @property
    def name(self) -> str:
        return "wait_many" if self.waits else f"run_many {self.workflow_id}"

    def stop(self) -> None:
        self.receive.close()
        if not self.finished.is_set():
            # RuntimeError: no event loop any more, so nothing runs that could be cancelled
            with contextlib.suppress(RuntimeError):
                self.scope.cancel()

    async def drive(self) -> None:
        try:
            with self.scope:
                async with self.send, anyio.create_task_group() as writer:
                    if self.journal_path is not None:
                        self.journal = await Journal.open(
                            self.journal_path,
                            provider=self.client.provider.kind,
                            workflow_id=self.workflow_id,
                            stopping=lambda: self.scope.cancel_called,
                        )
                        await writer.start(self.journal.run_writer)
                    await self._run_items()
                    writer.cancel_scope.cancel()
        except Exception as exc:  # a failing payload iterator or key(): surface it to the consumer
            error: BaseException = exc
            inner: tuple[BaseException, ...]
            while len(inner := getattr(error, "exceptions", ())) == 1:  # a group of one
                error = inner[0]
            self.error = error
        finally:
            self.send.close()
            self.finished.set()

    # -- the engine ------------------------------------------------------------------------

    async def _run_items(self) -> None:
        client = self.client
        client_slots = client._slot()
        workers = min(self.concurrency, client._max_connections)
        # Triggers may keep at most half the workers busy: in a burst of thousands, the
        # polls that notice runs ending never queue behind triggers.
        self._trigger_cap = max(1, workers // 2)
        try:
            async with anyio.create_task_group() as tasks:
                for _ in range(workers):
                    tasks.start_soon(self._worker)
                tasks.start_soon(self._dispatch)
                await self._pull(client_slots)
                if self._in_flight:
                    await self._all_done.wait()
                tasks.cancel_scope.cancel()
        finally:
            for item in self._holding:
                client_slots.release_on_behalf_of(item)
            self._holding.clear()

    async def _pull(self, client_slots: anyio.CapacityLimiter) -> None:
        """Read payloads one at a time, each once a slot is free, and start them."""
        journal, index = self.journal, 0
        keys = ItemKeys(self.key, journaled=journal is not None)
        async for payload in _iterate(self.payloads):
            named = keys.name(payload, index)
            key = named.key
            state = journal.state(key) if journal and not named.refused else None
            item = _Item(index, key, payload, state)
            index += 1
            await _acquire(self._slots, item)
            self._in_flight += 1
            if named.refused is not None:  # a duplicate key: never triggered, journal untouched
                self.counts.refused += 1
                item.payload = None
                refused = Outcome[Any](
                    execution=None, status=None, index=item.index, key=key, exception=named.refused
                )
                await self._deliver(item, refused)
            elif state is not None and state.outcome is not None:
                self.counts.from_journal += 1
                await self._deliver(item, self._replay(state.outcome, item.index, key))
            else:
                await _acquire(client_slots, item)
                self._holding.add(item)
                item.deadline = self.deadline_for()
                if self.waits:
                    await self._step(item, self._wait_on)
                elif state is not None and state.token is not None:
                    await self._step(item, self._resume)
                else:
                    self._triggers.append(item)
                    self._wake()
            if index % _YIELD_EVERY == 0:
                await anyio.lowlevel.checkpoint()  # the loop gets its turns
        self._exhausted = True

    def _wake(self) -> None:
        if self._idle:
            self._idle.popleft().set()

    async def _worker(self) -> None:
        due, triggers = self._due, self._triggers
        while True:
            if triggers and self._triggering < self._trigger_cap:
                self._triggering += 1
                try:
                    await self._step(triggers.popleft(), self._trigger)
                finally:
                    self._triggering -= 1
            elif due:
                await self._step(due.popleft(), self._poll)
            else:
                event = anyio.Event()
                self._idle.append(event)
                await event.wait()

    async def _dispatch(self) -> None:
        """Move each item to the due queue when its poll is due (or its deadline comes)."""
        heap, due = self._heap, self._due
        while True:
            now = anyio.current_time() + _EARLY
            while heap and heap[0][0] <= now:
                due.append(heapq.heappop(heap)[2])
                self._wake()
            self._sleeping_until = heap[0][0] if heap else math.inf
            self._timer = timer = anyio.Event()
            with anyio.CancelScope(deadline=self._sleeping_until):
                await timer.wait()

    def _schedule(self, item: _Item, poller: Poller) -> None:
        due = min(anyio.current_time() + poller.delay(), item.deadline)
        heapq.heappush(self._heap, (due, next(self._order), item))
        if due < self._sleeping_until and self._timer is not None:
            self._timer.set()

    # -- one step of one item --------------------------------------------------------------

    async def _step(self, item: _Item, action: Callable[[_Item], Awaitable[None]]) -> None:
        try:
            await action(item)
        except WorkflowTriggerError as exc:
            await self._deliver(item, await self._failed(item, exc))

    async def _resume(self, item: _Item) -> None:
        """An item the journal has a token for: wait on it, trigger nothing."""
        assert item.state is not None and item.state.token is not None
        self.counts.resumed += 1
        item.duplicated = item.state.possibly_duplicated
        self._poll_from_now(item, Execution.from_token(item.state.token))

    async def _wait_on(self, item: _Item) -> None:
        """A ``wait_many`` item: the payload is the execution."""
        execution, item.payload = item.payload, None
        self.client._check_execution(execution)
        self._poll_from_now(item, execution)

    def _poll_from_now(self, item: _Item, execution: Execution) -> None:
        item.execution = execution
        item.poller = poller = Poller(self.client, execution, None)
        self._schedule(item, poller)

    async def _trigger(self, item: _Item) -> None:
        client, journal = self.client, self.journal
        idempotency_key = None
        if journal is not None:
            honoured = client.provider.honours_idempotency_key
            item.state = await journal.record_intent(item.key, honoured=honoured)
            item.duplicated = item.state.possibly_duplicated
            idempotency_key = item.state.idempotency_key if honoured else None
        self.counts.triggered += 1
        self.counts.flagged += item.duplicated
        payload, item.payload = item.payload, None  # polls do not need it: let it go
        try:
            execution, first = await client._trigger(
                self.workflow_id, payload, idempotency_key, None, item.deadline
            )
        except DeadlineReached:
            raise trigger_timed_out(self.workflow_id) from None
        item.execution = execution
        if journal is not None:
            await journal.record_token(item.key, execution)
        item.poller = poller = Poller(client, execution, first)
        if poller.done:
            await self._finish(item, poller)
        else:
            self._schedule(item, poller)

    async def _poll(self, item: _Item) -> None:
        poller = item.poller
        assert poller is not None
        if anyio.current_time() + _EARLY >= item.deadline:
            raise poller.timeout_error()
        try:
            snapshot = await poller.poll(item.deadline)
        except DeadlineReached:
            raise poller.timeout_error() from None
        if snapshot.status.is_terminal:
            await self._finish(item, poller)
        else:
            self._schedule(item, poller)

    async def _finish(self, item: _Item, poller: Poller) -> None:
        try:
            outcome = await poller.finish(
                self.result_type,
                item.deadline,
                index=item.index,
                key=item.key,
                possibly_duplicated=item.duplicated,
            )
        except DeadlineReached:
            raise poller.timeout_error() from None
        self.client._ended(outcome)
        if self.journal is not None:
            await self.journal.record_outcome(item.key, outcome)
        await self._deliver(item, outcome)

    async def _failed(self, item: _Item, exc: WorkflowTriggerError) -> Outcome[Any]:
        if self.journal is not None and item.execution is None and _no_run_started(exc):
            await self.journal.record_refused(item.key)
        snapshot = exc.snapshot if isinstance(exc, PollTimeout) else None
        return Outcome(
            execution=item.execution,
            status=snapshot.status if snapshot else None,
            raw_status=snapshot.raw_status if snapshot else None,
            index=item.index,
            key=item.key,
            exception=exc,
            possibly_duplicated=item.duplicated,
        )

    async def _deliver(self, item: _Item, outcome: Outcome[Any]) -> None:
        """Hand ``outcome`` to the consumer; the item keeps its batch slot until then."""
        if item in self._holding:
            self._holding.discard(item)
            self.client._slot().release_on_behalf_of(item)
        try:
            try:
                self.send.send_nowait(outcome)
            except anyio.WouldBlock:
                await self.send.send(outcome)  # a slow consumer: wait for it
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.scope.cancel()  # the consumer is gone
            return
        self._slots.release_on_behalf_of(item)
        self._in_flight -= 1
        if self.fail_fast and outcome.exception is not None:
            self.error = outcome.exception
            self.scope.cancel()
        if self._exhausted and not self._in_flight:
            self._all_done.set()

    def _replay(self, outcome: Outcome[Any], index: int, key: Any) -> Outcome[Any]:
        result = outcome.raw_result
        if self.result_type is not None and outcome.status is Status.SUCCEEDED:
            result = structure_result(self.client._converter, result, self.result_type)
        return attrs.evolve(outcome, result=result, index=index, key=key)


def _no_run_started(exc: WorkflowTriggerError) -> bool:
    """Whether a failed trigger certainly started no run (so a re-run may trigger afresh)."""
    if isinstance(exc, InvalidInputError) and exc.status_code is None:
        return True  # refused by the SDK before sending
    status = exc.status_code if isinstance(exc, APIError) else None
    return status is not None and 400 <= status < 500 and status not in (408, 429)
