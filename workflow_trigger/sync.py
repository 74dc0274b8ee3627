"""Client: the blocking facade over AsyncClient, for scripts.

It holds no logic of its own. One anyio ``BlockingPortal`` runs an event loop
on a background thread, the ``AsyncClient`` lives in it (entered through
``portal.wrap_async_context_manager``, so its session and task group belong
to that loop), and every method is one ``portal.call`` of the async method.
Iterators (``run_many``, ``watch``) become blocking iterators that call the
async iterator's ``__anext__`` through the portal.

Ctrl-C while a call blocks cancels the task in the portal, waits for it to
unwind (so no request is left running), then re-raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import os
import pathlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

import anyio.from_thread

from ._batch import Batch
from .client import DEFAULT, AsyncClient
from .errors import InvalidInputError, UnsupportedOperation
from .models import Artifact, Execution, Outcome, Snapshot
from .options import ClientOptionsKwargs
from .providers.base import Provider

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Client"]

T = TypeVar("T")

#: how long Ctrl-C waits for the cancelled task to unwind before giving up on it
_UNWIND_SECONDS = 5.0


def _refuse_inside_event_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise UnsupportedOperation(
        "workflow_trigger.Client blocks, and this code runs inside an event loop where "
        "blocking would freeze it: use `async with workflow_trigger.AsyncClient(...)` and "
        "await its methods instead"
    )


class Client:
    """The same API as ``AsyncClient``, blocking. Use it as ``with Client(provider) as client:``.

    Safe to share between threads. Takes ``AsyncClient``'s options except
    ``session=`` (a session belongs to one event loop, and this one is private).
    """

    def __init__(self, provider: Provider, **options: Unpack[ClientOptionsKwargs]) -> None:
        _refuse_inside_event_loop()
        if "session" in options:
            raise InvalidInputError(
                "Client takes no session=: a session belongs to one event loop, and the "
                "blocking client runs its own; use AsyncClient(session=...) instead"
            )
        self._async = AsyncClient(provider, **options)
        self._stack = contextlib.ExitStack()
        try:
            self._portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal())
            self._stack.enter_context(self._portal.wrap_async_context_manager(self._async))
        except BaseException:
            self._stack.close()
            raise

    def __repr__(self) -> str:
        return f"Client({self._async.provider!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the session and stop the background thread (idempotent)."""
        self._stack.close()

    @property
    def requests_sent(self) -> int:
        return self._async.requests_sent

    def _call(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        _refuse_inside_event_loop()
        future = self._portal.start_task_soon(functools.partial(func, *args, **kwargs))
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()  # cancels the task's scope inside the portal
            concurrent.futures.wait([future], timeout=_UNWIND_SECONDS)
            raise

    def trigger(
        self,
        workflow_id: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
        connection_id: str | None = None,
    ) -> Execution:
        return self._call(
            self._async.trigger,
            workflow_id,
            payload,
            idempotency_key=idempotency_key,
            connection_id=connection_id,
        )

    def status(self, execution: Execution) -> Snapshot:
        return self._call(self._async.status, execution)

    @overload
    def wait(
        self,
        execution: Execution,
        *,
        timeout: float | None = ...,
        result_type: None = None,
        cancel_remote_on_exit: bool = ...,
        on_snapshot: Callable[[Snapshot], object] | None = ...,
    ) -> Outcome[Any]: ...

    @overload
    def wait(
        self,
        execution: Execution,
        *,
        timeout: float | None = ...,
        result_type: type[T],
        cancel_remote_on_exit: bool = ...,
        on_snapshot: Callable[[Snapshot], object] | None = ...,
    ) -> Outcome[T]: ...

    def wait(self, execution: Execution, **options: Any) -> Outcome[Any]:
        return self._call(self._async.wait, execution, **options)

    @overload
    def run(
        self,
        workflow_id: str,
        payload: Any = ...,
        *,
        result_type: None = None,
        timeout: float | None = ...,
        idempotency_key: str | None = ...,
        connection_id: str | None = ...,
        cancel_remote_on_exit: bool = ...,
        on_snapshot: Callable[[Snapshot], object] | None = ...,
    ) -> Outcome[Any]: ...

    @overload
    def run(
        self,
        workflow_id: str,
        payload: Any = ...,
        *,
        result_type: type[T],
        timeout: float | None = ...,
        idempotency_key: str | None = ...,
        connection_id: str | None = ...,
        cancel_remote_on_exit: bool = ...,
        on_snapshot: Callable[[Snapshot], object] | None = ...,
    ) -> Outcome[T]: ...

    def run(self, workflow_id: str, payload: Any = None, **options: Any) -> Outcome[Any]:
        return self._call(self._async.run, workflow_id, payload, **options)

    def cancel(self, execution: Execution) -> None:
        self._call(self._async.cancel, execution)

    def pause(self, execution: Execution) -> None:
        self._call(self._async.pause, execution)

    def resume(self, execution: Execution) -> None:
        self._call(self._async.resume, execution)

    def send_event(self, execution: Execution, event_type: str, payload: Any = None) -> None:
        self._call(self._async.send_event, execution, event_type, payload)

    @overload
    def download(self, artifact: Artifact, *, to: None = None, max_bytes: int = ...) -> bytes: ...

    @overload
    def download(
        self, artifact: Artifact, *, to: str | os.PathLike[str], max_bytes: int = ...
    ) -> pathlib.Path: ...

    def download(self, artifact: Artifact, **options: Any) -> bytes | pathlib.Path:
        """A result file's bytes, or with ``to=`` the path it was streamed to."""
        return self._call(self._async.download, artifact, **options)

    def watch(self, execution: Execution, *, timeout: float | None = DEFAULT) -> Iterator[Snapshot]:
        """Each change of status or steps until the end, as a blocking iterator."""
        return BlockingIterator(self, self._async.watch(execution, timeout=timeout))

    def run_many(
        self,
        workflow_id: str,
        payloads: Iterable[Any] | AsyncIterable[Any],
        **options: Any,
    ) -> BlockingIterator[Outcome[Any]]:
        """``AsyncClient.run_many`` as a blocking iterator; leaving the loop early
        (``break``, an exception, Ctrl-C) cancels every item still in flight."""
        batch = self._call(_in_loop, self._async.run_many, workflow_id, payloads, **options)
        return BlockingIterator(self, batch)

    def wait_many(
        self, executions: Iterable[Execution] | AsyncIterable[Execution], **options: Any
    ) -> BlockingIterator[Outcome[Any]]:
        """``AsyncClient.wait_many`` as a blocking iterator; leaving the loop early
        cancels every wait still in flight."""
        batch = self._call(_in_loop, self._async.wait_many, executions, **options)
        return BlockingIterator(self, batch)


async def _in_loop(make: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``make`` on the portal's event loop: a batch belongs to the loop it is made in."""
    return make(*args, **kwargs)


class BlockingIterator(Iterator[T]):
    """An async iterator driven through the client's portal.

    Batches hand over every outcome already waiting in one crossing between
    threads (``Batch.next_ready``); other iterators one item per crossing.
    """

    #: most outcomes taken from a batch per crossing
    CHUNK = 256

    def __init__(self, client: Client, iterator: AsyncIterator[T]) -> None:
        self._client = client
        self._iterator = iterator
        self._ready: collections.deque[T] = collections.deque()
        self._closed = False

    def __iter__(self) -> BlockingIterator[T]:
        return self

    def __next__(self) -> T:
        if self._ready:
            return self._ready.popleft()
        if self._closed:
            raise StopIteration
        try:
            if isinstance(self._iterator, Batch):
                ready = self._client._call(self._iterator.next_ready, self.CHUNK)
                self._ready.extend(cast("list[T]", ready))
                return self._ready.popleft()
            return self._client._call(self._iterator.__anext__)
        except StopAsyncIteration:
            self._closed = True
            raise StopIteration from None
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> BlockingIterator[T]:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the iteration and cancel whatever it still has in flight."""
        if self._closed:
            return
        self._closed = True
        self._ready.clear()
        aclose = getattr(self._iterator, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(RuntimeError):  # the client was closed first
                self._client._portal.call(aclose)

    def __del__(self) -> None:
        self.close()
