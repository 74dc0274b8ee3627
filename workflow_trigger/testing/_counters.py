"""Request counters and event-based waits, for exact assertions in tests.

:class:`Counters` is a base of the emulator core: the counters are attributes
of the emulator itself. The core calls the ``_count_*`` hooks as requests
arrive; every change sets the pending wait events, and each waiter re-checks
its own condition, so no test ever needs to sleep to synchronise.

``in_flight`` counts executions started by a trigger whose terminal status no
status response has shown yet: a run stays in flight until the client has
*seen* it finish, which is what a client's concurrency limit controls.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import anyio

from ._execution import Execution
from ._records import RequestRecord

__all__ = ["Counters"]


class Counters:
    """What the emulator received; ``reset_counters()`` zeroes it."""

    requests: int
    trigger_requests: int
    poll_requests: int
    idempotent_replays: int
    request_log: list[RequestRecord]
    max_in_flight: int

    def __init__(self) -> None:
        self._waiters: list[anyio.Event] = []
        self.in_flight = 0
        self.reset_counters()

    def reset_counters(self) -> None:
        """Zero the request counters and the log; ``max_in_flight`` restarts at ``in_flight``.

        Executions, scenarios and faults are kept: runs in progress can still be polled.
        """
        self.requests = 0
        self.trigger_requests = 0
        self.poll_requests = 0
        self.idempotent_replays = 0
        self.request_log = []
        self._operations: Counter[str] = Counter()
        self._triggers: Counter[str] = Counter()
        self._polls: Counter[str] = Counter()
        self.max_in_flight = self.in_flight
        self._notify()

    def triggers(self, workflow_id: str) -> int:
        """Trigger requests that started an execution of ``workflow_id``."""
        return self._triggers[workflow_id]

    def polls(self, execution_id: str) -> int:
        """Status requests received for ``execution_id``, whatever their answer."""
        return self._polls[execution_id]

    def operation_requests(self, operation: str) -> int:
        """Requests received for one operation: ``"trigger"``, ``"poll"``, ``"result"``,
        ``"control"`` or ``"download"``, whatever their answer."""
        return self._operations[operation]

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` is true, re-checking whenever a counter moves.

        Bound it with ``anyio.fail_after``: it waits for as long as it takes.
        """
        while not condition():
            event = anyio.Event()
            self._waiters.append(event)
            await event.wait()

    async def wait_for_polls(self, execution_id: str, n: int) -> None:
        await self.wait_until(lambda: self.polls(execution_id) >= n)

    async def wait_for_triggers(self, workflow_id: str, n: int) -> None:
        await self.wait_until(lambda: self.triggers(workflow_id) >= n)

    async def wait_for_requests(self, n: int) -> None:
        await self.wait_until(lambda: self.requests >= n)

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for event in waiters:
            event.set()

    def _count_request(self, record: RequestRecord) -> None:
        self.request_log.append(record)
        self.requests += 1
        self._notify()

    def _count_operation(self, record: RequestRecord) -> None:
        if record.operation is not None:
            self._operations[record.operation] += 1
        if record.operation == "trigger":
            self.trigger_requests += 1
        elif record.operation == "poll":
            self.poll_requests += 1
            if record.execution_id is not None:
                self._polls[record.execution_id] += 1
        self._notify()

    def _count_start(self, execution: Execution) -> None:
        self._triggers[execution.workflow_id] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self._notify()

    def _count_replay(self, record: RequestRecord, execution: Execution) -> None:
        record.replayed = execution
        self.idempotent_replays += 1
        self._notify()

    def _count_observed(self, execution: Execution) -> None:
        if execution.finished and not execution.observed_finished:
            execution.observed_finished = True
            self.in_flight -= 1
            self._notify()
