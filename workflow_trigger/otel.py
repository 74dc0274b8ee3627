"""OpenTelemetry traces and metrics for a client, from its ``on_event`` hook.

    from workflow_trigger import otel as wt_otel

    client = wt.AsyncClient(provider, on_event=wt_otel.instrument())

How this works. ``instrument()`` returns a hook that turns the client's events
(``workflow_trigger.events``) into spans and metrics; the core knows nothing
of it. The client calls the hook in the contextvars context of the call that
started the execution, so OpenTelemetry's current span there is the caller's:

- ``StartEvent`` (a ``wait``, a ``run``, a batch item) starts the execution's
  span, ``workflow_trigger run {workflow_id}``, a child of the caller's span.
  It stays open (the hook keeps it by the event's ``job`` number) until the
  ``OutcomeEvent`` or ``FailureEvent`` that ends it, and is then let go: what
  the hook holds is one small entry per execution in flight, never more.
- ``RequestEvent``: an HTTP exchange has ended, so its CLIENT span is made
  after the fact (start = now - elapsed), a child of its execution's span, or,
  for a request of no open execution (a ``download``, ``status()``, a bare
  ``trigger()`` or a ``watch()``, a remote cancel after the caller left), of
  the caller's current span. Attributes follow the HTTP client semantic
  conventions; the URL is the one the event carries, already redacted.
- ``RetryEvent`` and ``RateLimitEvent`` become span events on the execution's
  span, and counters.

Metric attributes stay low in cardinality: platform, request kind, method,
status code, outcome status, error type; no URL, workflow or execution id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from opentelemetry import metrics, trace
from opentelemetry.util.types import AttributeValue

from . import __version__
from .events import (
    Event,
    FailureEvent,
    OutcomeEvent,
    RateLimitEvent,
    RequestEvent,
    RetryEvent,
    StartEvent,
)
from .models import Status

__all__ = ["Instrumentation", "instrument"]

logger = logging.getLogger("workflow_trigger")

SCOPE = "workflow_trigger"
#: the HTTP semantic conventions' advice for http.client.request.duration
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
EXECUTION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: outcomes whose span ends in error (a remote cancel is what someone asked for)
FAILED = frozenset({Status.FAILED, Status.TIMED_OUT})

Attributes = dict[str, AttributeValue]


def instrument(
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    then: Callable[[Event], object] | None = None,
) -> Instrumentation:
    """A hook for ``on_event=`` that records spans and metrics of every call of the client.

    The providers default to the global ones (``trace.set_tracer_provider``...).
    ``then`` is a hook of your own, called with each event after this one. One
    instrumentation may serve several clients.
    """
    return Instrumentation(
        tracer_provider=tracer_provider, meter_provider=meter_provider, then=then
    )


class _Open:
    """An execution in flight: its span and what its end needs."""

    __slots__ = ("attributes", "span", "started")

    def __init__(self, span: trace.Span, attributes: Attributes) -> None:
        self.span = span
        self.attributes = attributes  # for its metrics
        self.started = time.monotonic()


class Instrumentation:
    """The ``on_event`` hook ``instrument()`` returns (call it with each event)."""

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        then: Callable[[Event], object] | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter(SCOPE, __version__, meter_provider=meter_provider)
        self._then = then
        self._open: dict[int, _Open] = {}
        self._lock = threading.Lock()  # one hook may serve clients on several threads
        self._active = meter.create_up_down_counter(
            "workflow_trigger.executions.active",
            unit="{execution}",
            description="Executions a call is working on (from its start to its end)",
        )
        self._ended = meter.create_counter(
            "workflow_trigger.executions.ended",
            unit="{execution}",
            description="Executions ended, by outcome status, or by error type when no "
            "outcome was reached",
        )
        self._execution_duration = meter.create_histogram(
            "workflow_trigger.execution.duration",
            unit="s",
            description="From a call's start on an execution to its end",
            explicit_bucket_boundaries_advisory=EXECUTION_BUCKETS,
        )
        self._request_duration = meter.create_histogram(
            "workflow_trigger.request.duration",
            unit="s",
            description="Duration of each HTTP exchange with the platform (each try)",
            explicit_bucket_boundaries_advisory=REQUEST_BUCKETS,
        )
        self._retries = meter.create_counter(
            "workflow_trigger.request.retries",
            unit="{retry}",
            description="Requests sent again after a failed try",
        )
        self._rate_limit_waits = meter.create_counter(
            "workflow_trigger.rate_limit.waits",
            unit="{wait}",
            description="Requests that waited for a rate limit",
        )
        self._rate_limit_wait_duration = meter.create_histogram(
            "workflow_trigger.rate_limit.wait_duration",
            unit="s",
            description="How long a request waited for a rate limit",
        )

    @property
    def open_executions(self) -> int:
        """How many executions have a span open now (those in flight)."""
        return len(self._open)

    def __call__(self, event: Event) -> object:
        try:
            self._record(event)
        except Exception:  # telemetry must not keep the user's own hook from its event
            logger.exception("recording %s for OpenTelemetry failed", type(event).__name__)
        return self._then(event) if self._then is not None else None

    def _record(self, event: Event) -> None:
        if isinstance(event, RequestEvent):
            self._request(event)
        elif isinstance(event, StartEvent):
            self._start(event)
        elif isinstance(event, OutcomeEvent):
            self._outcome(event)
        elif isinstance(event, FailureEvent):
            self._failure(event)
        elif isinstance(event, RetryEvent):
            self._retry(event)
        elif isinstance(event, RateLimitEvent):
            self._rate_limited(event)

    # -- one execution -------------------------------------------------------------------

    def _start(self, event: StartEvent) -> None:
        attributes: Attributes = {
            "workflow_trigger.platform": event.provider,
            "workflow_trigger.workflow.id": event.workflow_id,
        }
        if event.execution is not None:
            attributes["workflow_trigger.execution.id"] = event.execution.execution_id
        # no context given: the current one, the caller's
        span = self._tracer.start_span(
            f"workflow_trigger run {event.workflow_id}", attributes=attributes
        )
        platform: Attributes = {"workflow_trigger.platform": event.provider}
        with self._lock:
            self._open[event.job] = _Open(span, platform)
        self._active.add(1, platform)

    def _close(self, job: int | None) -> _Open | None:
        if job is None:
            return None
        with self._lock:
            entry = self._open.pop(job, None)
        if entry is not None:
            self._active.add(-1, entry.attributes)
        return entry

    def _outcome(self, event: OutcomeEvent) -> None:
        entry = self._close(event.job)
        if entry is None:
            return
        span = entry.span
        span.set_attribute("workflow_trigger.execution.id", event.execution.execution_id)
        span.set_attribute("workflow_trigger.status", event.status.value)
        span.set_attribute("workflow_trigger.polls", event.polls)
        if event.error_code is not None:
            span.set_attribute("workflow_trigger.error.code", event.error_code)
        if event.status in FAILED:
            span.set_attribute("error.type", event.status.value)
            span.set_status(trace.StatusCode.ERROR, event.error_code or event.status.value)
        span.end()
        attributes = {**entry.attributes, "workflow_trigger.status": event.status.value}
        self._ended.add(1, attributes)
        self._execution_duration.record(time.monotonic() - entry.started, attributes)

    def _failure(self, event: FailureEvent) -> None:
        entry = self._close(event.job)
        if entry is None:
            return
        span = entry.span
        if event.execution is not None:
            span.set_attribute("workflow_trigger.execution.id", event.execution.execution_id)
        span.set_attribute("workflow_trigger.polls", event.polls)
        span.set_attribute("error.type", event.error)
        span.set_status(trace.StatusCode.ERROR, event.error)
        span.end()
        attributes = {**entry.attributes, "error.type": event.error}
        self._ended.add(1, attributes)
        self._execution_duration.record(time.monotonic() - entry.started, attributes)

    # -- one request ---------------------------------------------------------------------

    def _request(self, event: RequestEvent) -> None:
        end = time.time_ns()
        entry = self._open.get(event.job) if event.job is not None else None
        parent = trace.set_span_in_context(entry.span) if entry is not None else None
        metric: Attributes = {
            "workflow_trigger.platform": event.provider,
            "workflow_trigger.request.kind": event.kind,
            "http.request.method": event.method,
        }
        if event.status is not None:
            metric["http.response.status_code"] = event.status
        error_type = _error_type(event)
        if error_type is not None:
            metric["error.type"] = error_type
        attributes: Attributes = {**metric, "url.full": event.url}
        parts = urlsplit(event.url)
        if parts.hostname:
            attributes["server.address"] = parts.hostname
            if parts.port is not None:
                attributes["server.port"] = parts.port
        if event.attempt > 1:
            attributes["http.request.resend_count"] = event.attempt - 1
        span = self._tracer.start_span(
            f"{event.method} {event.kind}",
            context=parent,
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
            start_time=end - int(event.elapsed * 1e9),
        )
        if error_type is not None:
            span.set_status(trace.StatusCode.ERROR, event.error or f"HTTP {event.status}")
        span.end(end_time=end)
        self._request_duration.record(event.elapsed, metric)

    def _retry(self, event: RetryEvent) -> None:
        attributes: Attributes = {
            "workflow_trigger.platform": event.provider,
            "workflow_trigger.request.kind": event.kind,
            "http.request.method": event.method,
        }
        self._retries.add(1, attributes)
        entry = self._open.get(event.job) if event.job is not None else None
        if entry is not None:
            entry.span.add_event(
                "retry",
                {
                    "workflow_trigger.request.kind": event.kind,
                    "workflow_trigger.retry.attempt": event.attempt,
                    "workflow_trigger.retry.delay": event.delay,
                    "workflow_trigger.retry.reason": event.reason,
                },
            )

    def _rate_limited(self, event: RateLimitEvent) -> None:
        attributes: Attributes = {
            "workflow_trigger.platform": event.provider,
            "workflow_trigger.request.kind": event.kind,
        }
        self._rate_limit_waits.add(1, attributes)
        self._rate_limit_wait_duration.record(event.delay, attributes)
        entry = self._open.get(event.job) if event.job is not None else None
        if entry is not None:
            entry.span.add_event(
                "rate_limit_wait",
                {
                    "workflow_trigger.request.kind": event.kind,
                    "workflow_trigger.rate_limit.delay": event.delay,
                },
            )


def _error_type(event: RequestEvent) -> str | None:
    """``error.type`` as the HTTP conventions have it: the status code of an error answer;
    for no answer, the exception (a ``RequestEvent`` without a status comes from the
    transport's ``TransportError``: connection, TLS, timeout)."""
    if event.status is None:
        return "TransportError" if event.error is not None else None
    return str(event.status) if event.status >= 400 else None
