"""A run's own clock: it follows the monotonic clock, but can be paused and gated.

An execution's state is a function of its *run time* alone. The run time
advances with :func:`time.monotonic` while the run is going, stands still while
it is paused, and never passes ``limit`` (a gate: a run waiting for an event)
until the gate is lifted; the time spent paused or at the gate is lost, so the
run continues from where it stopped. Each change starts a new segment, which
keeps the history needed to tell *when* the run time reached a given point
(the wall-clock timestamps platforms report: started, completed, updated).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

import attrs

__all__ = ["RunClock", "catch_up", "one_instant"]

#: within one request, every run clock reads this instant: an answer shows one state
_INSTANT: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "workflow_trigger_emulator_instant", default=None
)


def _monotonic() -> float:
    instant = _INSTANT.get()
    return time.monotonic() if instant is None else instant


def catch_up() -> None:
    """Move the request's instant to now (a handler that waited for time to pass)."""
    if _INSTANT.get() is not None:
        _INSTANT.set(time.monotonic())


@contextlib.contextmanager
def one_instant() -> Iterator[None]:
    """Make every run clock read one instant meanwhile (the emulator handles each request
    in one): the status a response shows, its steps and what the counters note of it
    then agree, however long the handler takes to render them."""
    token = _INSTANT.set(time.monotonic())
    try:
        yield
    finally:
        _INSTANT.reset(token)


@attrs.frozen
class _Segment:
    since: float  # monotonic time the segment began
    base: float  # run time at that moment
    going: bool  # whether run time advances during the segment
    limit: float | None  # a gate run time cannot pass during the segment


@attrs.define
class RunClock:
    """Run time since ``started`` (a :func:`time.monotonic` value)."""

    started: float
    limit: float | None = None
    _segments: list[_Segment] = attrs.field(init=False, factory=list)

    def __attrs_post_init__(self) -> None:
        self._segments.append(_Segment(self.started, 0.0, True, self.limit))

    def _value(self, segment: _Segment, at: float) -> float:
        at = max(at, segment.since)  # an instant taken before this segment began
        value = segment.base + (at - segment.since if segment.going else 0.0)
        return value if segment.limit is None else min(value, segment.limit)

    def now(self) -> float:
        """The run time at this moment."""
        return self._value(self._segments[-1], _monotonic())

    @property
    def going(self) -> bool:
        """False while paused or stopped."""
        return self._segments[-1].going

    @property
    def gated(self) -> bool:
        return self._segments[-1].limit is not None

    @property
    def last_change(self) -> float:
        """The monotonic time of the last pause, resume, advance or lifted gate."""
        return self._segments[-1].since

    def _next(self, *, going: bool, limit: float | None) -> None:
        at = _monotonic()
        self._segments.append(_Segment(at, self._value(self._segments[-1], at), going, limit))

    def pause(self) -> None:
        if self.going:
            self._next(going=False, limit=self._segments[-1].limit)

    def resume(self) -> None:
        if not self.going:
            self._next(going=True, limit=self._segments[-1].limit)

    def advance(self, seconds: float) -> None:
        """Move the run time forward by ``seconds`` at once (never past a gate)."""
        if seconds < 0:
            raise ValueError("a run clock only moves forward")
        at = _monotonic()
        last = self._segments[-1]
        base = self._value(last, at) + seconds
        if last.limit is not None:
            base = min(base, last.limit)
        self._segments.append(_Segment(at, base, last.going, last.limit))

    def lift(self) -> None:
        """Remove the gate: the run time continues from the gate, not from the real time."""
        if self.gated:
            self._next(going=self.going, limit=None)

    def reached_at(self, point: float) -> float | None:
        """The monotonic time at which the run time reached ``point``, or ``None`` if not yet."""
        now = _monotonic()
        for index, segment in enumerate(self._segments):
            if segment.base >= point:
                return segment.since
            if not segment.going or (segment.limit is not None and point > segment.limit):
                continue
            at = segment.since + (point - segment.base)
            end = self._segments[index + 1].since if index + 1 < len(self._segments) else now
            if at <= end:
                return at
        return None
