"""One client, many executions: max_concurrency and the rate limit hold for all calls together."""

from __future__ import annotations

from collections.abc import Callable

import anyio

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, Scenario


async def test_concurrency_holds_across_run_wait_and_run_many(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=(0.02, 0.1), result=1))
    async with make_client(max_concurrency=6) as client:
        waiting = [await client.trigger("wf") for _ in range(10)]
        emulator.reset_counters()  # count in flight from here: bare triggers hold no slot

        async def batch() -> None:
            async for outcome in client.run_many("wf", [{}] * 30, concurrency=6):
                assert outcome.ok

        async with anyio.create_task_group() as tg:
            tg.start_soon(batch)
            for ex in waiting:
                tg.start_soon(client.wait, ex)
            for _ in range(10):
                tg.start_soon(client.run, "wf")
    assert emulator.triggers("wf") == 30 + 10  # counted since the reset
    # The 10 waited-on runs were started before the reset and stay in flight until a
    # poll shows their end; on top of them, the run and run_many calls (40 executions,
    # up to 16 at once without a shared limit) may add only what the 6 slots allow.
    assert emulator.max_in_flight <= 10 + 6


async def test_the_rate_limit_spaces_every_request_of_the_client(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=0.0, result=1))
    rate = 40.0
    async with make_client(rate_limit=rate) as client, anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(client.run, "wf")
    times = sorted(r.received_at for r in emulator.request_log)
    assert len(times) == 40  # 20 triggers and 20 polls
    burst = int(rate)  # the limiter lets one second's worth through at once
    # after the burst, requests come no faster than the rate
    spaced = times[burst - 1 :]
    assert spaced[-1] - spaced[0] >= (len(spaced) - 1) / rate * 0.9
