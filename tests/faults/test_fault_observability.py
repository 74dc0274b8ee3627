"""What a user can observe, on every platform: ``on_event`` and the ``workflow_trigger`` logger.

The README: ``on_event`` receives a ``RequestEvent`` per HTTP exchange (kind,
method, redacted URL, status, elapsed), a ``RetryEvent`` per retry and an
``OutcomeEvent`` per execution that ends; an exception in the hook is logged
and never fails a run. Logging goes to ``logging.getLogger("workflow_trigger")``
(NullHandler by default): DEBUG per request (method, redacted URL, status,
time), INFO per execution that ends, WARNING per retry.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import pytest
from _platforms import Platform

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, Fault, Scenario

MakeClient = Callable[..., wt.AsyncClient]

_OPERATION_KIND = {"trigger": "trigger", "poll": "status", "result": "result"}


def _faults(platform: Platform, emulator: Emulator) -> int:
    """Arm one retryable fault per request kind the platform makes; how many retries follow."""
    emulator.add_fault(Fault.rate_limited(1, 0.05, on="trigger", platform=platform.emulated))
    retries = 1
    if platform.polls:
        emulator.add_fault(Fault.server_error(1, 503, on="poll", platform=platform.emulated))
        emulator.add_fault(Fault.drop(2, on="poll", platform=platform.emulated))
        retries += 2
    if platform.fetches_results:
        emulator.add_fault(Fault.server_error(1, 502, on="result", platform=platform.emulated))
        retries += 1
    return retries


async def test_on_event_reports_every_request_retry_and_outcome(
    any_platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.scenario(any_platform.workflow, Scenario(duration=0.05, result={"x": 1}))
    expected_retries = _faults(any_platform, emulator)
    events: list[wt.Event] = []
    async with make_client(any_platform.provider(emulator), on_event=events.append) as client:
        outcome = await client.run(any_platform.workflow)
    assert outcome.ok and emulator.faults_remaining == 0

    requests = [e for e in events if isinstance(e, wt.RequestEvent)]
    retries = [e for e in events if isinstance(e, wt.RetryEvent)]
    ends = [e for e in events if isinstance(e, wt.OutcomeEvent)]
    # one RequestEvent per exchange, in order; aiohttp's own silent resend of a dropped GET
    # is one exchange for the SDK, two requests for the emulator
    log = [r for r in emulator.request_log if r.operation is not None]
    answered = [r for r in log if r.status is not None]
    assert [e.status for e in requests if e.status is not None] == [r.status for r in answered]
    assert [_OPERATION_KIND[r.operation] for r in answered] == [  # type: ignore[index]
        e.kind for e in requests if e.status is not None
    ]
    for event in requests:
        assert event.provider == any_platform.kind
        assert event.method == ("POST" if event.kind == "trigger" else "GET")
        assert event.elapsed >= 0
        assert (event.status is None) == (event.error is not None)
        assert not [s for s in any_platform.secrets(emulator) if s in event.url]
    lost = [e for e in requests if e.status is None]
    assert len(lost) == (1 if any_platform.polls else 0)
    assert all("lost the connection" in (e.error or "") for e in lost)

    assert len(retries) == expected_retries
    assert retries[0].kind == "trigger" and retries[0].reason == "HTTP 429"
    assert retries[0].delay >= 0.05  # at least Retry-After
    # the 503 and the drop hit the same poll: its second and third attempts
    assert [e.attempt for e in retries] == [2, 2, 3, 2][:expected_retries]
    assert all(e.provider == any_platform.kind for e in retries)

    assert len(ends) == 1
    assert ends[0].execution == outcome.execution and ends[0].status is wt.Status.SUCCEEDED
    assert ends[0].polls == outcome.polls and ends[0].provider == any_platform.kind


async def test_on_event_reports_failed_runs_and_lost_requests_too(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.scenario("broken", Scenario(duration=0.0, status="failed"))
    retry = wt.RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.02)
    events: list[wt.Event] = []
    provider = platform.provider(emulator)
    async with make_client(provider, retry=retry, on_event=events.append) as client:
        failed = await client.run("broken")
        emulator.add_fault(Fault.drop(1, on="trigger", platform=platform.emulated))
        with pytest.raises(wt.TransportError):
            await client.run(platform.workflow)
    assert failed.status is wt.Status.FAILED
    ends = [e for e in events if isinstance(e, wt.OutcomeEvent)]
    assert [e.status for e in ends] == [wt.Status.FAILED]
    last = [e for e in events if isinstance(e, wt.RequestEvent)][-1]
    assert last.kind == "trigger"
    assert last.status is None and last.error and "lost the connection" in last.error
    failure = events[-1]  # the call ended with the error, after its last request
    assert isinstance(failure, wt.FailureEvent) and failure.error == "TransportError"
    assert failure.job == last.job and failure.execution is None


async def test_a_failing_hook_is_logged_and_never_fails_a_run(
    any_platform: Platform,
    emulator: Emulator,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def broken(event: wt.Event) -> None:
        calls.append(type(event).__name__)
        raise RuntimeError("metrics backend down")

    _faults(any_platform, emulator)
    async with make_client(any_platform.provider(emulator), on_event=broken) as client:
        assert (await client.run(any_platform.workflow)).ok
    assert {"RequestEvent", "RetryEvent", "OutcomeEvent"} <= set(calls)
    hook_errors = [r for r in caplog.records if "on_event hook raised" in r.getMessage()]
    assert len(hook_errors) == len(calls)


_REQUEST_LINE = re.compile(r"^(GET|POST) (\S+) -> (\S.*) in (\d+\.\d{3})s$")


async def test_logs_debug_per_request_info_per_end_warning_per_retry(
    any_platform: Platform,
    emulator: Emulator,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="workflow_trigger")
    emulator.scenario(any_platform.workflow, Scenario(duration=0.05, result={"x": 1}))
    expected_retries = _faults(any_platform, emulator)
    events: list[wt.Event] = []
    async with make_client(any_platform.provider(emulator), on_event=events.append) as client:
        outcome = await client.run(any_platform.workflow)
    assert outcome.ok and outcome.execution is not None
    records = [r for r in caplog.records if r.name == "workflow_trigger"]

    lines = [_REQUEST_LINE.match(r.getMessage()) for r in records if r.levelno == logging.DEBUG]
    requests = [m for m in lines if m is not None]
    request_events = [e for e in events if isinstance(e, wt.RequestEvent)]
    assert len(requests) == len(request_events)
    for match, event in zip(requests, request_events, strict=True):
        method, url, said, _ = match.groups()
        assert (method, url) == (event.method, event.url)
        assert said == (str(event.status) if event.status is not None else event.error)
        path = unquote(urlsplit(url).path)
        assert not [s for s in any_platform.secrets(emulator) if s in url or s in path]

    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == expected_retries
    assert all(r.getMessage().startswith("retrying ") for r in warnings)

    infos = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert len(infos) == 1
    assert outcome.execution.execution_id in infos[0] and "ended" in infos[0]
    assert not [r for r in records if r.levelno >= logging.ERROR]


async def test_one_info_line_per_execution_that_ends_in_a_batch(
    platform: Platform,
    emulator: Emulator,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="workflow_trigger")
    emulator.scenario("broken", Scenario(duration=0.0, status="failed"))
    async with make_client(platform.provider(emulator)) as client:
        outcomes = [
            o async for o in client.run_many(platform.workflow, [{"n": i} for i in range(3)])
        ]
        failed = await client.run("broken")
    ids = {o.execution.execution_id for o in outcomes if o.execution} | {
        failed.execution.execution_id if failed.execution else ""
    }
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 4
    assert {i for i in ids if any(i in line for line in infos)} == ids


def test_the_logger_has_a_null_handler_and_leaves_the_root_alone() -> None:
    logger = logging.getLogger("workflow_trigger")
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)
    assert logger.level == logging.NOTSET and logger.propagate
