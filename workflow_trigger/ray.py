"""``run_many`` over many processes and machines: Ray actors, each one ``AsyncClient``, and
one journal at the driver. Needs the ``ray`` extra (``pip install "workflow-trigger[ray]"``).

How it works. The driver (the caller's process) reads the payloads lazily,
names each item as ``Client.run_many`` does (``_items.ItemKeys``), and holds
one of ``concurrency`` slots per item until the caller took its outcome, so
the whole batch, not each worker, is bounded. Items go to ``workers`` async
actors (``_ray_worker.Worker``), which trigger, report the token and wait,
many items at once; each actor is reached by one call at a time, which
carries new items and comes back with what the actor reported. The rate limit
(``rate_limit=`` or the platform's) is split evenly between the workers.

The journal stays at the driver, with the single-process rules: an item's
intent is committed before the call that carries it leaves; a token is
committed as soon as the driver receives it (a worker reports each token
when its trigger answers, in a call that gathers events for a quarter of
the poll interval, 0.05 to 0.25 s, and waits on the run meanwhile); an
outcome is committed before it is handed over. The driver also remembers,
in memory, which worker holds which open item and its token. A worker that
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
import logging
import os
import pickle
import socket
import weakref
from collections.abc import AsyncIterable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic

import anyio
import anyio.from_thread
import ray
import ray.exceptions

from ._calls import T
from ._items import BatchCounts
from ._ray_driver import POOL_CLOSED, Driver, settings
from ._ray_pool import CLOSED, Pool, gcs_host_port, pool_settings, provider_bytes
from ._ray_worker import Work, Worker
from .client import DEFAULT
from .errors import InvalidInputError, WorkflowTriggerError
from .models import Outcome
from .providers.base import Provider

__all__ = [
    "AsyncWorkers",
    "RayBatch",
    "Workers",
    "provider_bytes",
    "run_many",
    "run_many_async",
]

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .options import ClientOptionsKwargs
_RemoteWorker = ray.remote(Worker)


class _Share:
    """A worker's share of one batch, as the driver reaches it (``_ray_pool.ShareLink``)."""

    def __init__(self, actor: Any, batch: str, run: Any) -> None:
        self.actor, self.batch, self._run = actor, batch, run

    async def exchange(self, works: list[Work]) -> list[tuple[Any, ...]] | None:
        events: bytes | None = await self.actor.exchange.remote(self.batch, works)
        return None if events is None else pickle.loads(events)  # what our worker pickled

    async def served(self) -> None:
        try:
            await self._run
        except ray.exceptions.RayTaskError as exc:  # its client could not start
            cause: BaseException = exc.as_instanceof_cause()  # type: ignore[no-untyped-call]
            raise cause from None

    def submit(self, works: list[Work]) -> None:
        self.actor.submit.remote(self.batch, works)

    def stop(self, graceful: bool) -> None:
        self.actor.stop.remote(self.batch, graceful)


class _Actor:
    """A worker actor, as the pool reaches it (``_ray_pool.WorkerLink``)."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self._served = actor.serve.remote()  # its client, open for the pool's life

    def share(
        self, batch: str, workflow_id: str, timeout: float | str | None, concurrency: int
    ) -> _Share:
        run = self.actor.run.remote(batch, workflow_id, timeout, concurrency)
        return _Share(self.actor, batch, run)

    async def pid(self) -> int:
        return int(await self.actor.pid.remote())

    def kill(self) -> None:
        ray.kill(self.actor)


#: seconds to wait for a cluster's GCS port to accept a connection before ``ray.init``, which
#: would retry an unreachable one for minutes and then exit the process
JOIN_TIMEOUT = 10.0


def _reachable(address: str) -> None:
    """Refuse a ``host:port`` address whose port does not accept a connection."""
    gcs = gcs_host_port(address)
    if gcs is None:
        return
    try:
        socket.create_connection(gcs, timeout=JOIN_TIMEOUT).close()
    except OSError as exc:
        raise WorkflowTriggerError(
            f"could not reach the Ray cluster at {address!r} ({exc.strerror or exc}): check "
            f"address= or --ray-address, and that the cluster runs (ray start --head)"
        ) from None


class _Ray:
    """The Ray cluster the pool runs on (``_ray_pool.Cluster``)."""

    died: tuple[type[BaseException], ...] = (ray.exceptions.RayActorError,)

    def join(self, address: str | None, workers: int | None) -> bool:
        if ray.is_initialized():  # this process is already connected: use that cluster
            return False
        common: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
        if address is None:
            ray.init(  # "local": a cluster of its own, even where another one runs
                address="local",
                num_cpus=workers or os.cpu_count() or 1,
                include_dashboard=False,
                **common,
            )
        else:
            _reachable(address)
            try:
                ray.init(address=address, **common)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise WorkflowTriggerError(
                    f"could not join the Ray cluster at {address!r}: {exc} (check address= or "
                    f"--ray-address; 'ray://' needs the Ray Client server on the head node)"
                ) from None
        return True

    def cpus(self) -> int:
        resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
        return max(1, int(resources.get("CPU", 1)))

    def spawn(self, spec: bytes | Callable[[], Provider], options: dict[str, Any]) -> _Actor:
        # Ray never restarts a worker nor re-runs its calls: the driver decides what is
        # sent again, from what the journal (or its memory) says was done
        actor = _RemoteWorker.options(
            max_restarts=0, max_task_retries=0, scheduling_strategy="SPREAD"
        ).remote(spec, options)
        return _Actor(actor)

    def leave(self) -> None:
        ray.shutdown()


class RayBatch(Generic[T]):
    """The async iterator ``run_many_async`` returns (also an async context manager): the
    outcomes in completion order. Leaving it early stops every worker."""

    def __init__(self, driver: Driver) -> None:
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
        return [await w.worker.pid() for w in live]

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

    async def _end_with_pool(self) -> None:
        """Its pool is closing: a batch still running stops, and its consumer gets an error
        instead of a short batch; one that has finished keeps the outcomes not yet taken."""
        driver = self._driver
        if driver.task is None or not driver.finished.is_set():
            driver.error = driver.error or WorkflowTriggerError(POOL_CLOSED)
            await self.aclose()


class AsyncWorkers:
    """A pool of Ray worker processes for many batches, for callers inside an asyncio event
    loop: ``async with AsyncWorkers(provider, workers=4) as pool:``, then ``async with
    pool.run_many(...) as batch: async for outcome in batch: ...`` as often as needed,
    one batch after another or several at once. Each worker starts once (a process, the
    SDK, one ``AsyncClient`` of ``client_options``) and serves every batch; the rate limit
    is split between the workers once, for all batches. Leaving the ``async with`` stops
    the batches still running and the workers (and the local cluster, if the pool started
    it). Starting a local cluster blocks the loop for the seconds it takes.

    ``workers``: actors, default one per CPU of the cluster. ``address``: None starts a
    local cluster; ``"auto"`` or ``"ray://host:10001"`` joins one; a process already
    connected (``ray.init()``) uses its own.
    """

    def __init__(
        self,
        provider: Provider | Callable[[], Provider],
        *,
        workers: int | None = None,
        address: str | None = None,
        **client_options: Unpack[ClientOptionsKwargs],
    ) -> None:
        checked = pool_settings(
            provider, workers=workers, address=address, client_options=dict(client_options)
        )
        self._pool = Pool(checked, _Ray())
        self._batches: weakref.WeakSet[RayBatch[Any]] = weakref.WeakSet()

    @property
    def workers(self) -> int:
        """How many workers the pool has (0 before it started)."""
        return len(self._pool.workers)

    async def worker_pids(self) -> list[int]:
        """The process ids of the pool's workers."""
        return [await w.pid() for w in self._pool.workers]

    def join(self) -> None:
        """Connect this process to the cluster (``__aenter__`` does it if need be); the
        blocking ``Workers`` calls it from the caller's thread, where Ray wants it."""
        self._pool.join()

    async def __aenter__(self) -> AsyncWorkers:
        self._pool.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the batches still running (each raises ``WorkflowTriggerError`` to its
        consumer), then the workers."""
        for batch in list(self._batches):
            await batch._end_with_pool()
        self._pool.close()

    def _refuse_if_not_open(self, block: str) -> None:
        if self._pool.closed:
            raise InvalidInputError(CLOSED)
        if not self._pool.started:
            raise InvalidInputError(
                f"the pool of workers is not started: use it inside `{block} as pool:`"
            )

    def run_many(
        self,
        workflow_id: str,
        payloads: Iterable[Any] | AsyncIterable[Any],
        *,
        concurrency: int = 100,
        key: Callable[[Any], Any] | None = None,
        journal: str | os.PathLike[str] | None = None,
        result_type: type[T] | None = None,
        timeout: float | None = DEFAULT,
        fail_fast: bool = False,
    ) -> RayBatch[T]:
        """A batch on the pool's workers: ``run_many_async``'s, less what the pool holds."""
        self._refuse_if_not_open("async with wt_ray.AsyncWorkers(...)")
        batch: RayBatch[T] = _batch(
            self._pool,
            workflow_id,
            payloads,
            owns_pool=False,
            concurrency=concurrency,
            key=key,
            journal=journal,
            result_type=result_type,
            timeout=timeout,
            fail_fast=fail_fast,
        )
        self._batches.add(batch)
        return batch


class Workers:
    """``AsyncWorkers`` for scripts: ``with Workers(provider, workers=4) as pool:``, then
    ``for outcome in pool.run_many(...)`` as often as needed, each batch a blocking
    iterator as ``run_many`` returns. The workers start once and serve every batch; leaving
    the ``with`` stops them."""

    def __init__(
        self,
        provider: Provider | Callable[[], Provider],
        *,
        workers: int | None = None,
        address: str | None = None,
        **client_options: Unpack[ClientOptionsKwargs],
    ) -> None:
        self._async = AsyncWorkers(provider, workers=workers, address=address, **client_options)
        self._exit = contextlib.ExitStack()
        self._portal: anyio.from_thread.BlockingPortal | None = None

    @property
    def workers(self) -> int:
        """How many workers the pool has (0 before it started)."""
        return self._async.workers

    def worker_pids(self) -> list[int]:
        """The process ids of the pool's workers."""
        return self._started().call(self._async.worker_pids)

    def __enter__(self) -> Workers:
        self._async.join()  # from the caller's thread: Ray sets its signal handlers there
        with contextlib.ExitStack() as stack:
            portal = stack.enter_context(anyio.from_thread.start_blocking_portal())
            portal.call(self._async.__aenter__)
            stack.callback(portal.call, self._async.aclose)
            self._exit = stack.pop_all()
        self._portal = portal
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._portal = None
        self._exit.close()

    def _started(self) -> anyio.from_thread.BlockingPortal:
        if self._portal is None:
            self._async._refuse_if_not_open("with wt_ray.Workers(...)")
        assert self._portal is not None  # open is started, for the blocking pool
        return self._portal

    def run_many(
        self,
        workflow_id: str,
        payloads: Iterable[Any] | AsyncIterable[Any],
        *,
        concurrency: int = 100,
        key: Callable[[Any], Any] | None = None,
        journal: str | os.PathLike[str] | None = None,
        result_type: type[T] | None = None,
        timeout: float | None = DEFAULT,
        fail_fast: bool = False,
    ) -> Iterator[Outcome[T]]:
        """A batch on the pool's workers: ``run_many``'s, less what the pool holds."""
        portal = self._started()
        batch: RayBatch[T] = self._async.run_many(
            workflow_id,
            payloads,
            concurrency=concurrency,
            key=key,
            journal=journal,
            result_type=result_type,
            timeout=timeout,
            fail_fast=fail_fast,
        )
        return _outcomes(portal, batch, _chunk(concurrency))


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
    **client_options: Unpack[ClientOptionsKwargs],
) -> RayBatch[T]:
    """``run_many`` for callers inside an asyncio event loop: ``async with
    run_many_async(...) as batch: async for outcome in batch: ...``. Starting a local
    cluster blocks the loop for the seconds it takes."""
    pool = Pool(
        pool_settings(
            provider, workers=workers, address=address, client_options=dict(client_options)
        ),
        _Ray(),
    )
    return _batch(
        pool,
        workflow_id,
        payloads,
        owns_pool=True,
        concurrency=concurrency,
        key=key,
        journal=journal,
        result_type=result_type,
        timeout=timeout,
        fail_fast=fail_fast,
    )


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
    **client_options: Unpack[ClientOptionsKwargs],
) -> Iterator[Outcome[T]]:
    """Run ``workflow_id`` once per payload over ``workers`` Ray actors; the ``Outcome``s
    as they end, as ``Client.run_many`` hands them (``index``, ``key``, ``exception``,
    ``possibly_duplicated``), with its lazy input and its journal.

    ``workers``: actors, default one per CPU of the cluster. ``address``: None starts a
    local cluster (and stops it afterwards); ``"auto"`` or ``"ray://host:10001"`` joins
    one; a process already connected (``ray.init()``) uses its own. ``concurrency`` and
    the rate limit hold for the whole batch. ``client_options`` are ``AsyncClient``'s.
    Leaving the loop early stops every worker. The workers start for this batch and stop
    after it; ``Workers`` keeps them for many batches.
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
    return _alone(batch, _chunk(concurrency))


def _batch(
    pool: Pool,
    workflow_id: str,
    payloads: Iterable[Any] | AsyncIterable[Any],
    *,
    owns_pool: bool,
    **batch_args: Any,
) -> RayBatch[Any]:
    """A batch on ``pool``, its arguments checked before anything starts (it closes the pool
    at its end if it ``owns_pool``)."""
    checked = settings(pool.s, workflow_id, payloads, **batch_args)
    return RayBatch(Driver(pool, checked, owns_pool=owns_pool))


def _chunk(concurrency: int) -> int:
    """How many outcomes one trip through the portal brings back at most."""
    return max(1, min(concurrency, 256))


def _alone(batch: RayBatch[T], limit: int) -> Iterator[Outcome[T]]:
    # Ray is joined from the caller's thread (the main one, in a script: Ray sets its
    # signal handlers there), not from the portal's
    batch._driver.pool.join()
    with anyio.from_thread.start_blocking_portal() as portal:
        yield from _outcomes(portal, batch, limit)


def _outcomes(
    portal: anyio.from_thread.BlockingPortal, batch: RayBatch[T], limit: int
) -> Iterator[Outcome[T]]:
    try:
        while True:
            try:
                future = portal.start_task_soon(batch.next_ready, limit)
            except RuntimeError:  # the portal stopped: the pool's ``with`` ended
                raise WorkflowTriggerError(POOL_CLOSED) from None
            try:
                outcomes = future.result()
            except StopAsyncIteration:
                return
            except BaseException:
                future.cancel()
                raise
            yield from outcomes
    finally:
        # the pool's portal is gone once its ``with`` ended, and it stopped its batches
        with contextlib.suppress(RuntimeError):
            portal.call(batch.aclose)
