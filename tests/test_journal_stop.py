"""A cancel is not a crash: a journaled batch that is stopped lets its triggers on the wire
finish, records their tokens, and a resume triggers none of them again."""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from _support import codika_for

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, Fault, Scenario


def _providers() -> dict[str, Callable[[Emulator], wt.Provider]]:
    return {
        "codika": codika_for,
        "runs_api": lambda e: wt.RunsApi(e.base_url, e.runs_api_api_key),
        "awaitstep": lambda e: wt.AwaitStep(
            e.awaitstep_api_key, e.awaitstep_connection_id, base_url=e.base_url
        ),
        "pinkfish": lambda e: wt.Pinkfish(e.pinkfish_api_key, base_url=e.base_url),
    }


PLATFORMS = list(_providers())


def runs_per_key(emulator: Emulator) -> Counter[int]:
    return Counter(e.payload["k"] for e in emulator.executions)


def keyed(n: int) -> list[dict[str, int]]:
    return [{"k": i} for i in range(n)]


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_leaving_a_journaled_batch_lets_the_triggers_on_the_wire_finish(
    platform: str, emulator: Emulator, make_client: Any, tmp_path: Path
) -> None:
    emulator.scenario("wf", Scenario(duration=0.05, result={"ok": True}))
    emulator.add_fault(Fault.slow(count=1000, delay=0.3, on="trigger"))
    journal = tmp_path / "batch.sqlite"
    provider = _providers()[platform](emulator)
    # ten connections, so five triggers at a time: the rest wait in the scheduler's queue
    async with make_client(provider, max_connections=10) as client:
        batch = client.run_many("wf", keyed(40), key=lambda p: p["k"], journal=journal)
        async with batch:
            task_done = anyio.Event()

            async def consume() -> None:
                async for _ in batch:
                    pass
                task_done.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                with anyio.fail_after(10):
                    await emulator.wait_until(lambda: emulator.trigger_requests >= 5)
                tg.cancel_scope.cancel()  # the caller leaves while triggers are on the wire
        # the batch has returned: the triggers it had sent got their answers first
        on_the_wire = emulator.trigger_requests
        assert 5 <= on_the_wire < 40 and not task_done.is_set()
        assert len(emulator.executions) == on_the_wire
        emulator.clear_faults()
        again = [
            o async for o in client.run_many("wf", keyed(40), key=lambda p: p["k"], journal=journal)
        ]
    assert sorted(o.key for o in again) == list(range(40))
    assert all(o.ok and not o.possibly_duplicated for o in again), [o for o in again if not o.ok]
    assert runs_per_key(emulator) == Counter(range(40))  # every item triggered exactly once


SCRIPT = """
import sys, workflow_trigger as wt
codika = wt.Codika(sys.argv[1], api_key=sys.argv[2], base_url=sys.argv[3])
poll = wt.PollPolicy(interval=0.05, jitter=0)
with wt.Client(codika, poll=poll, max_connections=10) as client:
    payloads = ({"k": i} for i in range(60))
    for outcome in client.run_many("wf", payloads, key=lambda p: p["k"], journal=sys.argv[4]):
        print(outcome.key, flush=True)
"""


async def test_ctrl_c_in_a_journaled_batch_is_a_clean_stop_and_the_resume_triggers_nothing_twice(
    emulator: Emulator, make_client: Any, tmp_path: Path
) -> None:
    emulator.scenario("wf", Scenario(duration=0.05, result={"ok": True}))
    emulator.add_fault(Fault.slow(count=1000, delay=0.4, on="trigger"))
    journal = tmp_path / "batch.sqlite"
    argv = [sys.executable, "-c", SCRIPT, emulator.codika_instance_id, emulator.codika_api_key]
    argv += [emulator.base_url, str(journal)]
    async with await anyio.open_process(argv, env={**os.environ, "PYTHONUNBUFFERED": "1"}) as proc:
        with anyio.fail_after(15):
            await emulator.wait_until(lambda: emulator.trigger_requests >= 8)
        proc.send_signal(signal.SIGINT)
        with anyio.fail_after(15):
            code = await proc.wait()
    assert code != 0  # KeyboardInterrupt, after the triggers on the wire were recorded
    on_the_wire = emulator.trigger_requests
    assert len(emulator.executions) == on_the_wire < 60
    emulator.clear_faults()
    async with make_client() as client:
        again = [
            o async for o in client.run_many("wf", keyed(60), key=lambda p: p["k"], journal=journal)
        ]
    assert sorted(o.key for o in again) == list(range(60))
    assert all(o.ok and not o.possibly_duplicated for o in again)
    assert runs_per_key(emulator) == Counter(range(60))
