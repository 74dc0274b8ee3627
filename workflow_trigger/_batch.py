"""run_many's handle: the async iterator of outcomes the caller holds.

The work is done by an ``Engine`` (``_engine.py``), whose items run on the
client's scheduler and whose driver task starts
in the client's task group on the first ``__anext__``. It lives there, not in
the consumer's frame: a consumer that leaves its ``async for`` early
(``break``, an exception, its own cancellation) drops the handle, and
dropping it cancels the engine's scope at once. ``aclose()`` (or ``async
with``) does the same and waits until every in-flight item has stopped.
"""

from __future__ import annotations

import weakref
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc

from ._engine import Engine
from ._items import BatchCounts
from .models import Outcome

__all__ = ["Batch"]

T = TypeVar("T")


class Batch(Generic[T]):
    """The async iterator ``AsyncClient.run_many`` returns (also an async context manager);
    ``T`` is the ``result_type`` of its outcomes."""

    def __init__(self, task_group: anyio.abc.TaskGroup, engine: Engine) -> None:
        self._engine = engine
        self._task_group = task_group
        self._started = False
        # Leaving `async for` early drops this handle (the driver task holds no
        # reference to it): stop the batch's work right away. A finalizer rather
        # than __del__: when the handle dies in a reference cycle, the collector
        # runs weakref callbacks before any __del__, so the driver's streams are
        # closed before they could be collected unclosed.
        weakref.finalize(self, self._engine.stop)

    @property
    def counts(self) -> BatchCounts:
        """What became of the items so far: from the journal, resumed, triggered, flagged,
        refused (see ``BatchCounts``)."""
        return self._engine.counts

    def __aiter__(self) -> Batch[T]:
        return self

    async def __anext__(self) -> Outcome[T]:
        engine = self._engine
        if not self._started:
            self._started = True
            self._task_group.start_soon(engine.drive, name=engine.name)
        try:
            try:  # an outcome already waiting is handed over without a trip through the loop
                outcome = engine.receive.receive_nowait()
            except anyio.WouldBlock:
                outcome = await engine.receive.receive()
            engine.taken()
            return outcome
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            engine.receive.close()
            await engine.finished.wait()
            if engine.error is not None:
                raise engine.error from None
            raise StopAsyncIteration from None

    async def next_ready(self, limit: int, linger: float = 0.0) -> list[Outcome[T]]:
        """The next outcome and up to ``limit - 1`` more that are waiting ``linger``
        seconds after it came.

        The blocking facade fetches outcomes this way, so a batch costs one crossing
        between threads (about 100 us of CPU) per handful of items rather than per
        item: outcomes that end a few milliseconds apart cross together.
        """
        items = [await self.__anext__()]
        receive = self._engine.receive
        if linger > 0 and receive.statistics().current_buffer_used < limit - 1:
            # shielded: an outcome already taken is never lost to a cancel mid-wait
            with anyio.CancelScope(shield=True):
                await anyio.sleep(linger)
        while len(items) < limit:
            try:
                items.append(receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            self._engine.taken()
        return items

    async def __aenter__(self) -> Batch[T]:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel every item still in flight and wait until they have all stopped."""
        self._engine.stop()
        if self._started:
            await self._engine.finished.wait()
