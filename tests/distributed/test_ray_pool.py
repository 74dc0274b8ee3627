"""A pool of Ray workers (``Workers``, ``AsyncWorkers``) serving batch after batch.

Each test starts its pool of two workers on the session's local cluster, runs
batches against the emulator on loopback, and watches the workers' processes:
the same processes serve every batch, a dead one is replaced for the next, and
the pool's end stops them and every batch still running on them.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any

import anyio
import pytest
from _support import alive, polls_stopped, wait_gone, workers_stopped

import workflow_trigger as wt
import workflow_trigger.ray as wt_ray
from workflow_trigger.testing import Emulator, Scenario

POLL = wt.PollPolicy(interval=0.05, jitter=0.0, timeout=30.0)


def codika(emu: Emulator) -> wt.Codika:
    return wt.Codika(emu.codika_instance_id, api_key=emu.codika_api_key, base_url=emu.base_url)


def items(first: int, n: int) -> list[dict[str, int]]:
    return [{"k": k} for k in range(first, first + n)]


def by_key(p: dict[str, int]) -> int:
    return p["k"]


async def test_one_pool_serves_batch_after_batch_and_two_at_once_on_the_same_workers(
    emulator: Emulator,
) -> None:
    emulator.scenario("wf", Scenario(duration=(0.1, 0.4), result=lambda p: p))
    results: dict[int, list[tuple[Any, Any]]] = {}
    started_with: dict[int, int] = {}

    async def batch(pool: wt_ray.AsyncWorkers, first: int) -> None:
        async with pool.run_many("wf", items(first, 60), key=by_key, concurrency=60) as run:
            results[first] = [(o.key, o.result) async for o in run]
        started_with[first] = run.workers

    with anyio.fail_after(60):
        async with wt_ray.AsyncWorkers(codika(emulator), workers=2, poll=POLL) as pool:
            pids = await pool.worker_pids()
            assert len(set(pids)) == 2 and pool.workers == 2
            await batch(pool, 0)
            async with anyio.create_task_group() as both:  # two batches side by side
                both.start_soon(batch, pool, 1000)
                both.start_soon(batch, pool, 2000)
            assert await pool.worker_pids() == pids  # no worker started for a later batch
        await anyio.to_thread.run_sync(wait_gone, pids)  # leaving the pool stopped them
    for first in (0, 1000, 2000):  # each batch got its own outcomes, none of another's
        assert sorted(k for k, _ in results[first]) == list(range(first, first + 60))
        assert all(result == {"k": k} for k, result in results[first])
        assert started_with[first] == 2
    assert emulator.triggers("wf") == 180  # each item once
    with pytest.raises(wt.InvalidInputError, match="closed: make a new one"):
        pool.run_many("wf", items(0, 1))


async def test_a_worker_killed_between_batches_is_replaced_and_the_next_loses_nothing(
    emulator: Emulator,
) -> None:
    emulator.scenario("wf", Scenario(duration=(0.1, 0.4), result=lambda p: p))
    provider = wt.RunsApi(emulator.base_url, emulator.runs_api_api_key)
    with anyio.fail_after(60):
        async with wt_ray.AsyncWorkers(provider, workers=2, poll=POLL, rate_limit=1e6) as pool:
            async with pool.run_many("wf", items(0, 50), key=by_key) as first:
                assert sorted([o.key async for o in first if o.ok]) == list(range(50))
            dead, kept = await pool.worker_pids()
            os.kill(dead, signal.SIGKILL)
            await anyio.to_thread.run_sync(wait_gone, [dead])
            async with pool.run_many("wf", items(100, 200), key=by_key) as second:
                outcomes = [o async for o in second]
            after = await pool.worker_pids()
    assert second.workers_lost == 1 and first.workers_lost == 0
    assert sorted(o.key for o in outcomes) == list(range(100, 300))  # each exactly once
    assert all(o.ok and o.result == {"k": o.key} for o in outcomes)
    assert not any(o.possibly_duplicated for o in outcomes)
    runs = Counter(e.payload["k"] for e in emulator.executions)
    assert set(runs) == {*range(50), *range(100, 300)} and set(runs.values()) == {1}
    assert kept in after and dead not in after and len(after) == 2  # the dead one replaced
    assert not alive(dead)


async def test_closing_the_pool_under_a_batch_stops_it_and_tells_its_consumer(
    emulator: Emulator,
) -> None:
    emulator.scenario("slow", Scenario(duration=60.0))
    with anyio.fail_after(60):
        async with wt_ray.AsyncWorkers(codika(emulator), workers=2, poll=POLL) as pool:
            pids = await pool.worker_pids()
            async with pool.run_many("slow", items(0, 20)) as batch:
                await emulator.wait_until(lambda: emulator.poll_requests >= 40)  # all polled
                await pool.aclose()
                with pytest.raises(wt.WorkflowTriggerError, match="pool of workers was closed"):
                    async for _ in batch:
                        pass
        assert await workers_stopped(emulator, pids, POLL.interval)
    assert emulator.triggers("slow") == 20


async def test_the_blocking_pool_serves_batches_and_a_batch_left_early_stops(
    emulator: Emulator,
) -> None:
    emulator.scenario("wf", Scenario(duration=0.05, result=lambda p: p))
    emulator.scenario("slow", Scenario(duration=60.0))
    pool = wt_ray.Workers(codika(emulator), workers=2, poll=POLL)
    seen: dict[str, Any] = {}

    def script() -> None:
        with pool:
            seen["pids"] = pool.worker_pids()
            seen["first"] = sorted(o.key for o in pool.run_many("wf", items(0, 30), key=by_key))
            # the duplicate key ends first: leave the slow batch at it
            left = pool.run_many("slow", [*items(0, 1), *items(0, 20)], key=by_key)
            first = next(left)
            assert isinstance(first.exception, wt.InvalidInputError)
            left.close()  # its items stop: ten poll intervals, and none is polled
            polls = emulator.poll_requests
            time.sleep(10 * POLL.interval)
            seen["polls_after_leaving"] = emulator.poll_requests - polls
            seen["second"] = sorted(o.key for o in pool.run_many("wf", items(50, 30), key=by_key))
            seen["pids_after"] = pool.worker_pids()
            # a batch still open when the pool's ``with`` ends
            seen["open"] = pool.run_many("slow", [*items(100, 1), *items(100, 5)], key=by_key)
            assert isinstance(next(seen["open"]).exception, wt.InvalidInputError)

    with pytest.raises(wt.InvalidInputError, match="not started: use it inside `with"):
        pool.run_many("wf", items(0, 1))
    with anyio.fail_after(60):
        await anyio.to_thread.run_sync(script)
        await anyio.to_thread.run_sync(wait_gone, seen["pids"])
    assert seen["first"] == list(range(30)) and seen["second"] == list(range(50, 80))
    assert seen["pids_after"] == seen["pids"]
    assert seen["polls_after_leaving"] == 0
    with pytest.raises(wt.WorkflowTriggerError, match="pool of workers was closed"):
        next(seen["open"])
    with pytest.raises(wt.InvalidInputError, match="closed: make a new one"):
        pool.run_many("wf", items(0, 1))
    assert await polls_stopped(emulator, POLL.interval)
    assert emulator.triggers("slow") <= 20 + 5


def test_a_pool_s_and_a_batch_s_settings_are_checked_before_anything_starts() -> None:
    provider = wt.Codika("pi_test", api_key="ck_test_key")
    with pytest.raises(wt.InvalidInputError, match="address"):
        wt_ray.Workers(provider, address=4)  # type: ignore[arg-type]
    with pytest.raises(wt.InvalidInputError, match="workers"):
        wt_ray.AsyncWorkers(provider, workers=0)
    pool = wt_ray.AsyncWorkers(provider, workers=1)
    with pytest.raises(wt.InvalidInputError, match="not started"):
        pool.run_many("wf", [])
    for bad in ("", 7):
        with pytest.raises(wt.InvalidInputError, match="workflow_id"):
            wt_ray.run_many_async(provider, bad, [], workers=1)  # type: ignore[arg-type]
