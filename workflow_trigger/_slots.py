"""The client's slots (``max_concurrency``): how many calls and batch items are in flight.

A counting semaphore with the two things the hot path needs: a free slot is
taken without a trip through the event loop, and nothing is kept per holder.
(``anyio.CapacityLimiter`` records each borrower in a set, about 100 bytes per
call in flight, and its ``async with`` makes two checkpoints; ``anyio.Semaphore``
checkpoints on every acquire.) Waiters are served first come, first served, on
bare asyncio futures: aiohttp ties the client to asyncio anyway.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Slots"]


class Slots:
    __slots__ = ("_waiters", "free")

    def __init__(self, total: int) -> None:
        self.free = total
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take_nowait(self) -> bool:
        """Take a free slot if there is one and nobody waits before us."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        """Take a slot, waiting for one; cancelling the wait takes none."""
        if self.take_nowait():
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.give()  # handed a slot, then cancelled before it could use it
            else:
                future.cancel()  # give() skips it
            raise

    def give(self) -> None:
        """Give a slot back: to the first waiter still waiting, else to the pool."""
        waiters = self._waiters
        while waiters:
            future = waiters.popleft()
            if not future.done():
                future.set_result(None)
                return
        self.free += 1
