"""What a waiting call awaits (``_job.Wake``): every way asyncio and anyio end a wait.

A waiting ``client.run`` does not sit on an ``asyncio.Future`` but on a smaller
future-like object the caller's task drives by asyncio's protocol. These tests
hold it the ways callers do: a task cancelled with a message, ``wait_for``,
``asyncio.timeout``, anyio's cancel scopes nested and shielded, ``gather``; and
check that the task's cancel bookkeeping comes out even, so structured
concurrency around the call still works.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

import anyio
import pytest

import workflow_trigger as wt
from workflow_trigger._job import Wake
from workflow_trigger.providers.base import Request
from workflow_trigger.testing import Emulator, Scenario

pytestmark = pytest.mark.anyio


@pytest.fixture
def slow(emulator: Emulator) -> Emulator:
    emulator.scenario("slow", Scenario(duration=60))
    emulator.scenario("wf", Scenario(duration=0.05, result={"ok": True}))
    return emulator


async def test_a_task_cancelled_with_a_message_raises_that_message(
    client: wt.AsyncClient, slow: Emulator
) -> None:
    task = asyncio.ensure_future(client.run("slow"))
    with anyio.fail_after(5):
        await slow.wait_for_triggers("slow", 1)
    task.cancel("the handler gave up")
    with pytest.raises(asyncio.CancelledError) as raised:
        await task
    assert raised.value.args == ("the handler gave up",)
    assert task.cancelled()
    # the slot it held is free: the next run on a client of one slot goes through
    outcome = await asyncio.wait_for(client.run("wf"), 5)
    assert outcome.ok


async def test_wait_for_times_out_and_the_call_is_withdrawn(
    make_client: Any, slow: Emulator
) -> None:
    async with make_client(max_concurrency=1) as client:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.run("slow"), 0.3)
        outcome = await asyncio.wait_for(client.run("wf"), 5)  # the one slot was given back
        assert outcome.ok and outcome.result == {"ok": True}


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is new in 3.11")
async def test_asyncio_timeout_sees_its_own_cancel(client: wt.AsyncClient, slow: Emulator) -> None:
    task = asyncio.current_task()
    assert task is not None
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await client.run("slow")
    assert task.cancelling() == 0  # the cancel was counted once and taken back once


async def test_anyio_scopes_nested_and_shielded(client: wt.AsyncClient, slow: Emulator) -> None:
    task = asyncio.current_task()
    assert task is not None
    with anyio.move_on_after(5) as outer:
        with anyio.move_on_after(0.2) as inner:
            await client.run("slow")
        assert inner.cancelled_caught
        with anyio.CancelScope(shield=True):  # a shielded run is not cut by the scope around it
            outer.cancel()
            outcome = await client.run("wf")
        assert outcome.ok
        await client.run("slow")  # the outer scope's cancel ends this one at once
        pytest.fail("the cancelled scope let a run wait")
    assert outer.cancelled_caught
    assert task.cancelling() == 0


async def test_gathered_runs_end_with_their_own_outcomes(
    client: wt.AsyncClient, slow: Emulator
) -> None:
    outcomes = await asyncio.gather(*(client.run("wf", {"i": i}) for i in range(20)))
    assert [o.ok for o in outcomes] == [True] * 20
    assert len({o.execution.execution_id for o in outcomes if o.execution}) == 20


async def test_a_waiting_run_keeps_no_status_request(make_client: Any, slow: Emulator) -> None:
    """Each poll makes its request and lets it go: 30 runs in flight, polled, hold none
    (with one kept per run, 30 would be alive here)."""
    async with make_client(max_connections=4) as client, anyio.create_task_group() as tg:
        for _ in range(30):
            tg.start_soon(client.run, "slow")
        with anyio.fail_after(10):
            await slow.wait_until(lambda: slow.poll_requests >= 60)  # each polled, some twice
        gc.collect()
        kept = [o for o in gc.get_objects() if isinstance(o, Request) and o.kind == "status"]
        assert len(kept) <= 4  # at most one per connection, on the wire right now
        tg.cancel_scope.cancel()


async def test_the_wake_alone() -> None:
    woken = Wake()
    woken.wake()
    await woken  # woken before it was awaited: no wait at all
    assert woken.done() and not woken.cancel()
    assert repr(woken) == "<workflow_trigger Wake woken>"

    later = Wake()
    asyncio.get_running_loop().call_later(0.01, later.wake)
    await later
    assert later.done()

    cancelled = Wake()
    assert cancelled.cancel("why") and not cancelled.cancel() and cancelled.done()
    with pytest.raises(asyncio.CancelledError, match="why"):
        await cancelled
    cancelled.wake()  # a wake after the cancel changes nothing
    assert repr(cancelled) == "<workflow_trigger Wake cancelled>"
    assert asyncio.isfuture(Wake())
