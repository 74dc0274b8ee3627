"""How many calls a batch makes between the driver and its workers, without Ray.

An actor call costs about a millisecond of CPU at each end, far more than
the events it carries, so the driver reaches each worker through one call at
a time that both carries new items and brings back what happened. Here the
workers are ``_ray_worker.Worker``s in this process and event loop, behind a
``Cluster`` that counts the calls; the emulator runs on loopback.
"""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

import workflow_trigger as wt
from workflow_trigger import _ray_worker
from workflow_trigger._ray_driver import Driver, settings
from workflow_trigger._ray_pool import Pool, WorkerLink, pool_settings
from workflow_trigger._ray_worker import Work, Worker
from workflow_trigger.providers.base import Provider
from workflow_trigger.ray import RayBatch
from workflow_trigger.testing import Emulator, Fault, Scenario

POLL = wt.PollPolicy(interval=0.1, jitter=0.0, timeout=60.0)


class Link:
    """A worker's share of a batch, in this process, counting the calls (a ``ShareLink``)."""

    def __init__(self, worker: LocalWorker, batch: str, *run: Any) -> None:
        self.worker, self.batch = worker, batch
        self.exchanges = self.submits = 0
        self.carried = 0  # items the exchanges carried
        self._done = anyio.Event()
        self._error: BaseException | None = None
        worker.group.start_soon(self._run, *run)

    async def _run(self, *run: Any) -> None:
        try:
            await self.worker.worker.run(self.batch, *run)
        except Exception as exc:
            self._error = exc
        finally:
            self._done.set()

    async def exchange(self, works: list[Work]) -> list[tuple[Any, ...]] | None:
        self.exchanges += 1
        self.carried += len(works)
        events = await self.worker.worker.exchange(self.batch, works)
        return None if events is None else pickle.loads(events)

    async def served(self) -> None:
        await self._done.wait()
        if self._error is not None:
            raise self._error

    def submit(self, works: list[Work]) -> None:
        self.submits += 1
        self.worker.group.start_soon(self.worker.worker.submit, self.batch, works)

    def stop(self, graceful: bool) -> None:
        self.worker.group.start_soon(self.worker.worker.stop, self.batch, graceful)


class LocalWorker:
    """A ``_ray_worker.Worker`` in this event loop (a ``WorkerLink``)."""

    def __init__(self, spec: bytes | Callable[[], Provider], options: dict[str, Any], group: Any):
        self.worker, self.group = Worker(spec, options), group
        self.shares: list[Link] = []
        group.start_soon(self.worker.serve)

    def share(
        self, batch: str, workflow_id: str, timeout: float | str | None, concurrency: int
    ) -> Link:
        link = Link(self, batch, workflow_id, timeout, concurrency)
        self.shares.append(link)
        return link

    async def pid(self) -> int:
        return await self.worker.pid()

    def kill(self) -> None:
        self.group.start_soon(self.worker.close)


class Local:
    """A ``Cluster`` whose workers run in this event loop."""

    died: tuple[type[BaseException], ...] = ()

    def __init__(self, group: anyio.abc.TaskGroup) -> None:
        self.group = group
        self.workers: list[LocalWorker] = []

    @property
    def links(self) -> list[Link]:
        """Every share of every batch, in the order they were made."""
        return [link for worker in self.workers for link in worker.shares]

    def join(self, address: str | None, workers: int | None) -> bool:
        return False

    def cpus(self) -> int:
        return 2

    def spawn(self, spec: bytes | Callable[[], Provider], options: dict[str, Any]) -> WorkerLink:
        worker = LocalWorker(spec, options, self.group)
        self.workers.append(worker)
        return worker

    def leave(self) -> None:
        pass


@pytest.fixture
async def cluster(anyio_backend: object) -> AsyncIterator[Local]:
    del anyio_backend
    async with anyio.create_task_group() as group:
        local = Local(group)
        yield local
        for worker in local.workers:
            await worker.worker.close()


def batch(
    cluster: Local,
    provider: wt.Provider,
    workflow_id: str,
    items: Any,
    client_options: dict[str, Any] | None = None,
    **kw: Any,
) -> Any:
    options = {"poll": POLL, "rate_limit": 1e6, **(client_options or {})}
    pool = Pool(
        pool_settings(provider, workers=kw.pop("workers", 2), address=None, client_options=options),
        cluster,
    )
    kw = {
        "concurrency": 100,
        "key": None,
        "journal": None,
        "result_type": None,
        "timeout": None,
        "fail_fast": False,
        **kw,
    }
    checked = settings(pool.s, workflow_id, items, **kw)
    return RayBatch(Driver(pool, checked, owns_pool=True))


@pytest.fixture
async def emulator(anyio_backend: object) -> AsyncIterator[Emulator]:
    del anyio_backend
    async with Emulator(seed=0, runs_api_rate_limit=10**6, runs_api_read_rate_limit=10**6) as emu:
        yield emu


def codika(emu: Emulator) -> wt.Codika:
    return wt.Codika(emu.codika_instance_id, api_key=emu.codika_api_key, base_url=emu.base_url)


async def test_a_batch_makes_a_few_calls_per_second_per_worker_not_one_per_chunk_or_event(
    cluster: Local, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=(0.2, 0.6), result=lambda p: p))
    n = 2_000
    started = anyio.current_time()
    with anyio.fail_after(60):
        async with batch(
            cluster, codika(emulator), "wf", ({"k": i} for i in range(n)), concurrency=400
        ) as run:
            outcomes = [o async for o in run]
    wall = anyio.current_time() - started
    assert sorted(o.result["k"] for o in outcomes if o.ok) == list(range(n))
    links = cluster.links
    calls = sum(link.exchanges + link.submits for link in links)
    # each call lingers for events, so calls grow with time, not with items: about one per
    # linger per worker (the outcomes of 2,000 items and 2,000 tokens: 4,000 events)
    assert calls <= len(links) * (wall / _ray_worker.linger(POLL) + 4), (calls, wall)
    # a submit per chunk and an events poll per ~70 ms per worker: about 280 here, by
    # the old code's rates
    assert calls <= n / 10, calls
    assert sum(link.carried for link in links) == n  # the items went with the event polls
    assert all(link.carried >= n / 4 for link in links)  # to both workers


async def test_an_item_no_call_takes_in_time_goes_on_its_own(
    cluster: Local, emulator: Emulator
) -> None:
    emulator.scenario("slow", Scenario(duration=60.0))
    # item 1 repeats item 0's key: refused at the driver, its outcome ready at once; it
    # holds the second slot until taken, so item 2 is read only when it is
    items = [{"k": 0}, {"k": 0}, {"k": 1}]
    with anyio.fail_after(30):  # far below the slow run's 60 s
        async with batch(
            cluster,
            codika(emulator),
            "slow",
            items,
            workers=1,
            concurrency=2,
            key=lambda p: p["k"],
        ) as run:
            # the first call carried item 0, came back with its token; the second waits
            # for events that the 60 s run will not give for a minute (the condition is
            # checked at each request the emulator answers: item 0 is polled every 0.1 s)
            await emulator.wait_until(
                lambda: bool(cluster.links) and cluster.links[0].exchanges >= 2
            )
            [link] = cluster.links
            refused = await run.__anext__()  # the slot is free: item 2 is read now
            assert isinstance(refused.exception, wt.InvalidInputError)
            await emulator.wait_for_triggers("slow", 2)
            assert link.submits == 1 and link.carried == 1
            assert run.counts.triggered == 2


async def test_a_journaled_batch_left_early_lets_its_workers_triggers_on_the_wire_finish(
    cluster: Local, emulator: Emulator, tmp_path: Path
) -> None:
    """As in one process (``test_journal_stop.py``): the workers' triggers on the wire get
    their answers, the driver records their tokens, and a resume triggers none of them again
    (on Codika, where a second trigger would start a second run)."""
    emulator.scenario("wf", Scenario(duration=0.05, result={"ok": True}))
    emulator.add_fault(Fault.slow(count=1000, delay=0.3, on="trigger"))
    journal, keyed = tmp_path / "batch.sqlite", [{"k": i} for i in range(40)]
    # five connections per worker's client, so a few triggers at a time each
    tight = {"max_connections": 5}
    with anyio.fail_after(30):
        async with batch(
            cluster, codika(emulator), "wf", keyed, tight, key=lambda p: p["k"], journal=journal
        ):
            await emulator.wait_until(lambda: emulator.trigger_requests >= 4)
        # left early: the batch has returned once the triggers it had sent were answered
        on_the_wire = emulator.trigger_requests
        assert 4 <= on_the_wire < 40
        assert len(emulator.executions) == on_the_wire
        emulator.clear_faults()
        async with batch(
            cluster, codika(emulator), "wf", keyed, key=lambda p: p["k"], journal=journal
        ) as again:
            outcomes = [o async for o in again]
    assert sorted(o.key for o in outcomes) == list(range(40))
    flagged = [o for o in outcomes if not o.ok or o.possibly_duplicated]
    assert not flagged, flagged[:3]  # none was sent twice, and none is said to be
    # each trigger sent before the stop has its token (or outcome) in the journal
    assert again.counts.resumed + again.counts.from_journal == on_the_wire
    assert again.counts.triggered == 40 - on_the_wire
    runs = Counter(e.payload["k"] for e in emulator.executions)
    assert runs == Counter(range(40))  # every item triggered exactly once


async def test_a_platform_whose_reply_is_the_result_runs_over_workers_too(
    cluster: Local, anyio_backend: object
) -> None:
    """An AwaitStep function has no record to poll: each item is one POST whose reply is
    its result, over the workers as in one process."""
    del anyio_backend
    async with Emulator(seed=0, awaitstep_functions=["double"]) as emu:
        emu.scenario("double", Scenario(result=lambda body: {"n": body["n"] * 2}))
        function = wt.AwaitStepFunction(emu.awaitstep_function_url("double"))
        items = [{"n": i} for i in range(30)]
        with anyio.fail_after(30):
            async with batch(cluster, function, "double", items) as run:
                outcomes = [o async for o in run]
        assert sorted((o.index, o.result["n"]) for o in outcomes) == [(i, 2 * i) for i in range(30)]
        assert all(o.ok and o.execution is not None for o in outcomes)
        assert emu.triggers("double") == 30  # one POST each, no poll


async def test_a_pool_runs_batch_after_batch_on_the_same_workers(
    cluster: Local, emulator: Emulator
) -> None:
    """A pool's workers start once: a second batch opens no worker and no client, each
    batch gets a share of every worker, and closing the pool stops its workers."""
    emulator.scenario("wf", Scenario(duration=0.05, result=lambda p: p))
    options = {"poll": POLL, "rate_limit": 1e6}
    pool = Pool(
        pool_settings(codika(emulator), workers=2, address=None, client_options=options),
        cluster,
    )
    pool.start()
    results = []
    with anyio.fail_after(30):
        for round_ in range(3):
            items = [{"k": round_ * 100 + i} for i in range(50)]
            checked = settings(
                pool.s,
                "wf",
                items,
                concurrency=20,
                key=None,
                journal=None,
                result_type=None,
                timeout=None,
                fail_fast=False,
            )
            async with RayBatch(Driver(pool, checked, owns_pool=False)) as run:
                results.append(sorted([o.result["k"] async for o in run if o.ok]))
    assert results == [[r * 100 + i for i in range(50)] for r in range(3)]
    assert len(cluster.workers) == 2  # no worker started for the second or third batch
    assert [len(w.shares) for w in cluster.workers] == [3, 3]
    assert not pool.closed and len(pool.workers) == 2
    pool.close()
    assert pool.closed and not pool.workers
    with pytest.raises(wt.WorkflowTriggerError, match="closed"):
        pool.start()
