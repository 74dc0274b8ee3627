"""Killing a worker's process, or the driver, mid-batch loses nothing (issue 13, item 4).

A worker SIGKILLed: every item's outcome is still delivered exactly once; its
items with a token are waited on by another worker without a new trigger,
those with only an intent are sent again, with the same idempotency key on
the Runs API (so each key starts one run) and flagged ``possibly_duplicated``
elsewhere. The driver SIGKILLed: the same batch run again on its journal
resumes as a single-process batch does.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

import workflow_trigger as wt
import workflow_trigger.ray as wt_ray
from workflow_trigger.testing import Emulator, Scenario

N = 400
POLL = wt.PollPolicy(interval=0.1, jitter=0.0, timeout=60.0)


def provider_for(platform: str, emu: Emulator) -> wt.Provider:
    if platform == "runs_api":
        return wt.RunsApi(emu.base_url, emu.runs_api_api_key)
    return wt.Codika(emu.codika_instance_id, api_key=emu.codika_api_key, base_url=emu.base_url)


def check_each_key_once(emulator: Emulator, outcomes: list[wt.Outcome[Any]], platform: str) -> None:
    assert sorted(o.key for o in outcomes) == list(range(N))  # each delivered exactly once
    assert all(o.ok for o in outcomes), [o for o in outcomes if not o.ok][:3]
    assert all(o.result == {"k": o.key} for o in outcomes)
    runs = Counter(e.payload["k"] for e in emulator.executions)
    assert set(runs) == set(range(N))
    twice = {k for k, n in runs.items() if n > 1}
    flagged = {o.key for o in outcomes if o.possibly_duplicated}
    assert twice <= flagged, sorted(twice - flagged)
    if platform == "runs_api":  # the same idempotency key found the first run again
        assert not twice and not flagged


@pytest.mark.parametrize("journaled", [False, True], ids=["memory", "journal"])
@pytest.mark.parametrize("platform", ["codika", "runs_api"])
async def test_a_worker_killed_mid_batch_loses_no_item_and_starts_no_unflagged_run(
    platform: str, journaled: bool, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.scenario("wf", Scenario(duration=(0.3, 1.0), result=lambda p: p))
    journal = tmp_path / "batch.sqlite" if journaled else None
    outcomes: list[wt.Outcome[Any]] = []
    with anyio.fail_after(90):
        async with wt_ray.run_many_async(
            provider_for(platform, emulator),
            "wf",
            ({"k": i} for i in range(N)),
            workers=2,
            concurrency=100,
            key=lambda p: p["k"],
            journal=journal,
            poll=POLL,
            rate_limit=1e6,
        ) as batch:
            async for outcome in batch:
                outcomes.append(outcome)
                if len(outcomes) == 60:  # mid-batch: about 100 items are in flight
                    pid = (await batch.worker_pids())[0]
                    os.kill(pid, signal.SIGKILL)
    assert batch.workers_lost == 1
    check_each_key_once(emulator, outcomes, platform)
    assert batch.counts.triggered >= N  # the dead worker's untokened items were sent again
    if platform == "codika":
        assert emulator.idempotent_replays == 0


CHILD = """
import sys, workflow_trigger as wt, workflow_trigger.ray as wt_ray

BASE_URL, JOURNAL, ADDRESS = sys.argv[1:4]
provider = wt.Codika("pi_test", api_key="ck_test_key", base_url=BASE_URL)
outcomes = wt_ray.run_many(
    provider, "wf", ({{"k": i}} for i in range({n})), key=lambda p: p["k"], journal=JOURNAL,
    workers=2, concurrency=100, address=ADDRESS, poll=wt.PollPolicy(interval=0.1, jitter=0.0),
)
for outcome in outcomes:
    pass
"""


async def test_the_driver_killed_mid_batch_resumes_from_its_journal(
    emulator: Emulator, tmp_path: Path, ray_address: str
) -> None:
    emulator.scenario("wf", Scenario(duration=(0.3, 1.0), result=lambda p: p))
    journal = tmp_path / "batch.sqlite"
    args = [sys.executable, "-c", CHILD.format(n=N), emulator.base_url, str(journal), ray_address]
    with anyio.fail_after(90):
        async with await anyio.open_process(args) as child:
            await emulator.wait_until(lambda: emulator.trigger_requests >= 150)
            child.kill()  # SIGKILL: no clean-up of any kind
            await child.wait()
        async with wt_ray.run_many_async(
            provider_for("codika", emulator),
            "wf",
            ({"k": i} for i in range(N)),
            workers=2,
            key=lambda p: p["k"],
            journal=journal,
            poll=POLL,
        ) as batch:
            outcomes = [o async for o in batch]
    check_each_key_once(emulator, outcomes, "codika")
    counts = batch.counts
    assert counts.from_journal + counts.resumed > 0  # the first run's work was kept
    assert counts.triggered < N
