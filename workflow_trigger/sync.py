"""Client: the blocking facade over AsyncClient, for scripts.

It holds no logic of its own. One anyio ``BlockingPortal`` runs an event loop
on a background thread, the ``AsyncClient`` lives in it (entered through
``portal.wrap_async_context_manager``, so its session and task group belong
to that loop), and every method is one ``portal.call`` of the async method.
Iterators (``run_many``, ``watch``) become blocking iterators that call the
async iterator's ``__anext__`` through the portal.

Ctrl-C while a call blocks cancels the task in the portal, waits for it to
unwind (so no request is left running), then re-raises ``KeyboardInterrupt``.

The loop runs on a daemon thread of its own, so a script that never closes
its ``Client`` still exits: the client is closed when it is collected or at
interpreter exit, with a ``ResourceWarning`` (as aiohttp warns of an unclosed
session).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import os
import pathlib
import threading
import warnings
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast, overload

import anyio.from_thread

from ._batch import Batch
from ._calls import Hook, T
from ._items import BatchCounts
from .client import DEFAULT, AsyncClient
from .errors import InvalidInputError, UnsupportedOperation
from .models import Artifact, Execution, Outcome, Snapshot
from .options import ClientOptionsKwargs
from .providers.base import Provider

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Client"]


#: how long Ctrl-C waits for the cancelled task to unwind before giving up on it
_UNWIND_SECONDS = 5.0


class _LoopThread:
    """An event loop on a daemon thread, with a portal into it and the client entered."""

    def __init__(self, client: AsyncClient) -> None:
        self._closed = False
        self._lock = threading.Lock()
        ready = threading.Event()
        portals: list[anyio.from_thread.BlockingPortal] = []

        async def serve() -> None:
            async with anyio.from_thread.BlockingPortal() as portal:
                portals.append(portal)
                ready.set()
                await portal.sleep_until_stopped()

        def main() -> None:
            try:
                anyio.run(serve)
            finally:
                ready.set()

        self._thread = threading.Thread(target=main, name="workflow_trigger.Client", daemon=True)
        self._thread.start()
        ready.wait()
        if not portals:  # pragma: no cover - the event loop could not start
            raise RuntimeError("the event loop thread of workflow_trigger.Client did not start")
        self.portal = portals[0]
        self._entered = self.portal.wrap_async_context_manager(client)
        try:
            self._entered.__enter__()
        except BaseException:
            self._shutdown()
            raise

    def close(self, *, unclosed: bool = False) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if unclosed:
            warnings.warn(
                "a workflow_trigger.Client was never closed: use `with Client(...) as "
                "client:` or call client.close()",
                ResourceWarning,
                stacklevel=2,
            )
        try:
            self._entered.__exit__(None, None, None)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has already stopped
            self.portal.call(self.portal.stop)
        self._thread.join()


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
        self._loop = _LoopThread(self._async)
        self._portal = self._loop.portal
        self._finalizer = weakref.finalize(self, self._loop.close, unclosed=True)

    def __repr__(self) -> str:
        return f"Client({self._async.provider!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the session and stop the background thread (idempotent)."""
        self._finalizer.detach()
        self._loop.close()

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
        timeout: float | None = None,
    ) -> Execution:
        return self._call(
            self._async.trigger,
            workflow_id,
            payload,
            idempotency_key=idempotency_key,
            connection_id=connection_id,
            timeout=timeout,
        )

    def status(self, execution: Execution, *, timeout: float | None = None) -> Snapshot:
        return self._call(self._async.status, execution, timeout=timeout)

    def wait(
        self,
        execution: Execution,
        *,
        timeout: float | None = DEFAULT,
        result_type: type[T] | None = None,
        cancel_remote_on_exit: bool = False,
        on_snapshot: Hook | None = None,
    ) -> Outcome[T]:
        return self._call(
            self._async.wait,
            execution,
            timeout=timeout,
            result_type=result_type,
            cancel_remote_on_exit=cancel_remote_on_exit,
            on_snapshot=on_snapshot,
        )

    def run(
        self,
        workflow_id: str,
        payload: Any = None,
        *,
        result_type: type[T] | None = None,
        timeout: float | None = DEFAULT,
        idempotency_key: str | None = None,
        connection_id: str | None = None,
        cancel_remote_on_exit: bool = False,
        on_snapshot: Hook | None = None,
    ) -> Outcome[T]:
        return self._call(
            self._async.run,
            workflow_id,
            payload,
            result_type=result_type,
            timeout=timeout,
            idempotency_key=idempotency_key,
            connection_id=connection_id,
            cancel_remote_on_exit=cancel_remote_on_exit,
            on_snapshot=on_snapshot,
        )

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

    def download(
        self,
        artifact: Artifact,
        *,
        to: str | os.PathLike[str] | None = None,
        max_bytes: int = 100 * 1024 * 1024,
    ) -> bytes | pathlib.Path:
        """A result file's bytes, or with ``to=`` the path it was streamed to."""
        return self._call(self._async.download, artifact, to=to, max_bytes=max_bytes)

    def watch(self, execution: Execution, *, timeout: float | None = DEFAULT) -> Iterator[Snapshot]:
        """Each change of status or steps until the end, as a blocking iterator."""
        return BlockingIterator(self, self._async.watch(execution, timeout=timeout))

    def run_many(
        self,
        workflow_id: str,
        payloads: Iterable[Any] | AsyncIterable[Any],
        *,
        concurrency: int = 100,
        result_type: type[T] | None = None,
        timeout: float | None = DEFAULT,
        key: Callable[[Any], Any] | None = None,
        fail_fast: bool = False,
        journal: str | os.PathLike[str] | None = None,
        cancel_remote_on_exit: bool = False,
        on_snapshot: Hook | None = None,
    ) -> BlockingIterator[Outcome[T]]:
        """``AsyncClient.run_many`` as a blocking iterator; leaving the loop early
        (``break``, an exception, Ctrl-C) cancels every item still in flight."""
        batch = self._call(
            _in_loop,
            functools.partial(
                self._async.run_many,
                workflow_id,
                payloads,
                concurrency=concurrency,
                result_type=result_type,
                timeout=timeout,
                key=key,
                fail_fast=fail_fast,
                journal=journal,
                cancel_remote_on_exit=cancel_remote_on_exit,
                on_snapshot=on_snapshot,
            ),
        )
        return BlockingIterator(self, batch)

    def wait_many(
        self,
        executions: Iterable[Execution] | AsyncIterable[Execution],
        *,
        concurrency: int = 100,
        result_type: type[T] | None = None,
        timeout: float | None = DEFAULT,
        fail_fast: bool = False,
        cancel_remote_on_exit: bool = False,
        on_snapshot: Hook | None = None,
    ) -> BlockingIterator[Outcome[T]]:
        """``AsyncClient.wait_many`` as a blocking iterator; leaving the loop early
        cancels every wait still in flight."""
        batch = self._call(
            _in_loop,
            functools.partial(
                self._async.wait_many,
                executions,
                concurrency=concurrency,
                result_type=result_type,
                timeout=timeout,
                fail_fast=fail_fast,
                cancel_remote_on_exit=cancel_remote_on_exit,
                on_snapshot=on_snapshot,
            ),
        )
        return BlockingIterator(self, batch)


async def _in_loop(make: Callable[[], T]) -> T:
    """Call ``make`` on the portal's event loop: a batch belongs to the loop it is made in."""
    return make()


class BlockingIterator(Iterator[T]):
    """An async iterator driven through the client's portal.

    Batches hand over every outcome already waiting in one crossing between
    threads (``Batch.next_ready``); other iterators one item per crossing.
    """

    #: most outcomes taken from a batch per crossing
    CHUNK = 256
    #: seconds a crossing waits after the first outcome for others to come with it
    LINGER = 0.005

    def __init__(self, client: Client, iterator: AsyncIterator[T]) -> None:
        self._client = client
        self._iterator = iterator
        self._ready: collections.deque[T] = collections.deque()
        self._closed = False

    def __iter__(self) -> BlockingIterator[T]:
        return self

    @property
    def counts(self) -> BatchCounts:
        """What became of a batch's items so far (``Batch.counts``): ``run_many`` and
        ``wait_many`` only."""
        if not isinstance(self._iterator, Batch):
            raise UnsupportedOperation("only a run_many or wait_many iterator has counts")
        return self._iterator.counts

    def __next__(self) -> T:
        if self._ready:
            return self._ready.popleft()
        if self._closed:
            raise StopIteration
        try:
            if isinstance(self._iterator, Batch):
                ready = self._client._call(self._iterator.next_ready, self.CHUNK, self.LINGER)
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
