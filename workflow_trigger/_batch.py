"""run_many: many executions at once, outcomes in completion order.

How it works. A driver task, started in the client's task group on the first
``__anext__``, pulls payloads one at a time, and only once one of the
batch's ``concurrency`` slots is free (a ``CapacityLimiter`` borrowed on
behalf of each item), so a generator of ten million payloads is never
materialised. Each item runs trigger + wait in a task of the driver's task
group and sends its ``Outcome`` into a bounded memory object stream; an item
keeps its slot until the stream took its outcome, so a slow consumer slows
triggering instead of growing memory.

The driver lives in the client's task group, not in the consumer's frame:
a consumer that leaves its ``async for`` early (``break``, an exception, its
own cancellation) drops the batch, and dropping it cancels the driver's
scope at once. ``aclose()`` (or ``async with``) does the same and waits until
every in-flight item has stopped.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import attrs

from .errors import InvalidInputError, PollTimeout, WorkflowTriggerError
from .models import Execution, Outcome

if TYPE_CHECKING:
    from .client import AsyncClient

__all__ = ["Batch"]


async def _iterate(payloads: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(payloads, AsyncIterable):
        async for payload in payloads:
            yield payload
    else:
        for payload in payloads:
            yield payload


class Batch:
    """The async iterator ``AsyncClient.run_many`` returns (also an async context manager)."""

    def __init__(
        self,
        client: AsyncClient,
        task_group: anyio.abc.TaskGroup,
        workflow_id: str,
        payloads: Iterable[Any] | AsyncIterable[Any],
        *,
        concurrency: int,
        result_type: type[Any] | None,
        deadline_for: Callable[[], float],
        key: Callable[[Any], Any] | None,
        fail_fast: bool,
    ) -> None:
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise InvalidInputError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if not isinstance(payloads, (Iterable, AsyncIterable)) or isinstance(
            payloads, (str, bytes, dict)
        ):
            raise InvalidInputError(
                "payloads must be an iterable or async iterable of payloads (a list, a "
                f"generator...), got {type(payloads).__name__}"
            )
        if key is not None and not callable(key):
            raise InvalidInputError("key must be a function of the payload, or None")
        deadline_for()  # validate timeout now, not in every item
        self._driver = _Driver(
            client,
            workflow_id,
            payloads,
            concurrency=concurrency,
            result_type=result_type,
            deadline_for=deadline_for,
            key=key,
            fail_fast=fail_fast,
        )
        self._task_group = task_group
        self._started = False

    def __aiter__(self) -> Batch:
        return self

    async def __anext__(self) -> Outcome[Any]:
        driver = self._driver
        if not self._started:
            self._started = True
            self._task_group.start_soon(driver.drive, name=f"run_many {driver.workflow_id}")
        try:
            return await driver.receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            await driver.finished.wait()
            if driver.error is not None:
                raise driver.error from None
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Batch:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel every item still in flight and wait until they have all stopped."""
        self._driver.stop()
        if self._started:
            await self._driver.finished.wait()

    def __del__(self) -> None:
        # Leaving `async for` early drops this handle (the driver task holds
        # no reference to it): stop the batch's work right away.
        driver = getattr(self, "_driver", None)  # None: __init__ refused the arguments
        if driver is not None:
            driver.stop()


class _Driver:
    """The batch's state and tasks; separate from ``Batch`` so dropping the handle is seen."""

    def __init__(
        self,
        client: AsyncClient,
        workflow_id: str,
        payloads: Iterable[Any] | AsyncIterable[Any],
        *,
        concurrency: int,
        result_type: type[Any] | None,
        deadline_for: Callable[[], float],
        key: Callable[[Any], Any] | None,
        fail_fast: bool,
    ) -> None:
        self.client = client
        self.workflow_id = workflow_id
        self.payloads = payloads
        self.concurrency = concurrency
        self.result_type = result_type
        self.deadline_for = deadline_for
        self.key = key
        self.fail_fast = fail_fast
        self.send, self.receive = anyio.create_memory_object_stream[Outcome[Any]](concurrency)
        self.scope = anyio.CancelScope()
        self.finished = anyio.Event()
        self.error: BaseException | None = None

    def stop(self) -> None:
        self.receive.close()
        if not self.finished.is_set():
            # RuntimeError: no event loop any more, so nothing runs that could be cancelled
            with contextlib.suppress(RuntimeError):
                self.scope.cancel()

    async def drive(self) -> None:
        try:
            with self.scope:
                async with self.send, anyio.create_task_group() as items:
                    slots = anyio.CapacityLimiter(self.concurrency)
                    index = 0
                    async for payload in _iterate(self.payloads):
                        key = self.key(payload) if self.key is not None else index
                        holder = object()
                        await slots.acquire_on_behalf_of(holder)
                        items.start_soon(self._item, index, key, payload, slots, holder)
                        index += 1
        except Exception as exc:  # a failing payload iterator or key(): surface it to the consumer
            error: BaseException = exc
            inner: tuple[BaseException, ...]
            while len(inner := getattr(error, "exceptions", ())) == 1:  # a group of one
                error = inner[0]
            self.error = error
        finally:
            self.send.close()
            self.finished.set()

    async def _item(
        self, index: int, key: Any, payload: Any, slots: anyio.CapacityLimiter, holder: object
    ) -> None:
        try:
            outcome = await self._outcome(index, key, payload)
            try:
                await self.send.send(outcome)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self.scope.cancel()  # the consumer is gone
                return
            if self.fail_fast and outcome.exception is not None:
                self.error = outcome.exception
                self.scope.cancel()
        finally:
            slots.release_on_behalf_of(holder)

    async def _outcome(self, index: int, key: Any, payload: Any) -> Outcome[Any]:
        triggered: list[Execution] = []

        async def on_trigger(execution: Execution) -> None:
            triggered.append(execution)

        client = self.client
        try:
            async with client._slot():
                outcome = await client._run(
                    self.workflow_id,
                    payload,
                    deadline=self.deadline_for(),
                    result_type=self.result_type,
                    on_trigger=on_trigger,
                )
        except WorkflowTriggerError as exc:
            snapshot = exc.snapshot if isinstance(exc, PollTimeout) else None
            return Outcome(
                execution=triggered[0] if triggered else None,
                status=snapshot.status if snapshot else None,
                raw_status=snapshot.raw_status if snapshot else None,
                index=index,
                key=key,
                exception=exc,
            )
        return attrs.evolve(outcome, index=index, key=key)
