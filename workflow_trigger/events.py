"""Events a client reports to an ``on_event`` hook, for metrics without parsing logs.

    def record(event: wt.Event) -> None:
        if isinstance(event, wt.RequestEvent):
            REQUESTS.labels(event.kind, event.status).inc()

    client = wt.AsyncClient(provider, on_event=record)

A hook runs on the client's event loop and must not block; an exception it
raises is logged and otherwise ignored, so a metrics bug never fails a run.
It runs in the contextvars context of the call it reports on (the ``run`` or
``run_many`` that started the execution), so a trace or request id set by the
caller is visible in it. Every event of one call on one execution carries the
same ``job`` number (None for a request that belongs to no execution, such as
a download); a ``wait``, a ``run`` and each batch item report their start
(``StartEvent``) and their end (``OutcomeEvent`` or ``FailureEvent``), a bare
``trigger()`` or ``watch()`` only their requests.
"""

from __future__ import annotations

import attrs

from .models import Execution, Status

__all__ = [
    "Event",
    "FailureEvent",
    "OutcomeEvent",
    "RateLimitEvent",
    "RequestEvent",
    "RetryEvent",
    "StartEvent",
]


@attrs.frozen(kw_only=True)
class StartEvent:
    """A call started on one execution: a trigger (then ``execution`` is None) or a wait."""

    provider: str
    job: int
    workflow_id: str
    execution: Execution | None = None


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
    #: which try of this request it was (1: the first)
    attempt: int = 1
    job: int | None = None


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
    job: int | None = None


@attrs.frozen(kw_only=True)
class RateLimitEvent:
    """A request waited ``delay`` seconds for the rate limit (the client's, or a window the
    platform said was spent)."""

    provider: str
    kind: str
    delay: float
    job: int | None = None


@attrs.frozen(kw_only=True)
class OutcomeEvent:
    """An execution ended (as the platform reported it) and its outcome was built."""

    provider: str
    execution: Execution
    status: Status
    polls: int
    job: int | None = None
    workflow_id: str = ""
    error_code: str | None = None  # the platform's, for a run that failed


@attrs.frozen(kw_only=True)
class FailureEvent:
    """A call on one execution ended with an exception (``error``: its class name)
    rather than an outcome: a refused trigger, ``PollTimeout``, ``ResultTypeError``..."""

    provider: str
    job: int
    workflow_id: str
    execution: Execution | None
    error: str
    polls: int = 0


Event = StartEvent | RequestEvent | RetryEvent | RateLimitEvent | OutcomeEvent | FailureEvent
