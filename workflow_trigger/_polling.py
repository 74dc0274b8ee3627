"""The poll loop of one execution, shared by ``wait``, ``run``, ``run_many`` and ``watch``.

The poller sleeps the policy's delay (or the server's ``Retry-After``), polls
once through the client, and reports each *change* of status or steps to an
optional callback. ``outcome()`` runs it to the end inside one anyio cancel
scope whose deadline is the wait's, so the deadline also ends a hanging
request or a retry, and no request starts after it; ``watch`` calls ``next()``
itself, with a scope per step, so that it never yields inside a scope.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from ._results import structure_result
from .errors import PollTimeout
from .models import Execution, Outcome, Snapshot, Status
from .providers.base import Request

if TYPE_CHECKING:
    from .client import AsyncClient

__all__ = ["Poller"]

logger = logging.getLogger("workflow_trigger")


class Poller:
    """Polls one execution on the policy's schedule; the loop shared by wait and watch."""

    __slots__ = ("_request", "_seen", "client", "execution", "last", "on_change", "polls")

    def __init__(
        self,
        client: AsyncClient,
        execution: Execution,
        first: Snapshot | None,
        on_change: Callable[[Snapshot], object] | None = None,
    ) -> None:
        self.client = client
        self.execution = execution
        self.last = first
        self.polls = 0
        self.on_change = on_change
        self._seen: tuple[Any, ...] | None = None
        self._request: Request | None = None
        if first is not None:
            self.changed(first)

    def changed(self, snapshot: Snapshot) -> bool:
        """Whether ``snapshot`` differs from the last one reported (and report it if so)."""
        key = (snapshot.status, snapshot.steps)
        if key == self._seen:
            return False
        self._seen = key
        if self.on_change is not None:
            self.on_change(snapshot)
        return True

    @property
    def done(self) -> bool:
        return self.last is not None and self.last.status.is_terminal

    def delay(self) -> float:
        """Seconds until the next poll: the server's hint, else the policy's schedule."""
        hint = self.last.retry_after if self.last is not None else None
        if hint is not None:
            return hint
        return self.client.poll_policy.delay(self.polls, self.client._rng)

    async def next(self) -> Snapshot:
        await anyio.sleep(self.delay())
        return await self.poll()

    async def poll(self, deadline: float | None = None) -> Snapshot:
        """One poll now (``deadline``: see ``Transport.send``)."""
        if self._request is None:
            self._request = self.client.provider.status_request(self.execution)
        self.last = snapshot = await self.client._status(self.execution, self._request, deadline)
        self.polls += 1
        self.changed(snapshot)
        return snapshot

    async def outcome(
        self, deadline: float, result_type: type[Any] | None, cancel_remote_on_exit: bool
    ) -> Outcome[Any]:
        """Poll until the execution ends (then fetch its result, where the platform keeps
        it apart) and build its ``Outcome``; ``PollTimeout`` once ``deadline`` passes."""
        try:
            with anyio.CancelScope(deadline=deadline) as scope:
                while not self.done:
                    await self.next()
                outcome = await self.finish(result_type)
        except BaseException:
            if cancel_remote_on_exit:
                await self._cancel_remote()
            raise
        if scope.cancelled_caught:
            if cancel_remote_on_exit:
                await self._cancel_remote()
            raise self.timeout_error()
        return outcome

    async def finish(
        self, result_type: type[Any] | None, deadline: float | None = None, **item: Any
    ) -> Outcome[Any]:
        """The ``Outcome`` of the ended execution (its result fetched first where the
        platform keeps it apart); ``item`` adds ``run_many``'s fields."""
        assert self.last is not None
        snapshot = await self._fetch_result(self.last, deadline)
        execution, converter = self.execution, self.client._converter
        succeeded = snapshot.status is Status.SUCCEEDED
        return Outcome(
            execution=execution,
            status=snapshot.status,
            result=(
                structure_result(converter, snapshot.result, result_type)
                if result_type is not None and succeeded
                else snapshot.result
            ),
            raw_result=snapshot.result,
            error=snapshot.error,
            artifacts=snapshot.artifacts,
            designated_output=snapshot.designated_output,
            polls=self.polls,
            started_at=snapshot.started_at or execution.triggered_at,
            finished_at=snapshot.finished_at or snapshot.observed_at,
            raw_status=snapshot.raw_status,
            **item,
        )

    async def _fetch_result(self, snapshot: Snapshot, deadline: float | None) -> Snapshot:
        provider = self.client.provider
        request = provider.result_request(self.execution, snapshot)
        if request is None:
            return snapshot
        response = await self.client._send(request, deadline)
        return provider.parse_result(self.execution, snapshot, response)

    async def _cancel_remote(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            try:
                await self.client._control(self.execution, "cancel", hold_slot=False)
            except Exception as exc:  # the caller's own exit must not be masked
                logger.warning(
                    "could not cancel execution %s remotely: %s", self.execution.execution_id, exc
                )

    def timeout_error(self) -> PollTimeout:
        ex = self.execution
        seen = f"; last status {self.last.raw_status!r}" if self.last else ""
        return PollTimeout(
            f"gave up waiting for execution {ex.execution_id} of {ex.workflow_id!r} after "
            f"{self.polls} polls{seen}. The run may still be going on: wait on the same "
            "Execution again (or Execution.from_token(token)) with a longer timeout",
            execution=ex,
            snapshot=self.last,
        )
