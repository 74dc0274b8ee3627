"""The driver of a batch spread over worker processes (``workflow_trigger.ray``): it reads
the payloads, hands items to workers, keeps the journal and hands outcomes over. It does
not import ray: it runs on a ``_ray_pool.Pool`` of workers, which ``ray.py`` gives a
``Cluster`` (how to start workers and reach them).

How it works. Payloads are read lazily and named as ``Client.run_many`` names
them (``_items.ItemKeys``); each item holds one of ``concurrency`` slots until
the caller took its outcome, so the whole batch, not each worker, is bounded.
Each worker has one listener here, which makes one call at a time to the
worker's share of the batch (``ShareLink.exchange``): it carries the ready
items up to the worker's fair share of the open ones and comes back with
what the worker reported (tokens, outcomes), then the next call goes out. So the items a worker's
outcomes freed go back to it in its next call, and a batch makes a few
calls per second per worker, not one per chunk plus one per event poll.
Items that no call took within ``_SPILL`` (every worker's call waiting for
long runs) go in a call of their own to the least loaded worker. With a
journal, an item's intent is committed before it leaves, each token when a
worker reports it, each outcome before it is handed over. The driver also
keeps, in memory, which worker holds which open item and its token: when a
worker dies (``Cluster.died``), its items go to the others (a token: waited
on; only an intent: sent again, with the same idempotency key where the
platform honours one, else flagged ``possibly_duplicated``) and a new worker
takes its place (``Pool.replace``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections import deque
from collections.abc import AsyncIterable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from ._items import BatchCounts, ItemKeys, iterate
from ._ray_pool import Pool, PoolSettings, ShareLink, WorkerLink
from ._ray_worker import (
    DEFAULT_TIMEOUT,
    Ran,
    Work,
    unpack_execution,
    unpack_outcome,
)
from ._results import check_result_type, make_converter, replayed, structure_result
from ._slots import Slots
from .client import DEFAULT
from .errors import InvalidInputError, ResultTypeError, WorkflowTriggerError
from .journal import Journal
from .models import Outcome, Status
from .policies import check_count

if TYPE_CHECKING:
    from ._items import ItemKey

__all__ = ["POOL_CLOSED", "Driver", "Settings", "settings"]

#: what a batch's consumer is told when the pool under it closed before the batch ended
POOL_CLOSED = (
    "the pool of workers was closed while this batch ran, and its items still in flight were "
    "stopped: take a batch's outcomes inside the pool's `with`; the journal, if any, has what "
    "was done: run the batch again on a new pool to resume it"
)

_YIELD_EVERY = 64
#: seconds a listener lets the slots that its worker's outcomes freed be filled (the caller
#: takes the outcomes, the puller reads more payloads) before its next call carries them
_LINGER = 0.02
#: seconds a ready item may wait for an ``exchange`` to take it before it goes on its own
_SPILL = 1.0


@attrs.define(eq=False)
class _Worker:
    number: int
    worker: WorkerLink
    link: ShareLink  # the worker's share of this batch
    load: int = 0
    live: bool = True
    ended: bool = False  # its share ended: nothing to stop


@attrs.define(eq=False)
class _Open:
    """An item handed to a worker (or about to be), until its outcome comes back."""

    index: int
    key: Any
    payload: Any
    token: str | None = None  # to wait on: from the journal, or made from ``ran``
    ran: Ran | None = None  # the execution its trigger started, as a worker reported it
    duplicated: bool = False
    idempotency_key: str | None = None
    sent: bool = False  # its trigger was handed to a worker: it may have started a run
    worker: _Worker | None = None
    ready_at: float = 0.0  # when it last became ready to go to a worker

    def to_wait_on(self) -> str | None:
        """The token of the run to wait on, if its trigger answered: none to send."""
        if self.token is None and self.ran is not None:
            self.token = unpack_execution(self.ran).token()
        return self.token


@attrs.frozen
class Settings:
    """A batch's arguments, checked before anything starts."""

    workflow_id: str
    payloads: Iterable[Any] | AsyncIterable[Any]
    concurrency: int
    key: Callable[[Any], Any] | None
    journal: str | os.PathLike[str] | None
    result_type: type[Any] | None
    timeout: float | str | None
    fail_fast: bool


def settings(
    pool: PoolSettings,
    workflow_id: str,
    payloads: Iterable[Any] | AsyncIterable[Any],
    **kw: Any,
) -> Settings:
    """A batch's arguments checked, for a pool of ``pool``'s settings."""
    if not isinstance(workflow_id, str) or not workflow_id:
        raise InvalidInputError("workflow_id must be a non-empty string")
    if not isinstance(payloads, (Iterable, AsyncIterable)) or isinstance(
        payloads, (str, bytes, dict)
    ):
        raise InvalidInputError("payloads must be an iterable or async iterable of payloads")
    check_count("concurrency", kw["concurrency"])
    if kw["key"] is not None and not callable(kw["key"]):
        raise InvalidInputError("key must be a function of the payload, or None")
    check_result_type(pool.options.converter or make_converter(), kw["result_type"])
    timeout = kw.pop("timeout")
    return Settings(
        workflow_id=workflow_id,
        payloads=payloads,
        timeout=DEFAULT_TIMEOUT if timeout is DEFAULT else timeout,
        **kw,
    )


class Driver:
    """One batch at the driver: pulls, dispatches, listens, journals, delivers. It runs on
    ``pool``'s workers, and closes the pool at its end if it ``owns_pool``."""

    def __init__(self, pool: Pool, settings: Settings, *, owns_pool: bool) -> None:
        self.s = settings
        self.pool = pool
        self.owns_pool = owns_pool
        self.provider = pool.provider
        self.converter = pool.s.options.converter or make_converter()
        self.send, self.receive = anyio.create_memory_object_stream[Outcome[Any]](
            settings.concurrency
        )
        self.finished = anyio.Event()
        self.error: BaseException | None = None
        self.counts = BatchCounts()
        #: workers written off (died), over the batch
        self.lost = 0
        self.started_with = 0
        self.journal: Journal | None = None
        self.workers: list[_Worker] = []
        self.task: asyncio.Task[None] | None = None
        self.scope: anyio.CancelScope | None = None
        self._stopped = False
        self._batch_id = uuid.uuid4().hex[:16]
        self._slots = Slots(settings.concurrency)
        self._open: dict[int, _Open] = {}
        self._ready: deque[_Open] = deque()
        self._wake = anyio.Event()
        self._undelivered = 0
        self._exhausted = False
        self._all_done = anyio.Event()
        self._replacements = 0

    # -- the life of a batch ---------------------------------------------------------------

    def stop(self) -> None:
        self._stopped = True
        self.receive.close()
        if self.scope is not None and not self.finished.is_set():
            with contextlib.suppress(RuntimeError):  # no event loop any more
                self.scope.cancel()

    def taken(self) -> None:
        self._slots.give()

    async def drive(self) -> None:
        try:
            self.scope = anyio.CancelScope()
            if self._stopped:
                self.scope.cancel()
            self.pool.start()
            async with self.send, anyio.create_task_group() as writer:
                if self.s.journal is not None:
                    self.journal = await Journal.open(
                        self.s.journal,
                        provider=self.provider.kind,
                        workflow_id=self.s.workflow_id,
                        stopping=lambda: self.scope is not None and self.scope.cancel_called,
                    )
                    await writer.start(self.journal.run_writer)
                async with anyio.create_task_group() as listeners:
                    self.started_with = self._replacements = len(self.pool.workers)
                    for link in self.pool.workers:
                        self._attach(listeners, link)
                    with self.scope:
                        async with anyio.create_task_group() as work:
                            work.start_soon(self._pull)
                            work.start_soon(self._spill)
                            await self._all_done.wait()
                            work.cancel_scope.cancel()
                    # a journaled batch lets the triggers on the wire finish and records them
                    graceful = self.journal is not None
                    for worker in self.workers:
                        if worker.live:
                            worker.link.stop(graceful)
                writer.cancel_scope.cancel()
        except Exception as exc:
            error: BaseException = exc
            inner: tuple[BaseException, ...]
            while len(inner := getattr(error, "exceptions", ())) == 1:
                error = inner[0]
            self.error = error
        finally:
            for worker in self.workers:  # left abruptly (cancelled): end its shares too
                if worker.live and not worker.ended:
                    with contextlib.suppress(Exception):
                        worker.link.stop(False)
            if self.owns_pool:
                self.pool.close()
            self.send.close()
            self.finished.set()

    def _attach(self, listeners: anyio.abc.TaskGroup, link: WorkerLink) -> None:
        """Run a share of this batch on the worker ``link``."""
        s = self.s
        share = link.share(self._batch_id, s.workflow_id, s.timeout, s.concurrency)
        worker = _Worker(len(self.workers), link, share)
        self.workers.append(worker)
        listeners.start_soon(self._listen, worker, listeners)
        self._wake.set()

    async def _listen(self, worker: _Worker, listeners: anyio.abc.TaskGroup) -> None:
        try:
            while True:
                await anyio.sleep(_LINGER)
                events = await worker.link.exchange(await self._take(worker))
                if events is None:
                    break
                await self._handle(worker, events)
            worker.ended = True
            await worker.link.served()  # raises what stopped the worker's client, if anything
        except self.pool.cluster.died:
            self._lose(worker, listeners)

    def _lose(self, worker: _Worker, listeners: anyio.abc.TaskGroup) -> None:
        """``worker`` died: its open items go to the others, and a new worker takes its place."""
        worker.live, worker.load = False, 0
        self.lost += 1
        orphans = [item for item in self._open.values() if item.worker is worker]
        now = anyio.current_time()
        for item in orphans:
            item.worker, item.ready_at = None, now
        self._ready.extendleft(reversed(orphans))
        stopping = self.scope is None or self.scope.cancel_called
        fresh = None
        if not stopping and self._replacements > 0:
            fresh = self.pool.replace(worker.worker)
        if fresh is not None:
            self._replacements -= 1
            self._attach(listeners, fresh)
        elif not stopping and not any(w.live for w in self.workers):
            self.error = WorkflowTriggerError(
                POOL_CLOSED
                if self.pool.closed
                else f"every worker of the batch died ({self.lost} in all); the journal, if "
                "any, has what was done: run the batch again to resume it"
            )
            if self.scope is not None:
                self.scope.cancel()
        self._wake.set()

    # -- pulling and dispatching -------------------------------------------------------------

    async def _pull(self) -> None:
        journal, index, slots = self.journal, 0, self._slots
        keys = ItemKeys(self.s.key, journaled=journal is not None)
        async for payload in iterate(self.s.payloads):
            named: ItemKey = keys.name(payload, index)
            state = journal.state(named.key) if journal and not named.refused else None
            if not slots.take_nowait():  # a free slot is taken without a loop turn
                await slots.take()
            self._undelivered += 1
            if named.refused is not None:
                self.counts.refused += 1
                self._deliver(
                    Outcome(
                        execution=None,
                        status=None,
                        index=index,
                        key=named.key,
                        exception=named.refused,
                    )
                )
            elif state is not None and state.outcome is not None:
                self.counts.from_journal += 1
                self._deliver(
                    replayed(
                        self.converter,
                        state.outcome,
                        self.s.result_type,
                        index=index,
                        key=named.key,
                    )
                )
            else:
                item = _Open(index, named.key, payload)
                if state is not None and state.token is not None:
                    self.counts.resumed += 1
                    item.payload, item.token = None, state.token
                    item.duplicated = state.possibly_duplicated
                self._open[index] = item
                item.ready_at = anyio.current_time()
                self._ready.append(item)
                self._wake.set()
            index += 1
            if index % _YIELD_EVERY == 0:
                await anyio.lowlevel.checkpoint()
        self._exhausted = True
        if not self._undelivered:
            self._all_done.set()

    def _stopping(self) -> bool:
        return self.scope is None or self.scope.cancel_called or self._all_done.is_set()

    async def _take(self, worker: _Worker) -> list[Work]:
        """The ready items ``worker``'s next call carries: up to its fair share of the open
        items (ready or at a worker), so the workers stay about equally loaded."""
        live = sum(w.live for w in self.workers)
        if not self._ready or self._stopping() or not live:
            return []
        share = -(-len(self._open) // live) - worker.load
        if share <= 0:
            return []
        chunk = [self._ready.popleft() for _ in range(min(share, len(self._ready)))]
        return (await self._hand(chunk, [worker])).get(worker, [])

    async def _spill(self) -> None:
        """Send the ready items on their own once the oldest waited ``_SPILL`` for a call."""
        while True:
            if not self._ready or not any(w.live for w in self.workers):
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            wait = self._ready[0].ready_at + _SPILL - anyio.current_time()
            if wait > 0:
                await anyio.sleep(wait)
                continue
            chunk = list(self._ready)
            self._ready.clear()
            for worker, works in (await self._hand(chunk, self.workers)).items():
                worker.link.submit(works)

    async def _hand(self, chunk: list[_Open], workers: list[_Worker]) -> dict[_Worker, list[Work]]:
        """Hand the items to the least loaded of the live ``workers``, their intents durable
        first; what each is to be sent. With none alive, they go back to the ready queue."""
        await self._intend([item for item in chunk if item.to_wait_on() is None])
        live = [w for w in workers if w.live]  # again: one may have died meanwhile
        if not live:
            self._ready.extendleft(reversed(chunk))
            return {}
        works: dict[_Worker, list[Work]] = {}
        for item in chunk:
            worker = min(live, key=lambda w: w.load) if len(live) > 1 else live[0]
            worker.load += 1
            item.worker = worker
            work = (item.index, item.payload, item.to_wait_on(), item.idempotency_key)
            works.setdefault(worker, []).append(work)
        return works

    async def _intend(self, items: list[_Open]) -> None:
        """Make the items' intents durable (with a journal) before their triggers leave."""
        honoured = self.provider.honours_idempotency_key
        if self.journal is not None:
            journal = self.journal

            async def intend(item: _Open) -> None:
                state = await journal.record_intent(item.key, honoured=honoured)
                item.duplicated = state.possibly_duplicated
                item.idempotency_key = state.idempotency_key if honoured else None

            async with anyio.create_task_group() as group:
                for item in items:
                    group.start_soon(intend, item)
        else:
            for item in items:
                item.duplicated = item.duplicated or (item.sent and not honoured)
                if honoured:  # a worker's death must not start a second run
                    item.idempotency_key = f"wt-{self._batch_id}-{item.index}"
        for item in items:
            item.sent = True
            self.counts.triggered += 1
            self.counts.flagged += item.duplicated

    # -- what the workers report ---------------------------------------------------------------

    async def _handle(self, worker: _Worker, events: list[tuple[Any, ...]]) -> None:
        if self.journal is None:
            for event in events:
                await self._event(worker, event)
            return
        async with anyio.create_task_group() as group:  # their rows share transactions
            for event in events:
                group.start_soon(self._event, worker, event)

    async def _event(self, worker: _Worker, event: tuple[Any, ...]) -> None:
        item = self._open.get(event[1])
        if item is None or item.worker is not worker:
            return
        if event[0] == "u":  # never sent (a graceful stop): no run to flag on a resume
            if self.journal is not None:
                await self.journal.record_refused(item.key)
            return
        if event[0] == "t":
            item.ran, item.payload = event[2], None
            if self.journal is not None:
                await self.journal.record_token(item.key, unpack_execution(event[2]))
            return
        ended, refused = event[2:4]
        del self._open[item.index]
        worker.load -= 1
        outcome = self._outcome(item, ended)
        if self.journal is not None:
            if outcome.exception is None:
                await self.journal.record_outcome(item.key, outcome)
            elif refused:
                await self.journal.record_refused(item.key)
        self._deliver(outcome)

    def _outcome(self, item: _Open, outcome: Any) -> Outcome[Any]:
        """The worker's outcome of ``item`` (see ``_ray_worker``: packed, an ``Outcome``, or
        its ``to_dict()``), named, flagged and structured as the caller asked."""
        if isinstance(outcome, tuple):  # packed: it has no exception
            fields: dict[str, Any] = {"possibly_duplicated": item.duplicated}
            status, raw_result = outcome[1], outcome[3]
            if status == Status.SUCCEEDED.value:
                fields.update(self._structured(raw_result))
            return unpack_outcome(outcome, index=item.index, key=item.key, **fields)
        if isinstance(outcome, dict):  # its exception did not survive pickling
            outcome = Outcome.from_dict(outcome)
        assert isinstance(outcome, Outcome)
        fields = {
            "index": item.index,
            "key": item.key,
            "possibly_duplicated": item.duplicated or outcome.possibly_duplicated,
        }
        if outcome.status is Status.SUCCEEDED and not outcome.exception:
            fields.update(self._structured(outcome.raw_result))
        return attrs.evolve(outcome, **fields)

    def _structured(self, raw_result: Any) -> dict[str, Any]:
        """The fields of a succeeded outcome's result as the caller asked for it (none to
        change without a ``result_type``)."""
        result_type = self.s.result_type
        if result_type is None:
            return {}
        try:
            return {"result": structure_result(self.converter, raw_result, result_type)}
        except ResultTypeError as exc:
            return {"result": None, "exception": exc}

    def _deliver(self, outcome: Outcome[Any]) -> None:
        try:
            self.send.send_nowait(outcome)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            if self.scope is not None:
                self.scope.cancel()  # the consumer is gone
            return
        self._undelivered -= 1
        if self.s.fail_fast and outcome.exception is not None:
            self.error = outcome.exception
            if self.scope is not None:
                self.scope.cancel()
        if self._exhausted and not self._undelivered:
            self._all_done.set()
