"""A worker process of a pool (``workflow_trigger.ray``): one ``AsyncClient`` for the pool's
life, and many items of each batch in flight. It does not import ray; ``ray.py`` makes
``Worker`` an actor.

How it works. ``Worker.serve``, called once, holds the client until the pool
closes: its connections and its scheduler serve every batch that runs on the
pool, so a second batch starts no process and opens no client. Each batch
has a ``Share`` on each worker: its ``serve``, running for the whole batch,
holds one batch of the client (``client.ledgered_batch``: ``run_many``'s
engine, its items jobs on the client's scheduler, no task per item) whose
payloads are the items the driver hands over, and whose ledger (in place of
a journal file) is the share: an item with a token is waited on, not
triggered; an item's trigger carries the idempotency key the driver chose;
its token is reported as soon as the trigger answers, and the run is waited
on meanwhile (the driver records the token when the next call brings it
back). The driver reaches the worker through one call at a time,
``exchange``: it carries new items (each a payload to trigger, with the
idempotency key the driver chose and its intent already durable in the
driver's journal, or a token to wait on) and returns, pickled in one piece,
what happened since the last call, once something did (a long poll that
lingers ``linger`` after the first event, a quarter of the poll interval, so
that one call carries many):

* ``("t", item_id, execution)``: the trigger answered (``pack_execution``);
* ``("o", item_id, outcome, refused)``: the item ended: its ``Outcome`` as
  the worker's client made it (the raw result: the driver structures it),
  as a tuple of plain values (``pack_outcome``) when it has no exception;
  else the ``Outcome`` itself or, when its exception does not survive
  pickling, the outcome's ``to_dict()`` (``Outcome.from_dict`` at the driver
  makes the exception the SDK's class of that name); and whether the failed
  trigger certainly started no run;
* ``("u", item_id)``: after a graceful stop, an item whose trigger was never
  sent (the driver forgets its intent, so a resume triggers it afresh
  instead of flagging it ``possibly_duplicated``).

Plain tuples pickle about seven times cheaper than attrs classes, whose
state is read and set in Python, and a token costs more to make than its
fields to send.

``submit`` hands over items without waiting for events: the driver uses it
only for items that no ``exchange`` took in time. ``stop(graceful=True)``
ends every item at once except the triggers on the wire, which are let
finish and report their token (a journaled batch that is left early records
them, as in one process); ``stop(graceful=False)`` ends them all at once.
Then ``serve`` returns and ``exchange`` hands over the rest and then ``None``.
A worker reaches each of these by the batch's id (``Worker.run``, ``exchange``,
``submit``, ``stop``).
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, cast

import anyio

from ._batch import Batch
from ._engine import no_run_started
from .client import DEFAULT, AsyncClient, ledgered_batch
from .errors import WorkflowTriggerError
from .journal import ItemState
from .models import ErrorInfo, Execution, Outcome, Status
from .policies import PollPolicy
from .providers.base import Provider

__all__ = [
    "Ended",
    "Ran",
    "Share",
    "Work",
    "Worker",
    "linger",
    "pack_execution",
    "pack_outcome",
    "unpack_execution",
    "unpack_outcome",
]

#: one item: (item id, payload, token or None, idempotency key or None)
Work = tuple[int, Any, "str | None", "str | None"]
#: what ``timeout=`` left out is called on the wire (``DEFAULT`` is not one object across
#: processes)
DEFAULT_TIMEOUT = "default"
#: how long ``events`` waits for more events to join the first (``linger``), and how many
#: are enough: an actor call costs about 5 ms of CPU in all (the driver, the worker and
#: Ray's threads in both), an event a few µs
MIN_LINGER, MAX_LINGER = 0.05, 0.25
MAX_EVENTS = 5_000

#: an execution on the wire: provider, workflow id, execution id, extras, triggered at
Ran = tuple[str, str, str, dict[str, str], datetime]
#: an outcome without an exception on the wire (``pack_outcome``)
Ended = tuple[
    "Ran | None", "str | None", Any, Any, "ErrorInfo | None", Any, Any, int, Any, Any, "str | None"
]


def pack_execution(execution: Execution) -> Ran:
    e = execution
    return (e.provider, e.workflow_id, e.execution_id, dict(e.extras), e.triggered_at)


def unpack_execution(ran: Ran) -> Execution:
    provider, workflow_id, execution_id, extras, triggered_at = ran
    return Execution(
        provider=provider,
        workflow_id=workflow_id,
        execution_id=execution_id,
        extras=extras,
        triggered_at=triggered_at,
    )


def pack_outcome(o: Outcome[Any]) -> Ended:
    """The fields of ``o`` (which has no exception; ``index``, ``key`` and
    ``possibly_duplicated`` are the driver's), as plain values."""
    return (
        pack_execution(o.execution) if o.execution is not None else None,
        o.status.value if o.status is not None else None,
        o.result,
        o.raw_result,
        o.error,
        o.artifacts,
        o.designated_output,
        o.polls,
        o.started_at,
        o.finished_at,
        o.raw_status,
    )


def unpack_outcome(ended: Ended, **fields: Any) -> Outcome[Any]:
    """The ``Outcome`` ``pack_outcome`` sent, with the driver's ``fields`` (``index``,
    ``key``, ``possibly_duplicated``; ``result`` and ``exception`` where it structured it)."""
    ran, status, result, raw_result, error, artifacts, designated, polls, started, finished, raw = (
        ended
    )
    return Outcome(
        execution=unpack_execution(ran) if ran is not None else None,
        status=Status(status) if status is not None else None,
        result=fields.pop("result", result),
        error=error,
        artifacts=artifacts,
        designated_output=designated,
        polls=polls,
        started_at=started,
        finished_at=finished,
        raw_status=raw,
        raw_result=raw_result,
        **fields,
    )


def linger(poll: PollPolicy) -> float:
    """Seconds an ``events`` call waits for more events after the first: a quarter of the
    poll interval (a poll already finds a run's end half an interval late, on average),
    between ``MIN_LINGER`` and ``MAX_LINGER``. At a 1 s interval, 0.25 s rather than 0.1 s
    halved the calls of a 10,000-item batch and cut the driver's CPU by a third
    (``benchmarks/ray_batch.py``)."""
    return min(MAX_LINGER, max(MIN_LINGER, poll.interval / 4))


def _portable(exc: BaseException) -> bool:
    """Whether ``exc`` comes back from pickling as itself."""
    try:
        copy = pickle.loads(pickle.dumps(exc))
    except Exception:
        return False
    return type(copy) is type(exc) and str(copy) == str(exc)


class Share:
    """A worker's share of one batch (see the module's docstring). It is also the ledger of
    its batch on the worker's client (``_engine.Ledger``)."""

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[list[Work]](math.inf)
        self._events: list[tuple[Any, ...]] = []
        self._wake = anyio.Event()
        #: seconds ``events`` lingers: ``linger`` of the client's poll schedule, once served
        self.linger = MAX_LINGER
        #: the open items, by their position in this share's batch (its ledger's keys)
        self._works: dict[int, Work] = {}
        #: the ids of the items to trigger whose trigger has not been sent
        self._unsent: set[int] = set()
        self._batch: Batch[Any] | None = None
        self._scope: anyio.CancelScope | None = None  # serve's: cancelled by an abrupt stop
        self._stopping = False
        self._abrupt = False
        self._served = False

    async def serve(
        self,
        client: AsyncClient,
        workflow_id: str,
        timeout: float | str | None,
        concurrency: int,
    ) -> None:
        """Run items on ``client`` as they are submitted, until ``stop``; call it once."""
        wait: float | None = (
            DEFAULT if timeout == DEFAULT_TIMEOUT else cast("float | None", timeout)
        )
        self.linger = linger(client.poll_policy)
        try:
            with anyio.CancelScope() as self._scope:
                if self._abrupt:  # stopped before it began
                    self._scope.cancel()
                batch = self._batch = ledgered_batch(
                    client,
                    workflow_id,
                    self._payloads(),
                    concurrency=concurrency,
                    timeout=wait,
                    ledger=self,
                )
                async with batch:
                    if self._stopping:  # stopped before it began
                        await batch.aclose()
                    async for outcome in batch:
                        self._ended(outcome)
                if not self._abrupt:  # stopped, or done (then none is left)
                    for item_id in self._unsent:
                        self._emit(("u", item_id))
        finally:
            self.finish()

    def finish(self) -> None:
        """No more events will come: ``events`` hands over the rest, then None."""
        self._served = True
        self._wake.set()

    async def _payloads(self) -> AsyncIterator[Any]:
        position = 0
        async with self._receive:
            async for works in self._receive:
                for work in works:
                    self._works[position] = work
                    position += 1
                    yield work[1]

    async def submit(self, works: list[Work]) -> None:
        if not self._stopping:  # a chunk that crossed the stop: the driver no longer waits for it
            self._unsent.update(work[0] for work in works if work[2] is None)
            self._send.send_nowait(works)

    async def exchange(self, works: list[Work]) -> bytes | None:
        """``submit`` the items, then ``events``, pickled at once (plain ``pickle`` is cheaper
        than Ray's serializer for many small objects); None once all is over."""
        await self.submit(works)
        events = await self.events()
        return None if events is None else pickle.dumps(events, pickle.HIGHEST_PROTOCOL)

    async def stop(self, graceful: bool) -> None:
        """End every item now; with ``graceful``, triggers on the wire finish first."""
        self._stopping = True
        self._send.close()
        if not graceful:
            self._abrupt = True
            if self._scope is not None:
                self._scope.cancel()
        elif self._batch is not None:
            await self._batch.aclose()

    async def events(self) -> list[tuple[Any, ...]] | None:
        """What happened since the last call, once something did; None once all is over.

        After the first event it lingers a moment (``self.linger``) for more to join it: one
        actor call costs far more CPU than one event. The run is waited on meanwhile: a
        token recorded a quarter of a poll interval later (0.25 s at most) only matters if
        the driver dies in between (its trigger is then sent again on resume, as for a run
        without a token); an outcome reaches the caller as much later. While it lingers it
        sleeps: an event wakes it only when it is the first or the ``MAX_EVENTS``-th (or
        ``serve`` ends), not one wake-up of this task per event."""
        while not self._events:
            if self._served:
                return None
            await self._wake.wait()
            self._wake = anyio.Event()
        self._wake = anyio.Event()  # set again only by the MAX_EVENTS-th event or the end
        if not self._served and len(self._events) < MAX_EVENTS:
            with anyio.move_on_after(self.linger):
                await self._wake.wait()
        events, self._events = self._events, []
        return events

    def _emit(self, event: tuple[Any, ...]) -> None:
        events = self._events
        events.append(event)
        if len(events) == 1 or len(events) >= MAX_EVENTS:
            self._wake.set()

    def _ended(self, outcome: Outcome[Any]) -> None:
        assert outcome.index is not None  # a batch's outcomes always have one
        item_id = self._works.pop(outcome.index)[0]
        self._unsent.discard(item_id)
        exc = outcome.exception
        if exc is None:
            self._emit(("o", item_id, pack_outcome(outcome), False))
            return
        refused = (
            outcome.execution is None
            and isinstance(exc, WorkflowTriggerError)
            and no_run_started(exc)
        )
        # an exception that does not survive pickling goes as ``to_dict``'s form: the
        # driver's ``from_dict`` makes it the SDK's class of that name
        self._emit(("o", item_id, outcome if _portable(exc) else outcome.to_dict(), refused))

    # -- the ledger of the client's batch (``_engine.Ledger``): the driver keeps the journal

    def state(self, key: Any) -> ItemState | None:
        _, _, token, idempotency_key = self._works[key]
        if token is None:
            return None  # trigger it
        return ItemState(idempotency_key=idempotency_key or "", token=token)

    async def record_intent(self, key: Any, *, honoured: bool) -> ItemState:
        # the driver made it durable before handing the item over, and chose the key
        item_id, _, _, idempotency_key = self._works[key]
        self._unsent.discard(item_id)  # sent from now on, as far as anyone can tell
        return ItemState(idempotency_key=idempotency_key or "")

    async def record_token(self, key: Any, execution: Execution) -> None:
        self._emit(("t", self._works[key][0], pack_execution(execution)))

    async def record_outcome(self, key: Any, outcome: Outcome[Any]) -> None:
        pass  # reported when the batch hands it over (``_ended``)

    async def record_refused(self, key: Any) -> None:
        pass  # reported with the outcome


class Worker:
    """One worker process of a pool (``ray.py`` runs it as an async actor): one ``AsyncClient``
    for as long as the pool lives, and a ``Share`` of each batch that runs on it.

    Each batch reaches its share by the batch's id: ``run`` (the share's life), ``exchange``,
    ``submit`` and ``stop``. Ray does not keep the order of an async actor's calls, so
    whichever comes first makes the share; once ``exchange`` said None the share is gone,
    and a call that arrives later for it does nothing."""

    def __init__(self, provider: bytes | Callable[[], Provider], options: dict[str, Any]) -> None:
        self._provider = provider
        self._options = options
        self._client: AsyncClient | None = None
        self._error: Exception | None = None
        self._ready = anyio.Event()
        self._closed = anyio.Event()
        self._shares: dict[str, Share] = {}
        self._gone: set[str] = set()

    async def pid(self) -> int:
        return os.getpid()

    def _make_provider(self) -> Provider:
        provider = self._provider
        made: object = pickle.loads(provider) if isinstance(provider, bytes) else provider()
        if not isinstance(made, Provider):
            raise TypeError(f"the provider factory made a {type(made).__name__}, not a Provider")
        return made

    async def serve(self) -> None:
        """Hold the client until ``close``; call it once."""
        try:
            async with AsyncClient(self._make_provider(), **self._options) as client:
                self._client = client
                self._ready.set()
                await self._closed.wait()
        except Exception as exc:
            self._error = exc
            raise
        finally:
            self._client = None
            self._ready.set()

    async def close(self) -> None:
        self._closed.set()

    def _share(self, batch: str) -> Share | None:
        if batch in self._gone:
            return None
        share = self._shares.get(batch)
        if share is None:
            share = self._shares[batch] = Share()
        return share

    async def run(
        self, batch: str, workflow_id: str, timeout: float | str | None, concurrency: int
    ) -> None:
        """Run this worker's share of ``batch`` until it is stopped; raise what kept the
        worker's client from starting, if anything."""
        share = self._share(batch)
        if share is None:
            return
        try:
            await self._ready.wait()
            if self._client is None:
                raise self._error or WorkflowTriggerError("the worker's client is closed")
            await share.serve(self._client, workflow_id, timeout, concurrency)
        finally:
            share.finish()

    async def exchange(self, batch: str, works: list[Work]) -> bytes | None:
        """``Share.exchange`` of ``batch``'s share."""
        share = self._share(batch)
        events = None if share is None else await share.exchange(works)
        if events is None:
            self._shares.pop(batch, None)
            self._gone.add(batch)
        return events

    async def submit(self, batch: str, works: list[Work]) -> None:
        if (share := self._share(batch)) is not None:
            await share.submit(works)

    async def stop(self, batch: str, graceful: bool) -> None:
        if (share := self._share(batch)) is not None:
            await share.stop(graceful)
