"""An execution: one run, its neutral state machine and its timestamps.

A run's state follows from its :class:`~._clock.RunClock` alone, so no
background task drives it. It is *pending* for ``queued_for`` seconds of run
time, *running* until ``duration``, then finished with the scenario's
outcome. Pausing stops the run time (*paused*); a scenario with
``wait_for_event`` stops it at half the duration (*waiting*) until the event
arrives; terminating ends the run at once (*terminated*).
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta
from typing import Any, Literal, cast

import anyio
import attrs

from ._clock import RunClock, catch_up
from ._model import Scenario

__all__ = ["Execution", "State"]

#: Neutral run states: the platform routes map them to their own words.
State = Literal[
    "pending", "running", "paused", "waiting", "success", "failed", "error", "timeout", "terminated"
]


@attrs.define
class Execution:
    """One run started by a trigger. Its state is computed from its run clock.

    ``extra`` holds platform data (instance ids, idempotency keys, tokens);
    ``events`` the events delivered to the run, as ``{"type", "payload"}``.
    """

    id: str
    platform: str
    workflow_id: str
    payload: Any
    scenario: Scenario
    duration: float
    result: Any
    created_at: datetime
    started_at: float = attrs.field(factory=time.monotonic)
    #: True once a status response has shown this run's terminal status.
    observed_finished: bool = False
    extra: dict[str, Any] = attrs.field(factory=dict)
    events: list[dict[str, Any]] = attrs.field(factory=list)
    terminated_at: float | None = None
    clock: RunClock = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        gate = self.duration / 2 if self.scenario.wait_for_event is not None else None
        self.clock = RunClock(self.started_at, gate)

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    @property
    def registering(self) -> bool:
        return self.elapsed() < self.scenario.register_delay

    @property
    def queued_for(self) -> float:
        """Seconds of run time spent pending before running."""
        queued = self.scenario.queued
        return min(self.duration, self.duration / 10 if queued is None else queued)

    @property
    def finished(self) -> bool:
        if self.terminated_at is not None:
            return True
        return not self.clock.gated and self.clock.now() >= self.duration

    @property
    def status(self) -> str:
        """``"pending"`` until finished, then the scenario's status (or ``"terminated"``)."""
        if self.terminated_at is not None:
            return "terminated"
        return self.scenario.status if self.finished else "pending"

    @property
    def state(self) -> State:
        """The neutral state: pending, running, paused, waiting, an outcome or terminated."""
        if self.terminated_at is not None:
            return "terminated"
        if self.finished:
            return cast(State, self.scenario.status)  # validated: one of OUTCOMES
        if not self.clock.going:
            return "paused"
        if self.clock.gated and self.clock.now() >= (self.clock.limit or 0.0):
            return "waiting"
        return "pending" if self.clock.now() < self.queued_for else "running"

    def steps_completed(self, count: int | None = None) -> int:
        """How many of ``count`` steps (default: ``scenario.steps``) have completed.

        Step *k* completes at *k/count* of the duration; a failed run fails on its last.
        """
        if count is None:
            count = len(self.scenario.steps)
        if count == 0:
            return 0
        done = count if self.duration == 0 else int(self.clock.now() / self.duration * count)
        if self.finished and self.status != "success":
            done = min(done, count - 1)
        return min(done, count)

    async def settle(self, limit: float = math.inf) -> bool:
        """Wait up to ``limit`` seconds for the run to finish; return whether it has."""
        deadline = time.monotonic() + limit
        catch_up()
        while not self.finished:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            clock = self.clock
            step = self.duration - clock.now() if clock.going and not clock.gated else 0.02
            await anyio.sleep(min(left, max(step, 0.001)))
            catch_up()  # the answer shows the run as it is now, not as the request came
        return True

    # -- control ---------------------------------------------------------------

    def pause(self) -> None:
        self.clock.pause()

    def resume(self) -> None:
        self.clock.resume()

    def advance(self, seconds: float) -> None:
        """Move the run ``seconds`` forward at once, as if they had passed (not past a
        gate: a waiting run still needs its event). For tests that must not sleep."""
        if self.terminated_at is None:
            self.clock.advance(seconds)

    def terminate(self) -> None:
        self.clock.pause()
        self.terminated_at = time.monotonic()

    def deliver(self, event_type: str, payload: Any) -> None:
        """Record an event; the awaited type lets a waiting run continue (even if sent early)."""
        self.events.append({"type": event_type, "payload": payload})
        if event_type == self.scenario.wait_for_event:
            self.clock.lift()

    # -- timestamps ------------------------------------------------------------

    def wall(self, monotonic: float) -> datetime:
        """The wall-clock time of a :func:`time.monotonic` value during this run."""
        return self.created_at + timedelta(seconds=monotonic - self.started_at)

    def running_since(self) -> float | None:
        """When the run left its pending phase (monotonic), ``None`` if it has not."""
        return self.clock.reached_at(self.queued_for)

    def ended_at(self) -> float | None:
        """When the run finished (monotonic), ``None`` if it has not."""
        if self.terminated_at is not None:
            return self.terminated_at
        return self.clock.reached_at(self.duration) if self.finished else None

    def updated_at(self) -> float:
        """When the state last changed (monotonic): a transition or a control request."""
        moments = [self.started_at, self.clock.last_change, self.ended_at()]
        moments.append(self.running_since())
        if self.clock.limit is not None:  # the gate: when the run began waiting
            moments.append(self.clock.reached_at(self.clock.limit))
        return max(moment for moment in moments if moment is not None)
