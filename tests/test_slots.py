"""The client's slots (max_concurrency): first come first served, a cancelled wait takes none."""

from __future__ import annotations

import asyncio

import anyio
import anyio.lowlevel
import pytest

from workflow_trigger._slots import Slots


async def test_free_slots_are_taken_at_once_and_the_rest_wait_in_order() -> None:
    slots = Slots(2)
    assert slots.take_nowait() and slots.take_nowait()
    assert not slots.take_nowait()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await slots.take()
        order.append(i)

    async with anyio.create_task_group() as tasks:
        for i in range(3):
            tasks.start_soon(waiter, i)
            await anyio.lowlevel.checkpoint()
        assert order == []
        for _ in range(3):
            slots.give()
            await anyio.wait_all_tasks_blocked()
    assert order == [0, 1, 2]
    assert slots.free == 0  # each slot given back went to a waiter, none to the pool
    slots.give()
    slots.give()
    assert slots.free == 2


async def test_a_cancelled_wait_takes_no_slot() -> None:
    slots = Slots(1)
    assert slots.take_nowait()
    with anyio.move_on_after(0.01):
        await slots.take()
    slots.give()  # the holder gives back: the cancelled waiter is skipped
    assert slots.free == 1 and slots.take_nowait()


async def test_a_wait_cancelled_after_it_was_handed_a_slot_gives_it_back() -> None:
    # asyncio's own cancel (Task.cancel, as asyncio.timeout or a service's shutdown
    # does) can land after the slot was handed over and before the waiter runs again
    slots = Slots(1)
    assert slots.take_nowait()
    waiter = asyncio.ensure_future(slots.take())
    await anyio.wait_all_tasks_blocked()
    slots.give()  # handed to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert slots.free == 1
