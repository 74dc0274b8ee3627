"""Poll schedules and retry backoff, as pure functions of their inputs.

Nothing here sleeps or reads a clock: the client asks for the next delay and
does the waiting itself, so every branch is testable without time passing.
"""

from __future__ import annotations

import email.utils
import math
import random
from datetime import datetime, timezone
from typing import Any

import attrs

from .errors import InvalidInputError

__all__ = ["PollPolicy", "RetryPolicy", "parse_retry_after"]


def check_positive(
    name: str,
    value: Any,
    *,
    unit: str = "seconds",
    allow_none: bool = False,
    allow_inf: bool = False,
) -> None:
    """Refuse anything but a positive number of ``unit`` (None or infinity where allowed)."""
    if value is None and allow_none:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise InvalidInputError(f"{name} must be a positive number of {unit}, got {value!r}")
    if math.isinf(value) and not allow_inf:
        raise InvalidInputError(f"{name} must be a finite number of {unit}, got {value!r}")


def check_count(name: str, value: Any, *, what: str = "an int") -> None:
    """Refuse anything but an int >= 1 (a bool is not a count)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInputError(f"{name} must be {what} >= 1, got {value!r}")


def _positive(_: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    no_end = attribute.name == "timeout"  # None or infinity: wait without end
    check_positive(attribute.name, value, allow_none=no_end, allow_inf=no_end)


def _fraction(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
        raise InvalidInputError(
            f"{attribute.name} is a fraction of each gap (0.1 spreads it by +/- 10%): it must "
            f"be a number between 0 and 1, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class PollPolicy:
    """When to poll the status of an execution, and for how long.

    The first poll comes ``interval`` seconds after the trigger; each next gap
    is the previous one times ``multiplier``, capped at ``max_interval``, and
    spread by +/- ``jitter`` (a fraction) so that thousands of pollers do not
    wake in one herd. ``timeout`` is the default overall deadline of
    ``wait``/``run`` (None: wait without end).
    """

    interval: float = attrs.field(default=1.5, validator=_positive)
    max_interval: float = attrs.field(default=30.0, validator=_positive)
    multiplier: float = attrs.field(default=1.0)
    jitter: float = attrs.field(default=0.1, validator=_fraction)
    timeout: float | None = attrs.field(default=120.0, validator=_positive)

    @multiplier.validator
    def _check_multiplier(self, attribute: attrs.Attribute[Any], value: float) -> None:
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not 1 <= value < math.inf
        ):
            raise InvalidInputError(f"multiplier must be a number >= 1, got {value!r}")

    def __attrs_post_init__(self) -> None:
        if self.max_interval < self.interval:
            raise InvalidInputError(
                f"max_interval ({self.max_interval:g} s) is below interval "
                f"({self.interval:g} s), so every gap would be cut to it: pass "
                f"max_interval >= interval, e.g. PollPolicy(interval={self.interval:g}, "
                f"max_interval={max(self.interval, 30.0):g})"
            )

    def delay(self, poll: int, rng: random.Random) -> float:
        """Seconds to wait before poll number ``poll`` (0 is the first)."""
        base = min(self.interval * self.multiplier ** min(poll, 64), self.max_interval)
        if self.jitter:
            base *= 1 + rng.uniform(-self.jitter, self.jitter)
        return max(base, 0.0)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Retries of one request: ``attempts`` counts every try, the first included.

    Backoff is exponential with full jitter (a uniform draw between 0 and
    ``backoff * 2**retry``, capped at ``max_backoff``); a server's
    ``Retry-After`` raises the wait to at least what it asks, up to
    ``max_retry_after`` seconds: a server asking for longer ends the request at
    once (``RateLimitError`` with its ``retry_after``), and a poll hint (a
    ``Retry-After`` on a status answer, a spent rate-limit window) is cut to it.
    """

    attempts: int = attrs.field(default=4)
    backoff: float = attrs.field(default=0.5, validator=_positive)
    max_backoff: float = attrs.field(default=20.0, validator=_positive)
    max_retry_after: float = attrs.field(default=120.0, validator=_positive)

    @attempts.validator
    def _check_attempts(self, attribute: attrs.Attribute[Any], value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidInputError(
                f"attempts counts every try, the first included: it must be an int >= 1, "
                f"got {value!r}"
            )

    def poll_hint(self, header: str | None, reported: float | None) -> float | None:
        """Seconds until the next poll as the server hints it: ``header`` (a status
        answer's ``Retry-After``) else ``reported`` (the provider's reading of the
        answer), never more than ``max_retry_after``; None without a hint."""
        hint = parse_retry_after(header)
        if hint is None:
            hint = reported
        return None if hint is None else min(hint, self.max_retry_after)

    def delay(self, retry: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0 is the first retry)."""
        ceiling = min(self.backoff * 2 ** min(retry, 64), self.max_backoff)
        wait = rng.uniform(0, ceiling)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header (seconds, or an HTTP date) as seconds from ``now``.

    None for a missing or unreadable header; never negative.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        now = now or datetime.now(timezone.utc)
        seconds = (when - now).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(seconds, 0.0)
