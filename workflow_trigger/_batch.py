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
import os
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from ._results import structure_result
from ._transport import held
from .errors import APIError, InvalidInputError, PollTimeout, WorkflowTriggerError
from .journal import Journal
from .models import Execution, Outcome, Status

if TYPE_CHECKING:
    from .client import AsyncClient

__all__ = ["Batch"]

#: how many items the driver starts before it lets the event loop run
_YIELD_EVERY = 64


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
        journal: str | os.PathLike[str] | None = None,
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
            journal=journal,
        )
        self._task_group = task_group
        self._started = False
        # Leaving `async for` early drops this handle (the driver task holds no
        # reference to it): stop the batch's work right away. A finalizer rather
        # than __del__: when the handle dies in a reference cycle, the collector
        # runs weakref callbacks before any __del__, so the driver's streams are
        # closed before they could be collected unclosed.
        weakref.finalize(self, self._driver.stop)

    def __aiter__(self) -> Batch:
        return self

    async def __anext__(self) -> Outcome[Any]:
        driver = self._driver
        if not self._started:
            self._started = True
            self._task_group.start_soon(driver.drive, name=f"run_many {driver.workflow_id}")
        try:
            try:  # an outcome already waiting is handed over without a trip through the loop
                return driver.receive.receive_nowait()
            except anyio.WouldBlock:
                return await driver.receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            driver.receive.close()
            await driver.finished.wait()
            if driver.error is not None:
                raise driver.error from None
            raise StopAsyncIteration from None

    async def next_ready(self, limit: int) -> list[Outcome[Any]]:
        """The next outcome and up to ``limit - 1`` more that are already waiting.

        The blocking facade fetches outcomes this way, so a fast batch costs one
        crossing between threads per handful of items rather than per item.
        """
        items = [await self.__anext__()]
        receive = self._driver.receive
        while len(items) < limit:
            try:
                items.append(receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        return items

    async def __aenter__(self) -> Batch:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel every item still in flight and wait until they have all stopped."""
        self._driver.stop()
        if self._started:
            await self._driver.finished.wait()


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
        journal: str | os.PathLike[str] | None,
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
        self.journal_path = journal
        self.journal: Journal | None = None

    def stop(self) -> None:
        self.receive.close()
        if not self.finished.is_set():
            # RuntimeError: no event loop any more, so nothing runs that could be cancelled
            with contextlib.suppress(RuntimeError):
                self.scope.cancel()

    async def drive(self) -> None:
        try:
            with self.scope:
                async with self.send, anyio.create_task_group() as writer:
                    if self.journal_path is not None:
                        self.journal = await Journal.open(
                            self.journal_path,
                            provider=self.client.provider.kind,
                            workflow_id=self.workflow_id,
                        )
                        await writer.start(self.journal.run_writer)
                    await self._run_items()
                    writer.cancel_scope.cancel()
        except Exception as exc:  # a failing payload iterator or key(): surface it to the consumer
            error: BaseException = exc
            inner: tuple[BaseException, ...]
            while len(inner := getattr(error, "exceptions", ())) == 1:  # a group of one
                error = inner[0]
            self.error = error
        finally:
            self.send.close()
            self.finished.set()

    async def _run_items(self) -> None:
        async with anyio.create_task_group() as items:
            slots = anyio.CapacityLimiter(self.concurrency)
            index = 0
            async for payload in _iterate(self.payloads):
                key = self.key(payload) if self.key is not None else index
                holder = object()
                try:  # a free slot is taken without a trip through the event loop...
                    slots.acquire_on_behalf_of_nowait(holder)
                except anyio.WouldBlock:
                    await slots.acquire_on_behalf_of(holder)
                items.start_soon(self._item, index, key, payload, slots, holder)
                index += 1
                if index % _YIELD_EVERY == 0:
                    await anyio.lowlevel.checkpoint()  # ...but the loop still gets its turns

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
        client, journal = self.client, self.journal
        state = journal.state(key) if journal is not None else None
        if state is not None and state.outcome is not None:
            return self._replay(state.outcome, index, key)
        triggered: list[Execution] = []
        duplicated = False

        async def on_trigger(execution: Execution) -> None:
            triggered.append(execution)
            if journal is not None:
                await journal.record_token(key, execution)

        try:
            async with held(client._slot()):
                deadline = self.deadline_for()
                if state is not None and state.token is not None:
                    execution = Execution.from_token(state.token)
                    triggered.append(execution)
                    outcome = await client._wait(execution, None, deadline, self.result_type, False)
                else:
                    idempotency_key = None
                    if journal is not None:
                        honoured = client.provider.honours_idempotency_key
                        # an intent without a token: the first trigger may have started a run
                        duplicated = state is not None and not honoured
                        state = state or await journal.record_intent(key)
                        idempotency_key = state.idempotency_key if honoured else None
                    outcome = await client._run(
                        self.workflow_id,
                        payload,
                        deadline=deadline,
                        result_type=self.result_type,
                        idempotency_key=idempotency_key,
                        on_trigger=on_trigger,
                    )
        except WorkflowTriggerError as exc:
            if journal is not None and not triggered and _no_run_started(exc):
                await journal.forget(key)
            snapshot = exc.snapshot if isinstance(exc, PollTimeout) else None
            return Outcome(
                execution=triggered[0] if triggered else None,
                status=snapshot.status if snapshot else None,
                raw_status=snapshot.raw_status if snapshot else None,
                index=index,
                key=key,
                exception=exc,
                possibly_duplicated=duplicated,
            )
        outcome = attrs.evolve(outcome, index=index, key=key, possibly_duplicated=duplicated)
        if journal is not None:
            await journal.record_outcome(key, outcome)
        return outcome

    def _replay(self, outcome: Outcome[Any], index: int, key: Any) -> Outcome[Any]:
        result = outcome.raw_result
        if self.result_type is not None and outcome.status is Status.SUCCEEDED:
            result = structure_result(self.client._converter, result, self.result_type)
        return attrs.evolve(outcome, result=result, index=index, key=key)


def _no_run_started(exc: WorkflowTriggerError) -> bool:
    """Whether a failed trigger certainly started no run (so a re-run may trigger afresh)."""
    if isinstance(exc, InvalidInputError) and exc.status_code is None:
        return True  # refused by the SDK before sending
    status = exc.status_code if isinstance(exc, APIError) else None
    return status is not None and 400 <= status < 500 and status not in (408, 429)
