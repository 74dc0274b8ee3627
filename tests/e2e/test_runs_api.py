"""The Runs API end to end: wt.AsyncClient (and wt.Client) against the emulator over loopback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anyio
import attrs
import pytest
from _support import FAST, FAST_RETRY

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, Fault, Scenario

from ._platforms import SentBodies, body_of, logged, runs_api_for

#: most tests send more requests than the default 500/min burst lets through at once
UNLIMITED = 10_000.0


@pytest.fixture
async def client(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> AsyncIterator[wt.AsyncClient]:
    async with make_client(runs_api_for(emulator), rate_limit=UNLIMITED) as c:
        yield c


# -- trigger ----------------------------------------------------------------------------


async def test_trigger_sends_input_connection_and_idempotency_key_as_given(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    provider = runs_api_for(emulator, connection_id="conn_default")
    async with make_client(provider, rate_limit=UNLIMITED) as client:
        outcome = await client.run(
            "wf_abc123",
            {"customerId": "cus_1", "amount": 9900},
            idempotency_key="order-1",
            connection_id="conn_live",
        )
        await client.trigger("wf_abc123", {"n": 2})
        await client.trigger("wf_abc123")
    assert outcome.ok
    first, second, third = logged(emulator, "trigger")
    assert first.method == "POST" and first.path == "/api/v1/workflows/wf_abc123/run"
    assert first.headers["x-api-key"] == emulator.runs_api_api_key
    assert first.headers["Content-Type"] == "application/json"
    assert body_of(first) == {
        "input": {"customerId": "cus_1", "amount": 9900},
        "connectionId": "conn_live",
        "idempotencyKey": "order-1",
    }
    assert body_of(second) == {"input": {"n": 2}, "connectionId": "conn_default"}
    assert body_of(third) == {"input": {}, "connectionId": "conn_default"}
    run = emulator.executions[0]
    assert run.extra["connectionId"] == "conn_live" and run.extra["idempotencyKey"] == "order-1"
    assert [r.path for r in logged(emulator, "poll")] == [
        f"/api/v1/runs/{outcome.execution.execution_id}"  # type: ignore[union-attr]
    ] * outcome.polls


async def test_without_a_connection_none_is_sent(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    await client.trigger("wf", {"a": 1})
    assert body_of(logged(emulator, "trigger")[0]) == {"input": {"a": 1}}


async def test_the_workflow_version_is_kept_on_the_execution_and_its_token(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.runs_api_workflow_version = 7
    emulator.scenario("wf", Scenario(result={"ok": True}))
    ex = await client.trigger("wf")
    assert ex.provider == "runs_api" and ex.workflow_id == "wf"
    assert ex.execution_id == emulator.executions[0].id and ex.execution_id.startswith("run_")
    assert ex.extras["workflow_version"] == "7"
    resumed = wt.Execution.from_token(ex.token())
    assert resumed.extras["workflow_version"] == "7"
    assert (await client.wait(resumed)).result == {"ok": True}


# -- status, result, error, steps -------------------------------------------------------


async def test_output_is_the_result_and_steps_are_snapshot_steps(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    output = {"invoice": "in_1", "lines": [1, 2]}
    emulator.scenario("wf", Scenario(result=output, steps=("fetch", "bill")))
    outcome = await client.run("wf", {"customerId": "cus_1"})
    assert outcome.ok and outcome.status is wt.Status.SUCCEEDED
    assert outcome.raw_status == "completed"
    assert outcome.result == output and outcome.error is None
    assert outcome.execution is not None
    assert emulator.polls(outcome.execution.execution_id) == outcome.polls == 1
    snap = await client.status(outcome.execution)
    assert snap.result == output
    assert snap.steps == (
        wt.Step(id="fetch", status=wt.Status.SUCCEEDED, raw_status="completed"),
        wt.Step(id="bill", status=wt.Status.SUCCEEDED, raw_status="completed"),
    )


@attrs.frozen
class Invoice:
    invoice: str
    lines: list[int]


async def test_result_type_structures_the_output(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(result={"invoice": "in_1", "lines": [1, 2], "extra": 0}))
    outcome = await client.run("wf", result_type=Invoice)
    assert outcome.result == Invoice(invoice="in_1", lines=[1, 2])
    emulator.scenario("wf", Scenario(result={"invoice": 3}))
    with pytest.raises(wt.ResultTypeError, match="lines"):
        await client.run("wf", result_type=Invoice)


async def test_watch_reports_each_step_as_the_run_progresses(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=30.0, queued=0.0, steps=("a", "b", "c"), result=3))
    ex = await client.trigger("wf")
    run = emulator.executions[0]
    seen: list[tuple[str, tuple[str, ...]]] = []
    with anyio.fail_after(5):
        async for snap in client.watch(ex):
            seen.append((snap.raw_status, tuple(s.raw_status for s in snap.steps)))
            assert all(isinstance(s, wt.Step) for s in snap.steps)
            run.advance(10.0)  # one step further: the next poll shows the change
    assert seen == [
        ("running", ("running", "pending", "pending")),
        ("running", ("completed", "running", "pending")),
        ("running", ("completed", "completed", "running")),
        ("completed", ("completed", "completed", "completed")),
    ]


async def test_on_snapshot_reports_the_pending_phase_then_the_end(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=30.0, steps=("only",), result=1))
    seen: list[wt.Snapshot] = []

    def advance(snap: wt.Snapshot) -> None:
        seen.append(snap)
        emulator.executions[0].advance(30.0)

    outcome = await client.run("wf", on_snapshot=advance)
    assert outcome.ok
    assert [(s.status, s.steps[0].status) for s in seen] == [
        (wt.Status.PENDING, wt.Status.PENDING),
        (wt.Status.SUCCEEDED, wt.Status.SUCCEEDED),
    ]


@pytest.mark.parametrize(
    ("scenario", "message", "code"),
    [
        (
            Scenario(status="failed", error={"code": "CARD_DECLINED", "message": "declined"}),
            "declined",
            "CARD_DECLINED",
        ),
        (
            Scenario(status="failed", steps=("fetch", "charge")),
            "Step 'charge' failed",
            "STEP_ERROR",
        ),
        (Scenario(status="timeout"), "Workflow execution timed out", "TIMEOUT"),
    ],
)
async def test_a_failed_run_is_an_outcome_with_the_platform_error(
    client: wt.AsyncClient, emulator: Emulator, scenario: Scenario, message: str, code: str
) -> None:
    emulator.scenario("wf", scenario)
    outcome = await client.run("wf")
    assert outcome.status is wt.Status.FAILED and not outcome.ok
    assert outcome.raw_status == "failed" and outcome.result is None
    assert outcome.error == wt.ErrorInfo(
        message=message, code=code, details={"code": code, "message": message}
    )
    with pytest.raises(wt.WorkflowFailed, match=message):
        outcome.unwrap()


async def test_a_run_cancelled_elsewhere_ends_cancelled(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=30.0, steps=("a", "b")))
    ex = await client.trigger("wf")
    emulator.executions[0].terminate()  # the platform's cancel, from its dashboard
    outcome = await client.wait(ex)
    assert outcome.status is wt.Status.CANCELLED and outcome.raw_status == "cancelled"
    snap = await client.status(ex)
    assert [s.status for s in snap.steps] == [wt.Status.CANCELLED, wt.Status.PENDING]


# -- the error envelope ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "details"),
    [
        ({}, [{"path": ["customerId"], "message": "Required"}]),
        ({"runs_api_details_form": "field"}, [{"field": "customerId", "message": "Required"}]),
        ({"runs_api_error_success": False}, [{"path": ["customerId"], "message": "Required"}]),
    ],
)
async def test_validation_error_is_invalid_input_with_the_details_kept(
    client: wt.AsyncClient,
    emulator: Emulator,
    settings: dict[str, Any],
    details: list[dict[str, Any]],
) -> None:
    for name, value in settings.items():
        setattr(emulator, name, value)
    emulator.scenario("wf", Scenario(required_inputs=("customerId",)))
    with pytest.raises(wt.InvalidInputError) as info:
        await client.run("wf", {"amount": 9900})
    error = info.value
    assert error.status_code == 400 and error.code == "VALIDATION_ERROR"
    assert error.details == details
    assert "Input validation failed" in str(error) and ".details" in str(error)
    assert emulator.triggers("wf") == 0 and emulator.trigger_requests == 1


async def test_a_body_the_platform_refuses_is_invalid_input(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    with pytest.raises(wt.InvalidInputError) as info:
        await client.trigger("wf", ["not", "an", "object"])
    assert info.value.details == [{"path": ["input"], "message": "Expected object, received array"}]


async def test_not_found_is_not_found_error(client: wt.AsyncClient, emulator: Emulator) -> None:
    emulator.strict_workflows = True
    with pytest.raises(wt.NotFoundError) as info:
        await client.trigger("no-such-workflow")
    assert info.value.status_code == 404 and info.value.code == "NOT_FOUND"
    assert "Workflow not found" in str(info.value)

    emulator.scenario("wf", Scenario())
    emulator.runs_api_connection_ids = {"conn_known"}
    with pytest.raises(wt.NotFoundError, match="Connection not found"):
        await client.trigger("wf", connection_id="conn_unknown")
    assert (await client.run("wf", connection_id="conn_known")).ok

    ex = await client.trigger("wf")
    forged = wt.Execution(
        provider="runs_api",
        workflow_id="wf",
        execution_id="run_missing",
        triggered_at=ex.triggered_at,
    )
    with pytest.raises(wt.NotFoundError, match="Run not found"):
        await client.wait(forged)
    assert emulator.polls("run_missing") == 1  # a 404 is not retried


async def test_an_inactive_workflow_is_an_api_error_saying_it_must_be_active(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.runs_api_workflow_status["wf"] = "draft"
    with pytest.raises(wt.APIError) as info:
        await client.run("wf")
    error = info.value
    assert type(error) is wt.APIError
    assert error.status_code == 400 and error.code == "INVALID_STATUS"
    assert "must be active" in str(error) and "draft" in str(error)
    assert emulator.trigger_requests == 1 and emulator.triggers("wf") == 0


async def test_rate_limited_is_rate_limit_error_after_the_retries(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    attempts = FAST_RETRY.attempts
    emulator.add_fault(
        Fault.rate_limited(count=attempts, retry_after=0.01, on="trigger", platform="runs_api")
    )
    with pytest.raises(wt.RateLimitError) as info:
        await client.trigger("wf")
    assert info.value.code == "RATE_LIMITED" and info.value.status_code == 429
    assert info.value.retry_after == pytest.approx(0.01)
    assert emulator.trigger_requests == attempts and emulator.triggers("wf") == 0

    emulator.add_fault(
        Fault.rate_limited(count=attempts - 1, retry_after=0.01, on="trigger", platform="runs_api")
    )
    assert (await client.run("wf")).ok  # within the budget, a 429 is only a delay
    assert emulator.trigger_requests == 2 * attempts and emulator.triggers("wf") == 1


async def test_a_read_only_key_is_an_authentication_error_naming_the_scope(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    read_only = emulator.runs_api_read_only_key
    assert read_only is not None
    async with make_client(runs_api_for(emulator), rate_limit=UNLIMITED) as full:
        ex = await full.trigger("wf")
    async with make_client(runs_api_for(emulator, api_key=read_only)) as client:
        with pytest.raises(wt.AuthenticationError) as info:
            await client.trigger("wf")
        assert (await client.wait(ex)).ok  # runs:read is enough to poll
    error = info.value
    assert error.status_code == 403 and error.code == "FORBIDDEN"
    assert "x-api-key" in str(error) and "'workflows:execute'" in str(error)
    assert read_only not in str(error) and read_only not in repr(error)

    async with make_client(runs_api_for(emulator, api_key="wfk_wrong_key")) as client:
        with pytest.raises(wt.AuthenticationError, match="x-api-key") as wrong:
            await client.trigger("wf")
    assert wrong.value.status_code == 401 and "wfk_wrong_key" not in str(wrong.value)


# -- idempotency ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault.server_error(status=503, on="trigger", platform="runs_api"),
        Fault.server_error(status=500, on="trigger", platform="runs_api"),
        Fault.drop(on="trigger", platform="runs_api"),
        Fault.slow(delay=1.5, on="trigger", platform="runs_api"),
    ],
    ids=["503", "500", "dropped", "timed-out"],
)
async def test_a_trigger_with_a_key_is_resent_with_the_same_key_after_a_failure_once_sent(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator, fault: Fault
) -> None:
    emulator.scenario("wf", Scenario(result="once"))
    emulator.add_fault(fault)
    sent = SentBodies()
    async with (
        aiohttp.ClientSession(trace_configs=[sent.config]) as session,
        make_client(
            # long enough for a loaded machine's answer, short against the slow fault's 1.5 s
            runs_api_for(emulator),
            rate_limit=UNLIMITED,
            session=session,
            request_timeout=0.5,
        ) as client,
    ):
        outcome = await client.run("wf", {"order": 1}, idempotency_key="order-1")
    assert outcome.ok and outcome.result == "once"
    first, second = logged(emulator, "trigger")
    assert first.fault == fault.kind and first.started is None
    assert second.fault is None and second.started is emulator.executions[0]
    tries = sent.json()[:2]
    assert tries[0] == tries[1] == {"input": {"order": 1}, "idempotencyKey": "order-1"}
    assert len(emulator.executions) == 1 and emulator.triggers("wf") == 1


async def test_the_same_key_again_returns_the_existing_run(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(result={"n": 1}))
    first = await client.run("wf", idempotency_key="order-3")
    emulator.add_fault(Fault.server_error(status=502, on="trigger", platform="runs_api"))
    second = await client.run("wf", idempotency_key="order-3")
    assert first.execution is not None and second.execution is not None
    assert second.execution.execution_id == first.execution.execution_id
    assert second.result == {"n": 1}
    assert len(emulator.executions) == 1 and emulator.idempotent_replays == 1
    assert emulator.trigger_requests == 3


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.server_error(status=503, on="trigger", platform="runs_api"), wt.ServerError),
        (Fault.drop(on="trigger", platform="runs_api"), wt.TransportError),
    ],
    ids=["503", "dropped"],
)
async def test_without_a_key_a_trigger_is_never_resent_once_sent(
    client: wt.AsyncClient, emulator: Emulator, fault: Fault, error: type[Exception]
) -> None:
    emulator.add_fault(fault)
    with pytest.raises(error):
        await client.run("wf")
    assert emulator.trigger_requests == 1


async def test_a_refused_connection_is_retried_even_without_a_key(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    async with make_client(runs_api_for(emulator, base_url=emulator.refused_url)) as client:
        with pytest.raises(wt.TransportError, match="could not connect") as info:
            await client.trigger("wf")
        assert client.requests_sent == FAST_RETRY.attempts
    assert emulator.requests == 0 and emulator.runs_api_api_key not in str(info.value)


# -- rate limits -------------------------------------------------------------------------


async def test_a_runs_api_client_spaces_its_requests_to_500_a_minute_by_default(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    provider = runs_api_for(emulator)
    assert provider.default_rate_limit == pytest.approx(500 / 60)
    async with make_client(provider) as client:
        assert client.rate_limit == pytest.approx(500 / 60)
        start = time.monotonic()  # the emulator stamps requests with the same clock
        async with anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(client.trigger, "wf", {"i": i})
    times = sorted(r.received_at - start for r in logged(emulator, "trigger"))
    assert len(times) == 12
    # The limiter lets about a second's worth through at once (500/60 = 8.3 requests),
    # then one every 60/500 s: request n cannot go out before (n - 7.3) intervals.
    interval, burst = 60 / 500, 500 / 60
    for n, at in enumerate(times):
        assert at >= (n - (burst - 1)) * interval - 0.001, (n, times)
    async with make_client(provider, rate_limit=100.0) as faster:
        assert faster.rate_limit == 100.0


@pytest.mark.parametrize("reset", ["epoch", "seconds"])
async def test_ratelimit_headers_make_the_client_hold_instead_of_collecting_429s(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator, reset: str
) -> None:
    emulator.runs_api_rate_limit = 3
    emulator.runs_api_rate_limit_reset = reset
    events: list[wt.Event] = []
    async with make_client(
        runs_api_for(emulator), rate_limit=UNLIMITED, on_event=events.append
    ) as client:
        for i in range(3):
            await client.trigger("wf", {"i": i})
        last = logged(emulator, "trigger")[-1]
        assert last.status == 200
        with anyio.move_on_after(0.3) as scope:  # the window stays spent for a minute
            await client.trigger("wf", {"i": 3})
        assert scope.cancelled_caught
    assert emulator.trigger_requests == 3 and emulator.triggers("wf") == 3
    assert all(r.status == 200 for r in emulator.request_log)
    assert [e.status for e in events if isinstance(e, wt.RequestEvent)] == [200] * 3


async def test_the_platform_429_answer_is_retried_after_its_retry_after(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.add_fault(Fault.rate_limited(count=1, retry_after=0.2, on="poll", platform="runs_api"))
    outcome = await client.run("wf")
    assert outcome.ok
    polls = logged(emulator, "poll")
    assert [p.status for p in polls] == [429, 200]
    assert polls[1].received_at - polls[0].received_at >= 0.2


# -- cancel ------------------------------------------------------------------------------


async def test_cancel_is_unsupported_and_sends_nothing(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=30.0))
    ex = await client.trigger("wf")
    sent, received = client.requests_sent, emulator.requests
    with pytest.raises(wt.UnsupportedOperation, match="documents no path to cancel"):
        await client.cancel(ex)
    for control in (client.pause, client.resume):
        with pytest.raises(wt.UnsupportedOperation):
            await control(ex)
    with pytest.raises(wt.UnsupportedOperation):
        await client.send_event(ex, "approval", {})
    assert client.requests_sent == sent and emulator.requests == received
    assert emulator.executions[0].state == "pending"


# -- batches and the blocking client ------------------------------------------------------


async def test_run_many_runs_every_payload_once(client: wt.AsyncClient, emulator: Emulator) -> None:
    emulator.scenario("wf", Scenario(duration=(0.0, 0.05), result=lambda p: {"got": p}))
    payloads = [{"i": i} for i in range(25)]
    outcomes = [o async for o in client.run_many("wf", payloads, concurrency=5)]
    assert sorted(o.index for o in outcomes if o.index is not None) == list(range(25))
    assert all(o.ok and o.result == {"got": {"i": o.index}} for o in outcomes)
    assert emulator.triggers("wf") == 25 and emulator.max_in_flight <= 5


async def test_a_journaled_batch_sends_one_idempotency_key_per_item(
    client: wt.AsyncClient, emulator: Emulator, tmp_path: Any
) -> None:
    emulator.scenario("wf", Scenario(result=1))
    journal = tmp_path / "batch.sqlite"
    outcomes = [
        o async for o in client.run_many("wf", [{"i": i} for i in range(4)], journal=journal)
    ]
    assert all(o.ok for o in outcomes)
    keys = [body_of(r).get("idempotencyKey") for r in logged(emulator, "trigger")]
    assert len(keys) == 4 and len(set(keys)) == 4 and all(isinstance(k, str) for k in keys)


def test_the_blocking_client_runs_a_workflow(threaded_emulator: Emulator) -> None:
    emu = threaded_emulator
    emu.scenario("wf", Scenario(result={"sync": True}, steps=("one",)))
    with wt.Client(
        runs_api_for(emu), poll=FAST, retry=FAST_RETRY, seed=0, rate_limit=UNLIMITED
    ) as client:
        outcome = client.run("wf", {"a": 1}, idempotency_key="sync-1")
        assert outcome.ok and outcome.result == {"sync": True}
        assert outcome.execution is not None
        assert [s.id for s in client.status(outcome.execution).steps] == ["one"]
        with pytest.raises(wt.UnsupportedOperation):
            client.cancel(outcome.execution)
        outcomes = list(client.run_many("wf", [{}, {}, {}]))
    assert len(outcomes) == 3 and all(o.ok for o in outcomes)
    assert emu.triggers("wf") == 4
