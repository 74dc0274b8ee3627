"""workflow_trigger.ray.run_many: Client.run_many's contract over Ray workers.

Each test runs its batch on the session's local cluster (2 CPUs) against the
emulator on loopback, and would fail if the feature it names broke.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import anyio
import attrs
import pytest
from _support import polls_stopped, workers_stopped

import workflow_trigger as wt
import workflow_trigger.ray as wt_ray
from workflow_trigger.testing import Emulator, Scenario

POLL = wt.PollPolicy(interval=0.05, jitter=0.0, timeout=30.0)


def codika(emu: Emulator) -> wt.Codika:
    return wt.Codika(emu.codika_instance_id, api_key=emu.codika_api_key, base_url=emu.base_url)


@attrs.frozen
class Echo:
    k: int


def payloads(n: int) -> list[dict[str, Any]]:
    return [{"k": i} for i in range(n)]


async def test_outcomes_and_keys_are_those_of_the_single_process_run_many(
    emulator: Emulator,
) -> None:
    emulator.scenario("wf", Scenario(duration=(0.05, 0.3), result=lambda p: p))
    emulator.scenario("bad", Scenario(duration=0.05, status="failed"))
    items = [*payloads(150), {"k": 3}]  # the last repeats a key: refused, as in one process
    key = lambda p: p["k"]  # noqa: E731

    async with wt.AsyncClient(codika(emulator), poll=POLL) as client:
        alone = [o async for o in client.run_many("wf", items, key=key, result_type=Echo)]
    async with wt_ray.run_many_async(
        codika(emulator), "wf", items, workers=2, key=key, result_type=Echo, poll=POLL
    ) as batch:
        spread = [o async for o in batch]

    def view(o: wt.Outcome[Any]) -> tuple[Any, ...]:
        return (o.index, o.key, o.status, o.result, type(o.exception), o.possibly_duplicated)

    assert sorted(map(view, spread)) == sorted(map(view, alone))
    assert spread[0].result == Echo(spread[0].key)  # structured at the driver
    refused = [o for o in spread if o.exception is not None]
    assert [(o.index, type(o.exception)) for o in refused] == [(150, wt.InvalidInputError)]
    assert batch.counts.triggered == 150 and batch.counts.refused == 1
    assert emulator.triggers("wf") == 2 * 150  # once per run_many, each key once

    async with wt_ray.run_many_async(codika(emulator), "bad", payloads(5), workers=2) as failed:
        ends = [o async for o in failed]
    assert {o.status for o in ends} == {wt.Status.FAILED} and not any(o.ok for o in ends)


async def test_input_is_read_lazily_and_a_slow_consumer_holds_it_back(emulator: Emulator) -> None:
    emulator.scenario("wf", Scenario(duration=0.05, result=lambda p: p))
    concurrency, pulled = 8, 0

    def endless() -> Iterator[dict[str, int]]:
        nonlocal pulled
        while True:
            pulled += 1
            yield {"k": pulled}

    taken = 0
    with anyio.fail_after(60):
        async with wt_ray.run_many_async(
            codika(emulator), "wf", endless(), workers=2, concurrency=concurrency, poll=POLL
        ) as batch:
            async for outcome in batch:
                assert outcome.ok
                taken += 1
                # every item pulled holds a slot until its outcome is taken: one more at most
                assert pulled - taken <= concurrency + 1
                if taken == 40:
                    # nothing is taken now: the batch fills its slots, then stops pulling
                    await emulator.wait_until(lambda: emulator.triggers("wf") >= 40 + concurrency)
                    assert pulled - taken <= concurrency + 1
                if taken == 60:
                    break
    assert emulator.triggers("wf") <= 60 + concurrency


async def test_leaving_early_stops_every_worker_and_its_polling(emulator: Emulator) -> None:
    emulator.scenario("slow", Scenario(duration=60.0))
    with anyio.fail_after(60):
        async with wt_ray.run_many_async(
            codika(emulator), "slow", payloads(40), workers=2, concurrency=40, poll=POLL
        ) as batch:
            await emulator.wait_until(lambda: emulator.poll_requests >= 80)  # all are polled
            pids = await batch.worker_pids()
            assert len(pids) == 2
        # leaving the block stopped the batch: the workers' processes are gone
        assert await workers_stopped(emulator, pids, POLL.interval)
    assert emulator.triggers("slow") == 40


async def test_the_rate_limit_holds_for_the_whole_batch_not_per_worker(
    emulator: Emulator,
) -> None:
    emulator.scenario("wf", Scenario(duration=0.3, result=lambda p: p))
    rate, window = 20.0, 2.0
    provider = wt.RunsApi(emulator.base_url, emulator.runs_api_api_key)
    fast = wt.PollPolicy(interval=0.02, jitter=0.0, timeout=60.0)  # polls want far more
    async with wt_ray.run_many_async(
        provider, "wf", payloads(40), workers=2, concurrency=40, rate_limit=rate, poll=fast
    ) as batch:
        outcomes = [o async for o in batch]
    assert all(o.ok for o in outcomes)
    times = sorted(r.received_at for r in emulator.request_log)
    busiest = max(sum(1 for t in times[i:] if t < start + window) for i, start in enumerate(times))
    # each worker gets half the rate (and half the burst): over any window of 2 s the
    # batch sends at most rate * (window + 1); two full-rate workers would send twice that
    assert busiest <= rate * (window + 1), busiest
    assert busiest > rate * window * 0.6  # the limit, not the demand, set the pace


def test_the_workers_share_the_platform_s_default_rate_limit() -> None:
    from workflow_trigger._ray_pool import pool_settings, worker_options

    provider = wt.RunsApi("http://127.0.0.1:9", "wfk_test_key")
    checked = pool_settings(provider, workers=4, address=None, client_options={})
    options = worker_options(checked, 4)
    assert options["rate_limit"] == pytest.approx(500 / 60 / 4)


def test_a_provider_travels_to_a_worker_with_its_credentials() -> None:
    import pickle

    provider = wt.RunsApi("http://127.0.0.1:9", "wfk_secret_key")
    with pytest.raises(TypeError):
        pickle.dumps(provider)  # never by accident
    copy = pickle.loads(wt_ray.provider_bytes(provider))
    request = copy.status_request(
        wt.Execution(
            provider="runs_api",
            workflow_id="wf",
            execution_id="r1",
            triggered_at=datetime.now(timezone.utc),
        )
    )
    assert request.headers["x-api-key"] == "wfk_secret_key"


def test_the_core_never_imports_ray() -> None:
    code = (
        "import sys, workflow_trigger, workflow_trigger.cli, workflow_trigger.testing, "
        "workflow_trigger._cli_commands, workflow_trigger._ray_worker, "
        "workflow_trigger._ray_driver, workflow_trigger._ray_pool\n"
        "assert 'ray' not in sys.modules, 'ray imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_a_provider_can_be_built_on_each_worker_by_a_function(emulator: Emulator) -> None:
    emulator.scenario("wf", Scenario(duration=0.05, result=lambda p: p))
    build = functools.partial(
        wt.Codika, emulator.codika_instance_id, api_key="ck_test_key", base_url=emulator.base_url
    )
    async with wt_ray.run_many_async(build, "wf", payloads(10), workers=2, poll=POLL) as batch:
        outcomes = [o async for o in batch]
    assert sorted(o.result["k"] for o in outcomes if o.ok) == list(range(10))


async def test_the_blocking_run_many_yields_every_outcome_and_stops_when_left(
    emulator: Emulator,
) -> None:
    emulator.scenario("wf", Scenario(duration=0.05, result=lambda p: p))
    emulator.scenario("slow", Scenario(duration=60.0))
    provider = codika(emulator)

    def whole() -> list[wt.Outcome[Any]]:
        return list(wt_ray.run_many(provider, "wf", payloads(30), workers=2, poll=POLL))

    def leave_early() -> None:
        outcomes = wt_ray.run_many(
            provider, "slow", [*payloads(1), *payloads(20)], key=lambda p: p["k"], poll=POLL
        )
        for outcome in outcomes:  # the duplicate key ends first: leave at it
            assert isinstance(outcome.exception, wt.InvalidInputError)
            break
        outcomes.close()  # what a for loop's end does when the iterator is dropped

    outcomes = await anyio.to_thread.run_sync(whole)
    assert sorted(o.result["k"] for o in outcomes) == list(range(30))
    with anyio.fail_after(60):
        await anyio.to_thread.run_sync(leave_early)
    assert await polls_stopped(emulator, POLL.interval)


async def test_an_item_s_deadline_and_fail_fast_work_as_in_one_process(emulator: Emulator) -> None:
    emulator.scenario("slow", Scenario(duration=60.0))
    async with wt_ray.run_many_async(
        codika(emulator), "slow", payloads(6), workers=2, timeout=0.5, poll=POLL
    ) as batch:
        late = [o async for o in batch]
    assert {type(o.exception) for o in late} == {wt.PollTimeout}
    assert all(o.execution is not None for o in late)  # triggered: the run may go on

    emulator.inactive = True  # every trigger is refused (HTTP 412)
    with pytest.raises(wt.WorkflowTriggerError):
        async with wt_ray.run_many_async(
            codika(emulator), "slow", payloads(50), workers=2, concurrency=5, fail_fast=True
        ) as failing:
            async for _ in failing:
                pass
    assert failing.counts.triggered < 50  # it stopped at the first
