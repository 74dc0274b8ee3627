"""The life of one execution, as a pure state machine: what happens to one run.

Theory of operation. After its trigger, an execution is polled until the
platform reports a terminal status. This module decides everything about
that life that does not need I/O:

- when the next poll is due: the server's ``Retry-After`` hint (bounded by the
  retry policy's ceiling), else the poll policy's schedule, never past the
  deadline;
- whether a snapshot is a *change* worth reporting (status or steps differ);
- whether the deadline has passed;
- the ``Outcome`` once the run ended (its result structured into the caller's
  type), or the ``PollTimeout`` once the deadline passed.

It imports neither anyio nor aiohttp and reads no clock: the scheduler passes
``now`` (the event loop's time) in and does the waiting and the requests. So
every branch is testable with plain values, without sleeping.
"""

from __future__ import annotations

import math
import random
from typing import Any

import cattrs

from ._results import structure_result
from .errors import PollTimeout
from .models import Execution, Outcome, Snapshot, Status
from .policies import PollPolicy

__all__ = ["ExecutionState"]

#: a poll due this soon is due now (one wake of the scheduler serves polls due together)
EARLY = 0.001


class ExecutionState:
    """One execution from its first snapshot (or none) to its outcome."""

    __slots__ = ("deadline", "execution", "last", "max_hint", "policy", "polls", "rng")

    def __init__(
        self,
        execution: Execution,
        *,
        policy: PollPolicy,
        rng: random.Random,
        deadline: float = math.inf,
        max_hint: float = math.inf,
        first: Snapshot | None = None,
    ) -> None:
        self.execution = execution
        self.policy = policy
        self.rng = rng
        self.deadline = deadline
        #: the longest server hint honoured as the next poll's delay
        self.max_hint = max_hint
        self.last: Snapshot | None = None
        self.polls = 0
        if first is not None:
            self.observe(first, polled=False)

    # -- observations -------------------------------------------------------------------

    def observe(self, snapshot: Snapshot, *, polled: bool = True) -> bool:
        """Take ``snapshot`` in; whether it is a change of status or steps (from the last
        one: what was seen before it is not kept)."""
        last, self.last = self.last, snapshot
        if polled:
            self.polls += 1
        return last is None or snapshot.status != last.status or snapshot.steps != last.steps

    @property
    def done(self) -> bool:
        """Whether the platform reported the end of the run."""
        return self.last is not None and self.last.status.is_terminal

    # -- time ---------------------------------------------------------------------------

    def delay(self) -> float:
        """Seconds until the next poll: the server's hint, else the policy's schedule."""
        hint = self.last.retry_after if self.last is not None else None
        if hint is not None:
            return min(hint, self.max_hint)
        return self.policy.delay(self.polls, self.rng)

    def next_poll_at(self, now: float, early: float = 0.0) -> float:
        """When the next poll is due (the deadline if that comes first). A poll on the
        policy's own schedule is due ``early`` seconds sooner (the scheduler takes a window
        of entries in one wake and brings them forward by half of it, so that the window is
        centred on their time); a server's hint is never brought forward."""
        hinted = self.last is not None and self.last.retry_after is not None
        return min(now + self.delay() - (0.0 if hinted else early), self.deadline)

    def expired(self, now: float) -> bool:
        """Whether the deadline has passed (or is due within ``EARLY``)."""
        return now + EARLY >= self.deadline

    # -- the end ------------------------------------------------------------------------

    def outcome(
        self,
        ended: Snapshot,
        converter: cattrs.Converter,
        result_type: type[Any] | None,
        **item: Any,
    ) -> Outcome[Any]:
        """The ``Outcome`` of the ended run; ``ended`` is its last snapshot with the result
        (fetched apart where the platform keeps it apart); ``item`` adds a batch's fields.
        Raises ``ResultTypeError`` when the result does not fit ``result_type``."""
        execution = self.execution
        succeeded = ended.status is Status.SUCCEEDED
        return Outcome(
            execution=execution,
            status=ended.status,
            result=(
                structure_result(converter, ended.result, result_type)
                if result_type is not None and succeeded
                else ended.result
            ),
            raw_result=ended.result,
            error=ended.error,
            artifacts=ended.artifacts,
            designated_output=ended.designated_output,
            polls=self.polls,
            started_at=ended.started_at or execution.triggered_at,
            finished_at=ended.finished_at or ended.observed_at,
            raw_status=ended.raw_status,
            **item,
        )

    def timeout_error(self) -> PollTimeout:
        """What the caller gets when the deadline passed before the run ended."""
        ex = self.execution
        seen = f"; last status {self.last.raw_status!r}" if self.last else ""
        return PollTimeout(
            f"gave up waiting for execution {ex.execution_id} of {ex.workflow_id!r} after "
            f"{self.polls} polls{seen}. The run may still be going on: wait on the same "
            "Execution again (or Execution.from_token(token)) with a longer timeout",
            execution=ex,
            snapshot=self.last,
        )
