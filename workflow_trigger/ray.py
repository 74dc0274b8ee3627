"""``run_many`` over many processes and machines: Ray actors, each one ``AsyncClient``, and
one journal at the driver. Needs the ``ray`` extra (``pip install "workflow-trigger[ray]"``).

How it works. The driver (the caller's process) reads the payloads lazily,
names each item as ``Client.run_many`` does (``_items.ItemKeys``), and holds
one of ``concurrency`` slots per item until the caller took its outcome, so
the whole batch, not each worker, is bounded. Each item is handed, in chunks,
to the least loaded of ``workers`` async actors (``_ray_worker.Worker``),
which trigger, report the token and wait, many items at once. The rate limit
(``rate_limit=`` or the platform's) is split evenly between the workers.

The journal stays at the driver, with the single-process rules: an item's
intent is committed before its chunk leaves for a worker; a token is
committed when the worker reports it, before the run is waited on; an
outcome is committed before it is handed over. The driver also remembers, in
memory, which worker holds which open item and its token. A worker that
dies (its process killed, its machine lost) is written off and replaced: its
items with a token are waited on by another worker, those without are sent
again with the same idempotency key where the platform honours one (the
Runs API: the run it started is found again), else flagged
``possibly_duplicated``. Actors are made with ``max_restarts=0`` and
``max_task_retries=0`` so that Ray itself never re-runs a worker's call
behind the driver's back; the driver decides what is sent again.

A provider holds its credentials as ``Secret``s, which refuse to be pickled;
here they are revealed into the actor's constructor argument on purpose, so
they travel inside the Ray cluster. Where that is unwelcome, pass a function
that builds the provider (``provider=wt.RunsApi.from_env``): each worker
calls it in its own environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import io
import logging
import os
import pickle
import uuid
import weakref
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import attrs
import ray
import ray.exceptions

from ._items import BatchCounts, ItemKeys
from ._ray_worker import DEFAULT_TIMEOUT, Work, Worker
from ._results import check_result_type, make_converter, structure_result
from ._secrets import Secret
from .client import DEFAULT
from .errors import InvalidInputError, ResultTypeError, WorkflowTriggerError
from .journal import Journal
from .models import Execution, Outcome, Status
from .options import ClientOptions
from .policies import check_count
from .providers.base import Provider

if TYPE_CHECKING:
    from ._items import ItemKey

__all__ = ["RayBatch", "run_many", "run_many_async"]

T = TypeVar("T")
#: items per chunk sent to a worker: one actor call each
_CHUNK = 256
_YIELD_EVERY = 64
#: seconds the dispatcher lets items gather before it sends a chunk
_LINGER = 0.02
_RemoteWorker = ray.remote(Worker)


def _reveal_secret(secret: Secret) -> tuple[Any, ...]:
    return (Secret, (secret.reveal(),))


def provider_bytes(provider: Provider) -> bytes:
    """``provider`` pickled with its secrets: for a worker's constructor, nothing else."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer)
    pickler.dispatch_table = {**copyreg.dispatch_table, Secret: _reveal_secret}
    pickler.dump(provider)
    return buffer.getvalue()


async def _iterate(payloads: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(payloads, AsyncIterable):
        async for payload in payloads:
            yield payload
    else:
        for payload in payloads:
            yield payload


@attrs.define(eq=False)
class _Worker:
    number: int
    actor: Any
    load: int = 0
    live: bool = True


@attrs.define(eq=False)
class _Open:
    """An item handed to a worker (or about to be), until its outcome comes back."""

    index: int
    key: Any
    payload: Any
    token: str | None = None
    duplicated: bool = False
    idempotency_key: str | None = None
    sent: bool = False  # its trigger was handed to a worker: it may have started a run
    worker: _Worker | None = None


@attrs.frozen
class _Settings:
    """``run_many``'s arguments, checked before anything starts."""

    provider: Provider
    spec: bytes | Callable[[], Provider]
    workflow_id: str
    payloads: Iterable[Any] | AsyncIterable[Any]
    workers: int | None
    address: str | None
    concurrency: int
    key: Callable[[Any], Any] | None
    journal: str | os.PathLike[str] | None
    result_type: type[Any] | None
    timeout: float | str | None
    fail_fast: bool
    options: ClientOptions


def _settings(
    provider: Provider | Callable[[], Provider],
    workflow_id: str,
    payloads: Iterable[Any] | AsyncIterable[Any],
    **kw: Any,
) -> _Settings:
    spec: bytes | Callable[[], Provider]
    if isinstance(provider, Provider):
        made, spec = provider, provider_bytes(provider)
    elif callable(provider):
        made, spec = provider(), provider
        if not isinstance(made, Provider):
            raise InvalidInputError(f"provider() made a {type(made).__name__}, not a provider")
    else:
        raise InvalidInputError(
            "provider must be a platform such as wt.RunsApi(...), or a function that builds one"
        )
    if not isinstance(payloads, (Iterable, AsyncIterable)) or isinstance(
        payloads, (str, bytes, dict)
    ):
        raise InvalidInputError("payloads must be an iterable or async iterable of payloads")
    check_count("concurrency", kw["concurrency"])
    if kw["workers"] is not None:
        check_count("workers", kw["workers"])
    if kw["key"] is not None and not callable(kw["key"]):
        raise InvalidInputError("key must be a function of the payload, or None")
    options = ClientOptions.build(dict(kw.pop("client_options")))
    check_result_type(options.converter or make_converter(), kw["result_type"])
    timeout = kw.pop("timeout")
    return _Settings(
        provider=made,
        spec=spec,
        workflow_id=workflow_id,
        payloads=payloads,
        options=options,
        timeout=DEFAULT_TIMEOUT if timeout is DEFAULT else timeout,
        **kw,
    )


def worker_options(settings: _Settings, options: dict[str, Any], count: int) -> dict[str, Any]:
    """Each worker's client options: the batch's rate limit split between ``count`` workers
    (the driver bounds ``concurrency`` for the whole batch)."""
    options = dict(options)
    rate = settings.options.rate_limit or settings.provider.default_rate_limit
    if rate:
        options["rate_limit"] = rate / count
    options.setdefault("max_concurrency", settings.concurrency)
    return options


class _Driver:
    """One batch at the driver: pulls, dispatches, listens, journals, delivers."""

    def __init__(self, settings: _Settings, client_options: dict[str, Any]) -> None:
        self.s = settings
        self.client_options = client_options
        self.provider = settings.provider
        self.converter = settings.options.converter or make_converter()
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
        self._slots = anyio.Semaphore(settings.concurrency)
        self._open: dict[int, _Open] = {}
        self._ready: deque[_Open] = deque()
        self._wake = anyio.Event()
        self._undelivered = 0
        self._exhausted = False
        self._all_done = anyio.Event()
        self._replacements = 0
        self._started_ray = False

    # -- the life of a batch ---------------------------------------------------------------

    def stop(self) -> None:
        self._stopped = True
        self.receive.close()
        if self.scope is not None and not self.finished.is_set():
            with contextlib.suppress(RuntimeError):  # no event loop any more
                self.scope.cancel()

    def taken(self) -> None:
        self._slots.release()

    async def drive(self) -> None:
        try:
            self.scope = anyio.CancelScope()
            if self._stopped:
                self.scope.cancel()
            self.join_cluster()
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
                    count = self.started_with = self._worker_count()
                    self._replacements = count
                    options = self._worker_options(count)
                    for _ in range(count):
                        self._spawn(listeners, options)
                    with self.scope:
                        async with anyio.create_task_group() as work:
                            work.start_soon(self._pull)
                            work.start_soon(self._dispatch, listeners, options)
                            await self._all_done.wait()
                            work.cancel_scope.cancel()
                    # a journaled batch lets the triggers on the wire finish and records them
                    graceful = self.journal is not None
                    for worker in self.workers:
                        if worker.live:
                            worker.actor.stop.remote(graceful)
                writer.cancel_scope.cancel()
        except Exception as exc:
            error: BaseException = exc
            inner: tuple[BaseException, ...]
            while len(inner := getattr(error, "exceptions", ())) == 1:
                error = inner[0]
            self.error = error
        finally:
            for worker in self.workers:
                with contextlib.suppress(Exception):
                    ray.kill(worker.actor)
            if self._started_ray:
                ray.shutdown()
            self.send.close()
            self.finished.set()

    def join_cluster(self) -> None:
        """Connect this process to Ray, starting a local cluster for ``address=None``."""
        if ray.is_initialized():  # this process is already connected: use that cluster
            return
        common: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
        if self.s.address is None:
            ray.init(  # "local": a cluster of its own, even where another one runs
                address="local",
                num_cpus=self.s.workers or os.cpu_count() or 1,
                include_dashboard=False,
                **common,
            )
        else:
            ray.init(address=self.s.address, **common)
        self._started_ray = True

    def _worker_count(self) -> int:
        if self.s.workers is not None:
            return self.s.workers
        resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
        return max(1, int(resources.get("CPU", 1)))

    def _worker_options(self, count: int) -> dict[str, Any]:
        return worker_options(self.s, self.client_options, count)

    def _spawn(self, listeners: anyio.abc.TaskGroup, options: dict[str, Any]) -> None:
        actor = _RemoteWorker.options(
            max_restarts=0, max_task_retries=0, scheduling_strategy="SPREAD"
        ).remote(self.s.spec, self.s.workflow_id, options, self.s.timeout)
        worker = _Worker(len(self.workers), actor)
        self.workers.append(worker)
        listeners.start_soon(self._listen, worker, listeners, options)
        self._wake.set()

    async def _listen(
        self, worker: _Worker, listeners: anyio.abc.TaskGroup, options: dict[str, Any]
    ) -> None:
        served = worker.actor.serve.remote()
        try:
            while (events := await worker.actor.events.remote()) is not None:
                await self._handle(worker, events)
            await served
        except ray.exceptions.RayActorError:
            self._lose(worker, listeners, options)
        except ray.exceptions.RayTaskError as exc:  # the worker could not start its client
            cause: BaseException = exc.as_instanceof_cause()  # type: ignore[no-untyped-call]
            raise cause from None

    def _lose(self, worker: _Worker, listeners: anyio.abc.TaskGroup, opts: dict[str, Any]) -> None:
        """``worker`` died: its open items go to the others, and a new worker takes its place."""
        worker.live, worker.load = False, 0
        self.lost += 1
        orphans = [item for item in self._open.values() if item.worker is worker]
        for item in orphans:
            item.worker = None
        self._ready.extendleft(reversed(orphans))
        stopping = self.scope is None or self.scope.cancel_called
        if not stopping and self._replacements > 0:
            self._replacements -= 1
            self._spawn(listeners, opts)
        elif not stopping and not any(w.live for w in self.workers):
            self.error = WorkflowTriggerError(
                f"every worker of the batch died ({self.lost} in all); the journal, if any, "
                "has what was done: run the batch again to resume it"
            )
            if self.scope is not None:
                self.scope.cancel()
        self._wake.set()

    # -- pulling and dispatching -------------------------------------------------------------

    async def _pull(self) -> None:
        journal, index, slots = self.journal, 0, self._slots
        keys = ItemKeys(self.s.key, journaled=journal is not None)
        async for payload in _iterate(self.s.payloads):
            named: ItemKey = keys.name(payload, index)
            state = journal.state(named.key) if journal and not named.refused else None
            await slots.acquire()
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
                self._deliver(self._replay(state.outcome, index, named.key))
            else:
                item = _Open(index, named.key, payload)
                if state is not None and state.token is not None:
                    self.counts.resumed += 1
                    item.payload, item.token = None, state.token
                    item.duplicated = state.possibly_duplicated
                self._open[index] = item
                self._ready.append(item)
                self._wake.set()
            index += 1
            if index % _YIELD_EVERY == 0:
                await anyio.lowlevel.checkpoint()
        self._exhausted = True
        if not self._undelivered:
            self._all_done.set()

    async def _dispatch(self, listeners: anyio.abc.TaskGroup, options: dict[str, Any]) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            # the slots of one events call free together: let the puller fill them first,
            # so that one chunk (one actor call) carries them all
            await anyio.sleep(_LINGER)
            while self._ready and any(w.live for w in self.workers):
                chunk = [self._ready.popleft() for _ in range(min(_CHUNK, len(self._ready)))]
                await self._intend([item for item in chunk if item.token is None])
                live = [w for w in self.workers if w.live]  # again: one may have died meanwhile
                if not live:
                    self._ready.extendleft(reversed(chunk))
                    break
                works: dict[_Worker, list[Work]] = {}
                for item in chunk:
                    worker = min(live, key=lambda w: w.load)
                    worker.load += 1
                    item.worker = worker
                    work = (item.index, item.payload, item.token, item.idempotency_key)
                    works.setdefault(worker, []).append(work)
                for worker, batch in works.items():
                    worker.actor.submit.remote(batch)

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
        if event[0] == "t":
            item.token, item.payload = event[2], None
            if self.journal is not None:
                await self.journal.record_token(item.key, Execution.from_token(event[2]))
            return
        data, exception, refused = event[2:5]
        del self._open[item.index]
        worker.load -= 1
        outcome = self._outcome(item, data, exception)
        if self.journal is not None:
            if outcome.exception is None:
                await self.journal.record_outcome(item.key, outcome)
            elif refused:
                await self.journal.record_refused(item.key)
        self._deliver(outcome)

    def _outcome(
        self, item: _Open, data: dict[str, Any], exception: BaseException | None
    ) -> Outcome[Any]:
        outcome = Outcome.from_dict(data)
        if exception is not None:
            outcome = attrs.evolve(outcome, exception=exception)
        fields: dict[str, Any] = {
            "index": item.index,
            "key": item.key,
            "possibly_duplicated": item.duplicated or outcome.possibly_duplicated,
        }
        result_type = self.s.result_type
        if result_type is not None and outcome.status is Status.SUCCEEDED and not outcome.exception:
            try:
                fields["result"] = structure_result(self.converter, outcome.raw_result, result_type)
            except ResultTypeError as exc:
                fields.update(result=None, exception=exc)
        return attrs.evolve(outcome, **fields)

    def _replay(self, outcome: Outcome[Any], index: int, key: Any) -> Outcome[Any]:
        result = outcome.raw_result
        if self.s.result_type is not None and outcome.status is Status.SUCCEEDED:
            result = structure_result(self.converter, result, self.s.result_type)
        return attrs.evolve(outcome, result=result, index=index, key=key)

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


class RayBatch(Generic[T]):
    """The async iterator ``run_many_async`` returns (also an async context manager): the
    outcomes in completion order. Leaving it early stops every worker."""

    def __init__(self, driver: _Driver) -> None:
        self._driver = driver
        weakref.finalize(self, driver.stop)

    @property
    def counts(self) -> BatchCounts:
        """What became of the items so far (as ``Batch.counts``)."""
        return self._driver.counts

    @property
    def workers(self) -> int:
        """How many workers the batch started with (0 before it started)."""
        return self._driver.started_with

    @property
    def workers_lost(self) -> int:
        """How many workers died during the batch (each was replaced, its items taken over)."""
        return self._driver.lost

    async def worker_pids(self) -> list[int]:
        """The process ids of the live workers (once the batch has started: inside its
        ``async with``, or after the first outcome)."""
        live = [w for w in self._driver.workers if w.live]
        return [int(await w.actor.pid.remote()) for w in live]

    def __aiter__(self) -> RayBatch[T]:
        return self

    def _start(self) -> None:
        driver = self._driver
        if driver.task is None:
            driver.task = asyncio.get_running_loop().create_task(driver.drive())

    async def __anext__(self) -> Outcome[T]:
        driver = self._driver
        self._start()
        try:
            try:
                outcome = driver.receive.receive_nowait()
            except anyio.WouldBlock:
                outcome = await driver.receive.receive()
            driver.taken()
            return outcome
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            driver.receive.close()
            await driver.finished.wait()
            if driver.error is not None:
                raise driver.error from None
            raise StopAsyncIteration from None

    async def next_ready(self, limit: int) -> list[Outcome[T]]:
        """The next outcome and up to ``limit - 1`` more already waiting."""
        items = [await self.__anext__()]
        receive = self._driver.receive
        while len(items) < limit:
            try:
                items.append(receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            self._driver.taken()
        return items

    async def __aenter__(self) -> RayBatch[T]:
        self._start()  # the workers start now, not at the first outcome asked for
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every item still in flight and wait until the workers are gone."""
        self._driver.stop()
        if self._driver.task is not None:
            await self._driver.finished.wait()


def run_many_async(
    provider: Provider | Callable[[], Provider],
    workflow_id: str,
    payloads: Iterable[Any] | AsyncIterable[Any],
    *,
    workers: int | None = None,
    address: str | None = None,
    concurrency: int = 100,
    key: Callable[[Any], Any] | None = None,
    journal: str | os.PathLike[str] | None = None,
    result_type: type[T] | None = None,
    timeout: float | None = DEFAULT,
    fail_fast: bool = False,
    **client_options: Any,
) -> RayBatch[T]:
    """``run_many`` for callers inside an asyncio event loop: ``async with
    run_many_async(...) as batch: async for outcome in batch: ...``. Starting a local
    cluster blocks the loop for the seconds it takes."""
    settings = _settings(
        provider,
        workflow_id,
        payloads,
        workers=workers,
        address=address,
        concurrency=concurrency,
        key=key,
        journal=journal,
        result_type=result_type,
        timeout=timeout,
        fail_fast=fail_fast,
        client_options=client_options,
    )
    return RayBatch(_Driver(settings, client_options))


def run_many(
    provider: Provider | Callable[[], Provider],
    workflow_id: str,
    payloads: Iterable[Any] | AsyncIterable[Any],
    *,
    workers: int | None = None,
    address: str | None = None,
    concurrency: int = 100,
    key: Callable[[Any], Any] | None = None,
    journal: str | os.PathLike[str] | None = None,
    result_type: type[T] | None = None,
    timeout: float | None = DEFAULT,
    fail_fast: bool = False,
    **client_options: Any,
) -> Iterator[Outcome[T]]:
    """Run ``workflow_id`` once per payload over ``workers`` Ray actors; the ``Outcome``s
    as they end, as ``Client.run_many`` hands them (``index``, ``key``, ``exception``,
    ``possibly_duplicated``), with its lazy input and its journal.

    ``workers``: actors, default one per CPU of the cluster. ``address``: None starts a
    local cluster (and stops it afterwards); ``"auto"`` or ``"ray://host:10001"`` joins
    one; a process already connected (``ray.init()``) uses its own. ``concurrency`` and
    the rate limit hold for the whole batch. ``client_options`` are ``AsyncClient``'s.
    Leaving the loop early stops every worker.
    """
    batch: RayBatch[T] = run_many_async(
        provider,
        workflow_id,
        payloads,
        workers=workers,
        address=address,
        concurrency=concurrency,
        key=key,
        journal=journal,
        result_type=result_type,
        timeout=timeout,
        fail_fast=fail_fast,
        **client_options,
    )
    return _blocking(batch, max(1, min(concurrency, 256)))


def _blocking(batch: RayBatch[T], limit: int) -> Iterator[Outcome[T]]:
    # Ray is joined from the caller's thread (the main one, in a script: Ray sets its
    # signal handlers there), not from the portal's
    batch._driver.join_cluster()
    with anyio.from_thread.start_blocking_portal() as portal:
        try:
            while True:
                future = portal.start_task_soon(batch.next_ready, limit)
                try:
                    outcomes = future.result()
                except StopAsyncIteration:
                    return
                except BaseException:
                    future.cancel()
                    raise
                yield from outcomes
        finally:
            portal.call(batch.aclose)
