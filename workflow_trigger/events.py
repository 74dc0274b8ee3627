"""Events a client reports to an ``on_event`` hook, for metrics without parsing logs.

    def record(event: wt.Event) -> None:
        if isinstance(event, wt.RequestEvent):
            REQUESTS.labels(event.kind, event.status).inc()

    client = wt.AsyncClient(provider, on_event=record)

A hook runs on the client's event loop and must not block; an exception it
raises is logged and otherwise ignored, so a metrics bug never fails a run.
"""

from __future__ import annotations

import attrs

from .models import Execution, Status

__all__ = ["Event", "OutcomeEvent", "RequestEvent", "RetryEvent"]


@attrs.frozen(kw_only=True)
class RequestEvent:
    """One HTTP exchange finished (``status`` None: no answer, ``error`` says why)."""

    provider: str
    kind: str
    method: str
    url: str  # redacted
    status: int | None
    elapsed: float
    error: str | None = None


@attrs.frozen(kw_only=True)
class RetryEvent:
    """A request is about to be sent again after ``delay`` seconds."""

    provider: str
    kind: str
    method: str
    url: str  # redacted
    attempt: int
    delay: float
    reason: str


@attrs.frozen(kw_only=True)
class OutcomeEvent:
    """An execution ended (as the platform reported it) and its outcome was built."""

    provider: str
    execution: Execution
    status: Status
    polls: int


Event = RequestEvent | RetryEvent | OutcomeEvent
