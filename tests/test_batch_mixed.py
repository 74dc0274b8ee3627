"""run_many under a seeded mix of faults: whatever goes wrong, nothing is lost.

The engine keeps items in queues and a timer heap rather than in tasks, so
the invariants that a task per item gave for free are pinned here, under
retries, refused triggers, broken answers and deadlines met mid-request:
every index comes back exactly once, each with a result or a local error of
the kinds the README lists, never more runs in flight than the concurrency,
and every slot of the client free again at the end.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import anyio
import pytest

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, Fault, Scenario

LOCAL_ERRORS = (wt.PollTimeout, wt.ServerError, wt.TransportError, wt.ProtocolError)


def _faults(rng: random.Random) -> list[Fault]:
    """A seeded handful of each misbehaviour the engine must absorb."""
    kinds: list[Callable[[], Fault]] = [
        lambda: Fault.server_error(count=rng.randint(1, 3), on="poll"),  # retried
        lambda: Fault.rate_limited(count=1, retry_after=0.05, on="poll"),  # retried
        lambda: Fault.drop(count=1, on="poll"),  # retried (a poll may be sent again)
        lambda: Fault.malformed(count=1, on="poll"),  # the item fails: ProtocolError
        lambda: Fault.slow(count=1, delay=2.0, on="poll"),  # the item's deadline cuts it
        lambda: Fault.server_error(count=1, on="trigger"),  # refused: ServerError
        lambda: Fault.drop(count=1, on="trigger"),  # no answer: TransportError
    ]
    return [rng.choice(kinds)() for _ in range(12)]


@pytest.mark.parametrize(("seed", "concurrency"), [(0, 1), (1, 7), (2, 25), (3, 60), (4, 200)])
async def test_every_item_ends_exactly_once_whatever_goes_wrong(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator, seed: int, concurrency: int
) -> None:
    rng = random.Random(seed)
    emulator.scenario("wf", Scenario(duration=(0.0, 0.1), result=lambda p: p["i"]))
    for fault in _faults(rng):
        emulator.add_fault(fault)
    n = 40 if concurrency == 1 else 200
    async with make_client(max_concurrency=concurrency, max_connections=10) as client:
        with anyio.fail_after(30):
            payloads = ({"i": i} for i in range(n))
            outcomes = [
                o
                async for o in client.run_many("wf", payloads, concurrency=concurrency, timeout=1.0)
            ]
        # Every slot of the client is free again: as many runs as it allows fit at once.
        emulator.scenario("quick", Scenario(duration=0.0, result=1))
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                for _ in range(concurrency):
                    tasks.start_soon(client.run, "quick", {})

    assert sorted(o.index for o in outcomes if o.index is not None) == list(range(n))
    for outcome in outcomes:
        if outcome.exception is None:
            assert outcome.ok and outcome.result == outcome.index
        else:
            assert isinstance(outcome.exception, LOCAL_ERRORS), repr(outcome.exception)
            assert not outcome.ok
    started = {o.execution.execution_id for o in outcomes if o.execution is not None}
    # A run is started by the emulator for every item that got a handle, and only those
    assert len(started) == emulator.triggers("wf")
    # Runs of items that failed locally stay in flight on the emulator (nobody saw them
    # end); beyond those, never more than the concurrency at once.
    abandoned = sum(o.exception is not None and o.execution is not None for o in outcomes)
    assert emulator.max_in_flight <= concurrency + abandoned
    assert sum(o.ok for o in outcomes) >= n - 12  # each fault spoils one item at most
