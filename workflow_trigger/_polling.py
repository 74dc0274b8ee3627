"""The poll loop of one execution, shared by ``wait``, ``run``, ``run_many`` and ``watch``.

The poller sleeps the policy's delay (or the server's ``Retry-After``), polls
once through the client, and reports each *change* of status or steps to an
optional callback. It knows nothing of deadlines: the caller wraps it in an
anyio cancel scope, so a deadline also ends a hanging request or a retry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from .errors import PollTimeout
from .models import Execution, Snapshot

if TYPE_CHECKING:
    from .client import AsyncClient

__all__ = ["Poller"]


class Poller:
    """Polls one execution on the policy's schedule; the loop shared by wait and watch."""

    __slots__ = ("_seen", "client", "execution", "last", "on_change", "polls")

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

    async def next(self) -> Snapshot:
        hint = self.last.retry_after if self.last is not None else None
        delay = (
            hint
            if hint is not None
            else self.client.poll_policy.delay(self.polls, self.client._rng)
        )
        await anyio.sleep(delay)
        self.last = snapshot = await self.client._status(self.execution)
        self.polls += 1
        self.changed(snapshot)
        return snapshot

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
