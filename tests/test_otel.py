"""workflow_trigger.otel against the emulator, read back from the SDK's in-memory exporter
and metric reader (providers made per test: the global ones are never set)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import anyio
import pytest
from _support import FAST, FAST_RETRY, codika_for
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import workflow_trigger as wt
from workflow_trigger import otel
from workflow_trigger.testing import Emulator, Fault, Scenario

CODIKA = {"workflow_trigger.platform": "codika"}


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


@pytest.fixture
def hook(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> otel.Instrumentation:
    return otel.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)


@pytest.fixture
def instrumented(
    make_client: Callable[..., wt.AsyncClient], hook: otel.Instrumentation
) -> Callable[..., wt.AsyncClient]:
    def make(provider: wt.Provider | None = None, **kwargs: Any) -> wt.AsyncClient:
        return make_client(provider, on_event=hook, **kwargs)

    return make


def executions(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith("workflow_trigger run")]


def requests(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]


def children(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [
        s
        for s in exporter.get_finished_spans()
        if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]


def points(reader: InMemoryMetricReader, name: str) -> dict[frozenset[tuple[str, Any]], Any]:
    """The metric's data points by attribute set: a sum's value, a histogram's point."""
    data = reader.get_metrics_data()
    found: dict[frozenset[tuple[str, Any]], Any] = {}
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        key = frozenset(dict(point.attributes or {}).items())
                        found[key] = point if isinstance(point, HistogramDataPoint) else point.value
    return found


def key(**attributes: Any) -> frozenset[tuple[str, Any]]:
    return frozenset(attributes.items())


def dotted(**attributes: Any) -> frozenset[tuple[str, Any]]:
    """``key`` with ``__`` in names standing for dots (``workflow_trigger__status``)."""
    return frozenset((name.replace("__", "."), value) for name, value in attributes.items())


async def test_a_run_is_a_span_under_the_callers_span_with_a_child_per_request(
    instrumented: Callable[..., wt.AsyncClient],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    reader: InMemoryMetricReader,
    hook: otel.Instrumentation,
    emulator: Emulator,
) -> None:
    emulator.scenario("main", Scenario(duration=0.05, result={"ok": True}))
    async with instrumented() as client:
        with tracer_provider.get_tracer("test").start_as_current_span("handler") as handler:
            outcome = await client.run("main", {"text": "hi"})

    (run,) = executions(exporter)
    assert run.name == "workflow_trigger run main"
    assert run.kind is SpanKind.INTERNAL
    assert run.parent is not None and run.parent.span_id == handler.get_span_context().span_id
    assert run.context is not None
    assert run.context.trace_id == handler.get_span_context().trace_id
    assert dict(run.attributes or {}) == {
        "workflow_trigger.platform": "codika",
        "workflow_trigger.workflow.id": "main",
        "workflow_trigger.execution.id": outcome.execution.execution_id,
        "workflow_trigger.status": "succeeded",
        "workflow_trigger.polls": outcome.polls,
    }
    assert run.status.status_code is StatusCode.UNSET

    sent = requests(exporter)
    assert children(exporter, run) == sent  # every request is the run's, none elsewhere
    assert len(sent) == emulator.requests == 1 + outcome.polls
    trigger, *polls = sorted(sent, key=lambda s: s.start_time or 0)
    assert trigger.name == "POST trigger"
    attributes = dict(trigger.attributes or {})
    assert attributes["http.request.method"] == "POST"
    assert attributes["workflow_trigger.request.kind"] == "trigger"
    assert str(attributes["url.full"]).startswith(f"{emulator.base_url}/webhook/")
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == emulator.port
    assert 200 <= int(str(attributes["http.response.status_code"])) < 300
    assert "http.request.resend_count" not in attributes and "error.type" not in attributes
    assert {p.name for p in polls} == {"GET status"}
    assert all(dict(p.attributes or {})["http.response.status_code"] == 200 for p in polls)
    for span in sent:  # after the fact, but within the run and in order
        assert span.start_time is not None and span.end_time is not None
        assert run.start_time is not None and run.end_time is not None
        assert run.start_time <= span.start_time < span.end_time <= run.end_time

    assert points(reader, "workflow_trigger.executions.active") == {key(**CODIKA): 0}
    assert points(reader, "workflow_trigger.executions.ended") == {
        dotted(workflow_trigger__platform="codika", workflow_trigger__status="succeeded"): 1
    }
    durations = points(reader, "workflow_trigger.request.duration")
    by_kind = {dict(k)["workflow_trigger.request.kind"]: p.count for k, p in durations.items()}
    assert by_kind == {"trigger": 1, "status": outcome.polls}
    assert points(reader, "workflow_trigger.request.retries") == {}
    assert hook.open_executions == 0


async def test_a_failed_run_ends_its_span_in_error_with_the_platforms_code(
    instrumented: Callable[..., wt.AsyncClient],
    exporter: InMemorySpanExporter,
    reader: InMemoryMetricReader,
    emulator: Emulator,
) -> None:
    error = {"message": "boom", "type": "node_failure", "code": "E1"}
    emulator.scenario("bad", Scenario(duration=0.03, status="failed", error=error))
    async with instrumented() as client:
        outcome = await client.run("bad", {})
    assert outcome.status is wt.Status.FAILED

    (run,) = executions(exporter)
    attributes = dict(run.attributes or {})
    assert attributes["workflow_trigger.status"] == "failed"
    assert attributes["workflow_trigger.error.code"] == "E1"
    assert attributes["error.type"] == "failed"
    assert run.status.status_code is StatusCode.ERROR and run.status.description == "E1"
    assert points(reader, "workflow_trigger.executions.ended") == {
        dotted(workflow_trigger__platform="codika", workflow_trigger__status="failed"): 1
    }


def ended_without_an_outcome(
    run: Any, reader: InMemoryMetricReader, hook: otel.Instrumentation, error: str
) -> None:
    """A call that raised: its span in error, counted as ended by that error, none open."""
    assert run.status.status_code is StatusCode.ERROR
    assert points(reader, "workflow_trigger.executions.ended") == {
        dotted(workflow_trigger__platform="codika", error__type=error): 1
    }
    assert points(reader, "workflow_trigger.executions.active") == {key(**CODIKA): 0}
    assert hook.open_executions == 0


async def test_a_poll_timeout_ends_its_span_in_error(
    instrumented: Callable[..., wt.AsyncClient],
    exporter: InMemorySpanExporter,
    reader: InMemoryMetricReader,
    hook: otel.Instrumentation,
    emulator: Emulator,
) -> None:
    emulator.scenario("slow", Scenario(duration=60))
    async with instrumented() as client:
        with anyio.fail_after(5), pytest.raises(wt.PollTimeout) as caught:
            await client.run("slow", {}, timeout=0.2)

    (run,) = executions(exporter)
    attributes = dict(run.attributes or {})
    assert attributes["error.type"] == "PollTimeout"
    assert attributes["workflow_trigger.execution.id"] == caught.value.execution.execution_id
    assert attributes["workflow_trigger.polls"] == emulator.poll_requests > 0
    assert "workflow_trigger.status" not in attributes
    ended_without_an_outcome(run, reader, hook, "PollTimeout")


async def test_a_cancelled_call_ends_its_span_in_error_at_once(
    instrumented: Callable[..., wt.AsyncClient],
    exporter: InMemorySpanExporter,
    reader: InMemoryMetricReader,
    hook: otel.Instrumentation,
    emulator: Emulator,
) -> None:
    emulator.scenario("slow", Scenario(duration=60))
    async with instrumented() as client:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(client.run, "slow", {})
                await emulator.wait_until(lambda: emulator.poll_requests >= 2)
                assert hook.open_executions == 1
                assert points(reader, "workflow_trigger.executions.active") == {key(**CODIKA): 1}
                tasks.cancel_scope.cancel()
        # ended when the caller went away, not when the client closed
        (run,) = executions(exporter)

    attributes = dict(run.attributes or {})
    assert attributes["error.type"] == "Cancelled"
    ended_without_an_outcome(run, reader, hook, "Cancelled")


async def test_retries_are_counted_and_each_try_is_a_span(
    instrumented: Callable[..., wt.AsyncClient],
    exporter: InMemorySpanExporter,
    reader: InMemoryMetricReader,
    emulator: Emulator,
) -> None:
    emulator.scenario("main", Scenario(duration=0.0))
    emulator.add_fault(Fault.server_error(count=2, on="poll"))
    async with instrumented() as client:
        outcome = await client.run("main", {})
    assert outcome.ok and outcome.polls == 1

    (run,) = executions(exporter)
    assert run.status.status_code is StatusCode.UNSET
    tries = sorted(
        (s for s in requests(exporter) if s.name == "GET status"), key=lambda s: s.start_time or 0
    )
    assert [dict(s.attributes or {}).get("http.request.resend_count") for s in tries] == [
        None,
        1,
        2,
    ]
    failed = [dict(s.attributes or {}) for s in tries[:2]]
    assert [a["error.type"] for a in failed] == [
        str(a["http.response.status_code"]) for a in failed
    ]
    assert all(int(str(a["http.response.status_code"])) >= 500 for a in failed)
    assert [s.status.status_code for s in tries] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    retries = [e for e in run.events if e.name == "retry"]
    assert [dict(e.attributes or {})["workflow_trigger.retry.attempt"] for e in retries] == [2, 3]

    assert points(reader, "workflow_trigger.request.retries") == {
        dotted(
            workflow_trigger__platform="codika",
            workflow_trigger__request__kind="status",
            http__request__method="GET",
        ): 2
    }
    durations = points(reader, "workflow_trigger.request.duration")
    polls = {
        dict(k).get("http.response.status_code"): p.count
        for k, p in durations.items()
        if dict(k)["workflow_trigger.request.kind"] == "status"
    }
    assert sum(polls.values()) == 3 and polls[200] == 1


async def test_a_rate_limit_wait_is_counted_and_timed(
    instrumented: Callable[..., wt.AsyncClient],
    exporter: InMemorySpanExporter,
    reader: InMemoryMetricReader,
    emulator: Emulator,
) -> None:
    emulator.scenario("main", Scenario(duration=0.0))
    # 1.5 requests a second, a burst of 1.5: the trigger goes at once, its one poll waits
    async with instrumented(rate_limit=1.5) as client:
        outcome = await client.run("main", {})
    assert outcome.polls == 1

    status = dotted(workflow_trigger__platform="codika", workflow_trigger__request__kind="status")
    assert points(reader, "workflow_trigger.rate_limit.waits") == {status: 1}
    (timed,) = points(reader, "workflow_trigger.rate_limit.wait_duration").values()
    assert timed.count == 1 and 0 < timed.sum <= 1 / 1.5
    (run,) = executions(exporter)
    (wait,) = [e for e in run.events if e.name == "rate_limit_wait"]
    assert dict(wait.attributes or {})["workflow_trigger.rate_limit.delay"] == timed.sum


async def test_run_many_gives_one_span_per_item_under_the_batchs_caller(
    instrumented: Callable[..., wt.AsyncClient],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    reader: InMemoryMetricReader,
    hook: otel.Instrumentation,
    emulator: Emulator,
) -> None:
    emulator.scenario("main", Scenario(duration=(0.0, 0.05), result={"ok": True}))
    payloads = [{"n": n} for n in range(20)]
    async with instrumented() as client:
        with tracer_provider.get_tracer("test").start_as_current_span("batch") as batch:
            outcomes = [o async for o in client.run_many("main", payloads, concurrency=8)]
    assert len(outcomes) == 20 and all(o.ok for o in outcomes)

    runs = executions(exporter)
    assert len(runs) == 20
    assert all(
        r.parent is not None and r.parent.span_id == batch.get_span_context().span_id for r in runs
    )
    ids = {dict(r.attributes or {})["workflow_trigger.execution.id"] for r in runs}
    assert ids == {o.execution.execution_id for o in outcomes if o.execution is not None}
    for run in runs:
        polls = dict(run.attributes or {})["workflow_trigger.polls"]
        assert len(children(exporter, run)) == 1 + int(str(polls))
    assert len(requests(exporter)) == emulator.requests
    assert points(reader, "workflow_trigger.executions.ended") == {
        dotted(workflow_trigger__platform="codika", workflow_trigger__status="succeeded"): 20
    }
    assert points(reader, "workflow_trigger.executions.active") == {key(**CODIKA): 0}
    (timed,) = points(reader, "workflow_trigger.execution.duration").values()
    assert timed.count == 20
    assert hook.open_executions == 0


async def test_requests_of_no_execution_are_spans_under_the_callers_span(
    instrumented: Callable[..., wt.AsyncClient],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    reader: InMemoryMetricReader,
    hook: otel.Instrumentation,
    emulator: Emulator,
) -> None:
    emulator.scenario("main", Scenario(duration=0.03))
    async with instrumented() as client:
        with tracer_provider.get_tracer("test").start_as_current_span("handler") as handler:
            execution = await client.trigger("main", {})
            await client.status(execution)
            seen = [snapshot async for snapshot in client.watch(execution)]
    assert seen[-1].status is wt.Status.SUCCEEDED

    assert executions(exporter) == []  # a bare trigger, a status and a watch have no outcome
    sent = requests(exporter)
    assert len(sent) == emulator.requests >= 3
    assert all(
        s.parent is not None and s.parent.span_id == handler.get_span_context().span_id
        for s in sent
    )
    assert points(reader, "workflow_trigger.executions.active") == {}
    assert hook.open_executions == 0


async def test_a_blocking_client_is_traced_under_the_calling_threads_span(
    emulator: Emulator,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    hook: otel.Instrumentation,
) -> None:
    emulator.scenario("main", Scenario(duration=0.03))
    tracer = tracer_provider.get_tracer("test")

    def script() -> tuple[wt.Outcome[Any], int]:
        provider = codika_for(emulator)
        with (
            wt.Client(provider, poll=FAST, retry=FAST_RETRY, on_event=hook) as c,
            tracer.start_as_current_span("script") as span,
        ):
            return c.run("main", {}), span.get_span_context().span_id

    outcome, script_span = await anyio.to_thread.run_sync(script)
    (run,) = executions(exporter)
    assert run.parent is not None and run.parent.span_id == script_span
    assert dict(run.attributes or {})["workflow_trigger.status"] == "succeeded"
    assert len(children(exporter, run)) == 1 + outcome.polls
    assert hook.open_executions == 0


async def test_the_users_own_hook_gets_every_event_after_it(
    make_client: Callable[..., wt.AsyncClient],
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    exporter: InMemorySpanExporter,
    emulator: Emulator,
) -> None:
    emulator.scenario("main", Scenario(duration=0.03))
    seen: list[tuple[str, int]] = []

    def mine(event: wt.Event) -> None:  # what the spans finished so far say when it runs
        seen.append((type(event).__name__, len(exporter.get_finished_spans())))

    hook = otel.instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider, then=mine
    )
    async with make_client(on_event=hook) as client:
        outcome = await client.run("main", {})

    names = [name for name, _ in seen]
    assert names == ["StartEvent"] + ["RequestEvent"] * (1 + outcome.polls) + ["OutcomeEvent"]
    # each event reached the user's hook after its span was recorded
    assert [finished for _, finished in seen] == list(range(len(seen)))


def _secret_forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote(secret)}


SECRETS = {
    "codika_api_key": "ck_live_S3CR3T_codika_7f1d9e",
    "pinkfish_api_key": "pf_live_S3CR3T+pink=fish~77",
}


@pytest.mark.parametrize(
    ("name", "build", "workflow"),
    [
        (
            "codika_query",
            lambda emu: wt.Codika(
                emu.codika_instance_id,
                api_key=emu.codika_api_key,
                base_url=emu.base_url,
                auth="query",
            ),
            "main",
        ),
        ("pinkfish", lambda emu: wt.Pinkfish(emu.pinkfish_api_key, base_url=emu.base_url), "t1"),
        (
            "pinkfish_webhook",
            lambda emu: wt.Pinkfish(emu.pinkfish_api_key, base_url=emu.base_url, trigger="webhook"),
            "t1",
        ),
    ],
)
async def test_no_secret_in_any_span_or_metric(
    name: str,
    build: Callable[[Emulator], wt.Provider],
    workflow: str,
    hook: otel.Instrumentation,
    exporter: InMemorySpanExporter,
    reader: InMemoryMetricReader,
) -> None:
    async with Emulator(seed=0, **SECRETS) as emu:
        emu.scenario(workflow, Scenario(duration=0.03, result={"ok": True}))
        # retries, a dropped connection and a failed run: every kind of message is recorded
        emu.add_fault(Fault.server_error(count=1, on="poll"))
        emu.add_fault(Fault.drop(count=1, on="poll"))
        async with wt.AsyncClient(build(emu), poll=FAST, retry=FAST_RETRY, on_event=hook) as c:
            outcome = await c.run(workflow, {})
        assert outcome.ok
        secret = SECRETS["codika_api_key" if name.startswith("codika") else "pinkfish_api_key"]
        # the key was on the wire where the test says it is
        urls = [f"{r.path}?{dict(r.query)}" for r in emu.request_log]
        assert any(form in url for url in urls for form in _secret_forms(secret))

    spans = exporter.get_finished_spans()
    assert executions(exporter) and any(s.status.status_code is StatusCode.ERROR for s in spans)
    recorded: list[str] = []
    for span in spans:
        recorded.append(span.name)
        recorded.append(span.status.description or "")
        recorded.extend(f"{k}={v}" for k, v in (span.attributes or {}).items())
        for event in span.events:
            recorded.append(event.name)
            recorded.extend(f"{k}={v}" for k, v in (event.attributes or {}).items())
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    recorded.extend(f"{k}={v}" for k, v in (point.attributes or {}).items())
    assert any("url.full=" in r for r in recorded)
    for form in _secret_forms(secret):
        assert not [r for r in recorded if form in r]
