"""AwaitStep end to end: wt.AsyncClient (and wt.Client) against the emulator over loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
from _support import FAST, FAST_RETRY

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, Fault, Scenario

from ._platforms import awaitstep_for, body_of, logged


@pytest.fixture
async def client(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> AsyncIterator[wt.AsyncClient]:
    async with make_client(awaitstep_for(emulator)) as c:
        yield c


def _params_of_size(size: int, char: str = "x") -> dict[str, str]:
    """Params whose compact JSON is ``size`` characters long (JS ``JSON.stringify().length``)."""
    overhead = len('{"a":""}')
    return {"a": char * (size - overhead)}


# -- trigger ------------------------------------------------------------------------------


async def test_trigger_sends_the_bearer_key_the_connection_and_the_params(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("wf_abc123", Scenario(result={"charged": 4999}))
    params = {"orderId": "ord_001", "userId": "usr_42", "amount": 4999}
    outcome = await client.run("wf_abc123", params)
    assert outcome.ok and outcome.result == {"charged": 4999}
    trigger, *polls = logged(emulator)
    assert trigger.method == "POST" and trigger.path == "/api/workflows/wf_abc123/trigger"
    assert trigger.headers["Authorization"] == f"Bearer {emulator.awaitstep_api_key}"
    assert body_of(trigger) == {"connectionId": emulator.awaitstep_connection_id, "params": params}
    run = emulator.executions[0]
    assert run.payload == params
    assert [(p.method, p.path) for p in polls] == [
        ("GET", f"/api/workflows/wf_abc123/runs/{run.id}")
    ] * outcome.polls
    assert all(p.headers["Authorization"] == f"Bearer {emulator.awaitstep_api_key}" for p in polls)


async def test_no_payload_is_sent_as_empty_params(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    await client.trigger("wf")
    assert body_of(logged(emulator, "trigger")[0])["params"] == {}


async def test_a_connection_is_required_and_may_be_overridden_per_call(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    for missing in ("", "  "):
        with pytest.raises(wt.InvalidInputError, match="connection_id"):
            awaitstep_for(emulator, connection_id=missing)
    emulator.awaitstep_connection_id = "conn_xyz789"
    async with make_client(awaitstep_for(emulator, connection_id="conn_default")) as client:
        with pytest.raises(wt.NotFoundError, match="Connection not found") as info:
            await client.trigger("wf")
        assert info.value.status_code == 404
        ex = await client.trigger("wf", connection_id="conn_xyz789")
        assert (await client.wait(ex)).ok
    assert [body_of(r)["connectionId"] for r in logged(emulator, "trigger")] == [
        "conn_default",
        "conn_xyz789",
    ]
    assert ex.extras["connection_id"] == "conn_xyz789"
    assert emulator.triggers("wf") == 1


async def test_an_idempotency_key_is_refused_before_sending(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    with pytest.raises(wt.InvalidInputError, match="no idempotency keys") as info:
        await client.trigger("wf", idempotency_key="k")
    assert info.value.status_code is None and emulator.requests == 0


@pytest.mark.parametrize("reply", ["run", "instance"])
async def test_both_trigger_replies_are_followed(
    client: wt.AsyncClient, emulator: Emulator, reply: str
) -> None:
    emulator.awaitstep_trigger_reply = reply
    emulator.scenario("wf", Scenario(duration=30.0, result={"done": True}))
    ex = await client.trigger("wf")
    run = emulator.executions[0]
    instance_id = run.extra["instanceId"]
    assert ex.provider == "awaitstep" and ex.workflow_id == "wf"
    assert ex.extras["instance_id"] == instance_id
    # the record's id when the reply has one (polling by instance id is a 404 there)
    assert ex.execution_id == (run.id if reply == "run" else instance_id)
    run.advance(30.0)
    outcome = await client.wait(wt.Execution.from_token(ex.token()))
    assert outcome.ok and outcome.result == {"done": True}
    assert {p.path for p in logged(emulator, "poll")} == {
        f"/api/workflows/wf/runs/{ex.execution_id}"
    }
    assert all(p.status == 200 for p in logged(emulator, "poll"))


# -- results and errors -------------------------------------------------------------------


@pytest.mark.parametrize("json_strings", [True, False], ids=["json-strings", "json-values"])
@pytest.mark.parametrize(
    "result", [{"total": 4999, "items": [1, 2]}, [1, "two"], "plain text", 42, None]
)
async def test_the_output_is_decoded_into_the_result(
    client: wt.AsyncClient, emulator: Emulator, json_strings: bool, result: Any
) -> None:
    emulator.awaitstep_json_strings = json_strings
    emulator.scenario("wf", Scenario(result=result))
    outcome = await client.run("wf")
    assert outcome.ok and outcome.raw_status == "complete"
    assert outcome.result == result


@pytest.mark.parametrize("json_strings", [True, False], ids=["json-strings", "json-values"])
@pytest.mark.parametrize(
    ("scenario", "error"),
    [
        (
            Scenario(status="failed", error={"name": "OrderError", "message": "card declined"}),
            {"name": "OrderError", "message": "card declined"},
        ),
        (Scenario(status="error"), {"name": "Error", "message": "Workflow execution failed"}),
        (Scenario(status="timeout"), {"name": "Error", "message": "Workflow timed out"}),
    ],
)
async def test_the_error_is_decoded_into_error_info(
    client: wt.AsyncClient,
    emulator: Emulator,
    json_strings: bool,
    scenario: Scenario,
    error: dict[str, str],
) -> None:
    emulator.awaitstep_json_strings = json_strings
    emulator.scenario("wf", scenario)
    outcome = await client.run("wf")
    assert outcome.status is wt.Status.FAILED and outcome.raw_status == "errored"
    assert outcome.error == wt.ErrorInfo(
        message=error["message"], code=error["name"], details=error
    )
    assert outcome.result is None


async def test_a_422_keeps_its_details(client: wt.AsyncClient, emulator: Emulator) -> None:
    with pytest.raises(wt.InvalidInputError) as info:
        await client.trigger("wf", ["params", "must", "be", "an", "object"])
    error = info.value
    assert error.status_code == 422 and "Validation failed" in str(error)
    assert error.details == [{"path": "params", "message": "Trigger params must be an object"}]
    assert emulator.triggers("wf") == 0


async def test_error_bodies_map_to_the_sdk_errors(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.awaitstep_undeployed.add("draft")
    with pytest.raises(wt.InvalidInputError, match="No version deployed") as undeployed:
        await client.trigger("draft")
    assert undeployed.value.status_code == 400

    emulator.awaitstep_functions.add("a-function")
    with pytest.raises(wt.InvalidInputError, match="Functions cannot be triggered"):
        await client.trigger("a-function")

    emulator.strict_workflows = True
    with pytest.raises(wt.NotFoundError, match="Not found"):
        await client.trigger("unknown")

    emulator.add_fault(Fault.server_error(status=503, on="trigger", platform="awaitstep"))
    with pytest.raises(wt.ServerError, match="request id") as server:
        await client.trigger("draft")
    assert server.value.status_code == 503
    assert emulator.trigger_requests == 4 and emulator.executions == []


async def test_params_just_over_100_kb_are_refused_before_any_request(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    with pytest.raises(wt.PayloadTooLarge, match="102,400") as info:
        await client.run("wf", _params_of_size(102_401))
    assert info.value.status_code is None
    assert emulator.requests == 0 and client.requests_sent == 0
    assert (await client.run("wf", _params_of_size(102_400))).ok  # the limit itself is allowed
    assert emulator.triggers("wf") == 1


async def test_the_100_kb_limit_counts_characters_as_the_platform_does(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    """The cap is ``JSON.stringify(params).length``: UTF-16 code units, not UTF-8 bytes."""
    under = _params_of_size(102_400, "é")  # 2 bytes each in UTF-8: about 200 KB as bytes
    assert (await client.run("wf", under)).ok
    assert emulator.executions[0].payload == under
    with pytest.raises(wt.PayloadTooLarge):
        await client.trigger("wf", _params_of_size(102_401, "é"))
    assert emulator.trigger_requests == 1


# -- states and run control -------------------------------------------------------------------


async def test_every_state_maps_to_a_status(client: wt.AsyncClient, emulator: Emulator) -> None:
    emulator.scenario("wf", Scenario(duration=30.0, queued=10.0, wait_for_event="go"))
    ex = await client.trigger("wf")
    run = emulator.executions[0]

    async def seen() -> tuple[wt.Status, str]:
        snap = await client.status(ex)
        return snap.status, snap.raw_status

    assert await seen() == (wt.Status.PENDING, "queued")
    run.advance(10.0)
    assert await seen() == (wt.Status.RUNNING, "running")
    run.pause()
    assert await seen() == (wt.Status.PAUSED, "paused")
    run.resume()
    run.advance(5.0)
    assert await seen() == (wt.Status.PAUSED, "waiting")
    run.deliver("go", None)
    run.advance(15.0)
    assert await seen() == (wt.Status.SUCCEEDED, "complete")

    emulator.scenario("bad", Scenario(status="failed"))
    assert (await client.run("bad")).status is wt.Status.FAILED
    emulator.scenario("long", Scenario(duration=30.0))
    other = await client.trigger("long")
    emulator.executions[-1].terminate()
    assert (await client.status(other)).status is wt.Status.CANCELLED


@pytest.mark.parametrize("reply", ["run", "instance"])
async def test_pause_resume_and_cancel_change_the_run(
    client: wt.AsyncClient, emulator: Emulator, reply: str
) -> None:
    emulator.awaitstep_trigger_reply = reply
    emulator.scenario("wf", Scenario(duration=30.0, queued=0.0))
    ex = await client.trigger("wf")
    run = emulator.executions[0]
    await client.pause(ex)
    assert run.state == "paused"
    assert (await client.status(ex)).status is wt.Status.PAUSED
    await client.resume(ex)
    assert run.state == "running"
    assert (await client.status(ex)).status is wt.Status.RUNNING
    await client.cancel(ex)
    assert run.state == "terminated"
    outcome = await client.wait(ex)
    assert outcome.status is wt.Status.CANCELLED and outcome.raw_status == "terminated"
    controls = logged(emulator, "control")
    assert [(r.method, r.path.rsplit("/", 1)[1], r.status) for r in controls] == [
        ("POST", "pause", 200),
        ("POST", "resume", 200),
        ("POST", "terminate", 200),
    ]
    assert {r.path.rsplit("/", 1)[0] for r in controls} == {
        f"/api/workflows/wf/runs/{ex.execution_id}"
    }
    assert all(
        r.headers["Authorization"] == f"Bearer {emulator.awaitstep_api_key}" for r in controls
    )
    with pytest.raises(wt.InvalidInputError, match="Cannot pause a run that is terminated"):
        await client.pause(ex)


async def test_cancel_remote_on_exit_terminates_the_run_after_a_poll_timeout(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=30.0))
    ex = await client.trigger("wf")
    # 0.5 s: room for a first poll (every 20 ms) even when a loaded machine is slow to answer
    with pytest.raises(wt.PollTimeout) as info:
        await client.wait(ex, timeout=0.5, cancel_remote_on_exit=True)
    assert info.value.execution == ex and info.value.snapshot is not None
    assert emulator.executions[0].state == "terminated"
    (control,) = logged(emulator, "control")
    assert control.path == f"/api/workflows/wf/runs/{ex.execution_id}/terminate"
    assert (await client.wait(ex)).status is wt.Status.CANCELLED


async def test_send_event_lets_a_waiting_run_finish(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario(
        "wf", Scenario(duration=30.0, wait_for_event="approval-decision", result={"ok": 1})
    )
    ex = await client.trigger("wf")
    run = emulator.executions[0]
    run.advance(100.0)  # no further than the gate: the run waits for its event
    seen: list[str] = []
    outcome: list[wt.Outcome[Any]] = []

    async def wait() -> None:
        outcome.append(await client.wait(ex, on_snapshot=lambda s: seen.append(s.raw_status)))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await emulator.wait_for_polls(ex.execution_id, 3)
            await client.send_event(ex, "another-event", {"ignored": True})
            await emulator.wait_for_polls(ex.execution_id, 5)
            assert not outcome and run.state == "waiting"
            await client.send_event(ex, "approval-decision", {"approved": True})
            run.advance(15.0)
    assert outcome[0].ok and outcome[0].result == {"ok": 1}
    assert seen == ["waiting", "complete"]
    assert run.events == [
        {"type": "another-event", "payload": {"ignored": True}},
        {"type": "approval-decision", "payload": {"approved": True}},
    ]
    event = logged(emulator, "trigger")[-1]
    assert event.path == "/api/workflows/wf/trigger"
    assert event.headers["Authorization"] == f"Bearer {emulator.awaitstep_api_key}"
    assert body_of(event) == {
        "connectionId": emulator.awaitstep_connection_id,
        "params": {
            "instanceId": run.extra["instanceId"],
            "eventType": "approval-decision",
            "payload": {"approved": True},
        },
    }
    assert emulator.triggers("wf") == 1  # events start no run

    with pytest.raises(wt.InvalidInputError, match="takes no events"):
        await client.send_event(ex, "approval-decision", {})


async def test_a_read_only_key_is_an_authentication_error_naming_the_credential(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    read_only = emulator.awaitstep_read_only_key
    assert read_only is not None
    emulator.scenario("wf", Scenario(duration=30.0))
    async with make_client(awaitstep_for(emulator)) as full:
        ex = await full.trigger("wf")
    async with make_client(awaitstep_for(emulator, api_key=read_only)) as client:
        with pytest.raises(wt.AuthenticationError) as trigger:
            await client.trigger("wf")
        with pytest.raises(wt.AuthenticationError) as pause:
            await client.pause(ex)
        assert (await client.status(ex)).status is wt.Status.PENDING  # "read" may poll
    for error in (trigger.value, pause.value):
        assert error.status_code == 403
        assert "Authorization: Bearer" in str(error) and "'deploy' scope" in str(error)
        assert read_only not in str(error) and read_only not in repr(error)
    assert emulator.executions[0].state == "pending"

    async with make_client(awaitstep_for(emulator, api_key="ask_wrong_key")) as client:
        with pytest.raises(wt.AuthenticationError, match="Bearer") as wrong:
            await client.status(ex)
    assert wrong.value.status_code == 401 and "ask_wrong_key" not in str(wrong.value)


# -- retries --------------------------------------------------------------------------------


async def test_a_trigger_is_never_resent_once_sent(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.add_fault(Fault.drop(on="trigger", platform="awaitstep"))
    with pytest.raises(wt.TransportError):
        await client.trigger("wf")
    emulator.add_fault(Fault.server_error(status=502, on="trigger", platform="awaitstep"))
    with pytest.raises(wt.ServerError):
        await client.trigger("wf")
    assert emulator.trigger_requests == 2


async def test_a_429_trigger_is_retried_and_polls_through_5xx(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.add_fault(Fault.rate_limited(retry_after=0.01, on="trigger", platform="awaitstep"))
    emulator.add_fault(Fault.server_error(count=2, status=503, on="poll", platform="awaitstep"))
    outcome = await client.run("wf")
    assert outcome.ok
    assert [r.status for r in logged(emulator, "trigger")] == [429, 201]
    assert [r.status for r in logged(emulator, "poll")] == [503, 503, 200]
    assert emulator.triggers("wf") == 1

    emulator.add_fault(
        Fault.rate_limited(count=FAST_RETRY.attempts, retry_after=0.01, platform="awaitstep")
    )
    with pytest.raises(wt.RateLimitError) as info:
        await client.trigger("wf")
    assert info.value.retry_after == pytest.approx(0.01)


# -- defaults, batches and the blocking client ---------------------------------------------


async def test_the_documented_defaults(emulator: Emulator) -> None:
    provider = awaitstep_for(emulator)
    assert provider.default_poll.interval == 2.0
    assert provider.default_rate_limit is None
    async with wt.AsyncClient(provider) as client:
        assert client.poll_policy.interval == 2.0 and client.rate_limit is None
    assert emulator.awaitstep_api_key not in repr(provider)
    assert wt.AwaitStep("ask_x", "conn_x").base_url == "https://app.awaitstep.dev"


async def test_run_many_runs_every_payload_once(client: wt.AsyncClient, emulator: Emulator) -> None:
    emulator.scenario("wf", Scenario(duration=(0.0, 0.05), result=lambda p: {"got": p}))
    payloads = [{"i": i} for i in range(20)]
    outcomes = [o async for o in client.run_many("wf", payloads, concurrency=4)]
    assert sorted(o.index for o in outcomes if o.index is not None) == list(range(20))
    assert all(o.ok and o.result == {"got": {"i": o.index}} for o in outcomes)
    assert emulator.triggers("wf") == 20 and emulator.max_in_flight <= 4
    bodies = [body_of(r)["params"] for r in logged(emulator, "trigger")]
    assert sorted(json.dumps(b) for b in bodies) == sorted(json.dumps(p) for p in payloads)


def test_the_blocking_client_runs_and_controls_a_workflow(threaded_emulator: Emulator) -> None:
    emu = threaded_emulator
    emu.scenario("wf", Scenario(result={"sync": True}))
    emu.scenario("long", Scenario(duration=30.0, queued=0.0, wait_for_event="go"))
    with wt.Client(awaitstep_for(emu), poll=FAST, retry=FAST_RETRY, seed=0) as client:
        outcome = client.run("wf", {"a": 1})
        assert outcome.ok and outcome.result == {"sync": True}
        ex = client.trigger("long")
        client.pause(ex)
        assert client.status(ex).status is wt.Status.PAUSED
        client.resume(ex)
        client.send_event(ex, "go", {"approved": True})
        client.cancel(ex)
        assert client.wait(ex).status is wt.Status.CANCELLED
        outcomes = list(client.run_many("wf", [{}, {}, {}]))
    assert len(outcomes) == 3 and all(o.ok for o in outcomes)
    assert emu.executions[1].events == [{"type": "go", "payload": {"approved": True}}]
    assert emu.triggers("wf") == 4 and emu.triggers("long") == 1
