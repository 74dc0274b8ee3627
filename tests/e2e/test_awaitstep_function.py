"""AwaitStep functions end to end: one POST to the Worker's URL, the result in its reply."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from _support import FAST, FAST_RETRY

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, Fault, Scenario

from ._platforms import body_of, function_for


@pytest.fixture
async def client(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> AsyncIterator[wt.AsyncClient]:
    emulator.scenario("score-lead", Scenario(result=lambda p: {"score": len(p["lead"])}))
    async with make_client(function_for(emulator, "score-lead")) as c:
        yield c


async def test_run_is_one_post_whose_reply_is_the_result(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    outcome = await client.run("score-lead", {"lead": "ada"})
    assert outcome.ok and outcome.status is wt.Status.SUCCEEDED
    assert outcome.result == {"score": 3} and outcome.raw_status == "HTTP 200"
    assert outcome.polls == 0 and outcome.error is None
    assert emulator.requests == 1 and emulator.poll_requests == 0
    assert client.requests_sent == 1
    (call,) = emulator.request_log
    assert (call.method, call.path) == ("POST", "/fn/score-lead")
    assert call.headers["Content-Type"] == "application/json"
    assert body_of(call) == {"lead": "ada"}  # the payload itself, not wrapped
    ex = outcome.execution
    assert ex is not None and ex.provider == "awaitstep_function"
    assert ex.workflow_id == "score-lead"  # the name only labels the execution
    assert outcome.started_at is not None and outcome.finished_at is not None


async def test_the_name_given_to_run_only_labels_the_execution(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    outcome = await client.run("any label", {"lead": "grace"})
    assert outcome.result == {"score": 5}
    assert outcome.execution is not None and outcome.execution.workflow_id == "any label"
    assert [r.path for r in emulator.request_log] == ["/fn/score-lead"]


async def test_a_failing_function_is_a_failed_outcome_and_is_not_retried(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("score-lead", Scenario(status="failed", error={"message": "lead unknown"}))
    outcome = await client.run("score-lead", {"lead": "ada"})
    assert outcome.status is wt.Status.FAILED and not outcome.ok
    assert outcome.error == wt.ErrorInfo(
        message="lead unknown", details={"message": "lead unknown"}
    )
    assert outcome.raw_status == "HTTP 500" and outcome.result is None
    with pytest.raises(wt.WorkflowFailed, match="lead unknown"):
        outcome.unwrap()
    assert emulator.requests == 1 and emulator.poll_requests == 0


async def test_a_500_message_is_a_failure_outcome_not_a_retry(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.add_fault(Fault.server_error(status=500, platform="awaitstep"))
    outcome = await client.run("score-lead", {"lead": "ada"})
    assert outcome.status is wt.Status.FAILED
    assert outcome.error is not None and outcome.error.message == "Internal Server Error"
    assert emulator.requests == 1 and client.requests_sent == 1


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.server_error(status=503, platform="awaitstep"), wt.ServerError),
        (Fault.server_error(status=502, platform="awaitstep"), wt.ServerError),
        (Fault.drop(platform="awaitstep"), wt.TransportError),
    ],
    ids=["503", "502", "dropped"],
)
async def test_a_call_that_may_have_run_is_never_sent_again(
    client: wt.AsyncClient, emulator: Emulator, fault: Fault, error: type[Exception]
) -> None:
    emulator.add_fault(fault)
    with pytest.raises(error):
        await client.run("score-lead", {"lead": "ada"})
    assert emulator.requests == 1 and client.requests_sent == 1


async def test_a_429_is_retried_because_nothing_ran(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.add_fault(Fault.rate_limited(retry_after=0.01, platform="awaitstep"))
    outcome = await client.run("score-lead", {"lead": "ada"})
    assert outcome.ok and outcome.result == {"score": 3}
    assert [r.status for r in emulator.request_log] == [429, 200]
    assert emulator.triggers("score-lead") == 1


async def test_an_unknown_function_is_not_found(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    provider = wt.AwaitStepFunction(url=emulator.awaitstep_function_url("missing"))
    async with make_client(provider) as client:
        with pytest.raises(wt.NotFoundError, match="Not found"):
            await client.run("missing", {})
    assert emulator.requests == 1


async def test_headers_are_sent_and_never_shown(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    emulator.scenario("fn", Scenario(result=1))
    token = "cf_access_token_value"
    provider = function_for(emulator, "fn", headers={"Authorization": f"Bearer {token}"})
    assert token not in repr(provider)
    async with make_client(provider) as client:
        assert token not in repr(client)
        assert (await client.run("fn", {})).result == 1
    assert emulator.request_log[0].headers["Authorization"] == f"Bearer {token}"


async def test_controls_polls_and_trigger_options_are_refused_without_a_request(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    for options in ({"idempotency_key": "k"}, {"connection_id": "conn"}):
        with pytest.raises(wt.InvalidInputError, match="neither idempotency_key nor"):
            await client.run("score-lead", {"lead": "ada"}, **options)
    outcome = await client.run("score-lead", {"lead": "ada"})
    assert outcome.execution is not None
    for control in (client.cancel, client.pause, client.resume):
        with pytest.raises(wt.UnsupportedOperation):
            await control(outcome.execution)
    with pytest.raises(wt.UnsupportedOperation, match=r"client\.run"):
        await client.status(outcome.execution)
    assert emulator.requests == 1


async def test_run_many_sends_one_post_per_payload(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    leads = ["ada", "grace", "edsger", "barbara", "alan", "kay"]
    payloads = [{"lead": lead} for lead in leads]
    outcomes = [o async for o in client.run_many("score-lead", payloads, concurrency=3)]
    assert sorted(o.index for o in outcomes if o.index is not None) == list(range(len(leads)))
    assert all(o.ok and o.result == {"score": len(leads[o.index or 0])} for o in outcomes)
    assert emulator.requests == len(leads) and emulator.poll_requests == 0
    assert sorted(body_of(r)["lead"] for r in emulator.request_log) == sorted(leads)


def test_the_blocking_client_calls_a_function(threaded_emulator: Emulator) -> None:
    emu = threaded_emulator
    emu.scenario("double", Scenario(result=lambda p: {"n": p["n"] * 2}))
    with wt.Client(function_for(emu, "double"), poll=FAST, retry=FAST_RETRY) as client:
        outcome = client.run("double", {"n": 21})
        outcomes = list(client.run_many("double", [{"n": 1}, {"n": 2}]))
    assert outcome.ok and outcome.result == {"n": 42}
    assert sorted(o.result["n"] for o in outcomes) == [2, 4]
    assert emu.requests == 3 and emu.poll_requests == 0
