"""AsyncClient end to end, over loopback HTTP against the emulator."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, TypedDict

import aiohttp
import anyio
import attrs
import pytest
from _support import FAST, codika_for

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, Fault, Scenario


async def test_run_succeeds_with_exact_request_counts(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("main-workflow", Scenario(duration=0.05, result={"echo": "hi"}))
    outcome = await client.run("main-workflow", {"text": "hi"})
    assert outcome.ok and outcome.status is wt.Status.SUCCEEDED
    assert outcome.result == {"echo": "hi"}
    assert outcome.execution is not None
    assert emulator.triggers("main-workflow") == 1
    assert emulator.polls(outcome.execution.execution_id) == outcome.polls >= 2
    assert emulator.executions[0].payload == {"text": "hi"}
    assert outcome.started_at is not None and outcome.finished_at is not None
    assert outcome.finished_at >= outcome.started_at
    assert emulator.in_flight == 0


async def test_trigger_status_wait_step_by_step(client: wt.AsyncClient, emulator: Emulator) -> None:
    emulator.scenario("wf", Scenario(duration=0.3, result=lambda p: {"got": p}))
    ex = await client.trigger("wf", {"n": 1})
    assert ex.provider == "codika" and ex.workflow_id == "wf"
    snap = await client.status(ex)
    assert snap.status is wt.Status.PENDING and snap.raw_status == "pending"
    outcome = await client.wait(ex)
    assert outcome.result == {"got": {"n": 1}}


async def test_a_failed_workflow_is_data_and_unwrap_raises(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    error = {"message": "boom", "type": "node_failure", "code": "E1", "failedNodeName": "HTTP"}
    emulator.scenario("bad", Scenario(status="failed", error=error))
    outcome = await client.run("bad", {})
    assert outcome.status is wt.Status.FAILED and not outcome.ok
    assert outcome.error is not None and outcome.error.message == "boom"
    assert outcome.error.code == "E1"
    with pytest.raises(wt.WorkflowFailed, match="boom"):
        outcome.unwrap()


async def test_wrong_key_is_an_authentication_error_naming_the_header(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    async with make_client(codika_for(emulator, api_key="ck_wrong_secret")) as client:
        with pytest.raises(wt.AuthenticationError) as info:
            await client.run("wf")
    assert "X-API-Key header" in str(info.value)
    assert "ck_wrong_secret" not in str(info.value)
    assert info.value.status_code == 401


@pytest.mark.parametrize(
    "kwargs",
    [
        {"auth": "query"},
        {"org_key": "cko_test_org"},
        {"signing_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
    ],
)
async def test_every_auth_mode_works_end_to_end(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator, kwargs: dict[str, Any]
) -> None:
    async with make_client(codika_for(emulator, **kwargs)) as client:
        assert (await client.run("wf")).ok
    trigger = next(r for r in emulator.request_log if r.operation == "trigger")
    if "signing_secret" in kwargs:
        assert "webhook-signature" in trigger.headers and "X-API-Key" not in trigger.headers
    if kwargs.get("auth") == "query":
        assert trigger.query["api_key"] == emulator.codika_api_key


async def test_a_bad_signature_names_the_signature(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
    async with make_client(codika_for(emulator, signing_secret=other)) as client:
        with pytest.raises(wt.AuthenticationError, match="signature"):
            await client.trigger("wf")


async def test_trigger_answer_without_id_is_a_protocol_error(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(id_field=None))
    with pytest.raises(wt.ProtocolError, match="executionId"):
        await client.trigger("wf")


async def test_trigger_answer_with_id_field_works(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(id_field="id", result=1))
    assert (await client.run("wf")).result == 1


async def test_inactive_instance_is_an_api_error_saying_so(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.inactive = True
    with pytest.raises(wt.APIError, match="inactive") as info:
        await client.trigger("wf")
    assert info.value.status_code == 412


async def test_registering_404s_are_polled_through(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(register_delay=0.1, duration=0.15, result="done"))
    outcome = await client.run("wf")
    assert outcome.result == "done"
    assert outcome.execution is not None
    statuses = [r.status for r in emulator.request_log if r.operation == "poll"]
    assert statuses[0] == 404 and statuses[-1] == 200


async def test_a_404_after_the_grace_is_not_found_naming_the_execution(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    provider = codika_for(emulator, registering_grace=0.05)
    async with make_client(provider) as client:
        ex = await client.trigger("wf")
        forged = attrs.evolve(ex, execution_id="no-such-execution")
        with pytest.raises(wt.NotFoundError, match="no-such-execution"):
            await client.wait(forged)


async def test_deadline_raises_poll_timeout_and_no_request_follows(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("slow", Scenario(duration=60))
    ex = await client.trigger("slow")
    with pytest.raises(wt.PollTimeout) as info:
        await client.wait(ex, timeout=0.2)
    assert info.value.execution == ex
    assert info.value.snapshot is not None and info.value.snapshot.status is wt.Status.PENDING
    polls = emulator.polls(ex.execution_id)
    assert polls >= 3
    await anyio.sleep(FAST.interval * 5)  # a window in which a leaked poller would poll again
    assert emulator.polls(ex.execution_id) == polls


async def test_deadline_fires_while_a_request_hangs(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    ex = await client.trigger("wf-hang")
    emulator.scenario("wf-hang", Scenario(duration=60))
    emulator.add_fault(Fault.slow(count=1, delay=5, on="poll"))
    started = anyio.current_time()
    with pytest.raises(wt.PollTimeout):
        await client.wait(ex, timeout=0.3)
    assert anyio.current_time() - started < 2


async def test_status_polls_retry_5xx_and_dropped_connections(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=0.05, result=1))
    emulator.add_fault(Fault.server_error(count=2, status=503, on="poll"))
    emulator.add_fault(Fault.drop(count=1, on="poll"))
    outcome = await client.run("wf")
    assert outcome.ok
    assert emulator.poll_requests == outcome.polls + 3


async def test_polls_honour_retry_after_on_429(client: wt.AsyncClient, emulator: Emulator) -> None:
    emulator.scenario("wf", Scenario(duration=0.0, result=1))
    emulator.add_fault(Fault.rate_limited(count=1, retry_after=0.3, on="poll"))
    outcome = await client.run("wf")
    assert outcome.ok
    polls = [r for r in emulator.request_log if r.operation == "poll"]
    assert [r.status for r in polls] == [429, 200]
    assert polls[1].received_at - polls[0].received_at >= 0.29


async def test_poll_retries_stop_at_the_budget_with_the_last_error(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    emulator.add_fault(Fault.server_error(count=10, status=502, on="poll"))
    retry = wt.RetryPolicy(attempts=3, backoff=0.01)
    async with make_client(retry=retry) as client:
        with pytest.raises(wt.ServerError) as info:
            await client.run("wf")
    assert info.value.status_code == 502
    assert emulator.poll_requests == 3


async def test_trigger_is_not_retried_after_it_may_have_reached_the_server(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.add_fault(Fault.server_error(count=1, status=503, on="trigger"))
    with pytest.raises(wt.ServerError):
        await client.trigger("wf")
    assert emulator.trigger_requests == 1
    emulator.add_fault(Fault.drop(count=1, on="trigger"))
    with pytest.raises(wt.TransportError):
        await client.trigger("wf")
    assert emulator.trigger_requests == 2


async def test_trigger_is_retried_when_the_connection_was_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with anyio.fail_after(5):
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        await listener.aclose()  # nothing listens there any more: connections are refused
    provider = wt.Codika("pi", api_key="ck_x", base_url=f"http://127.0.0.1:{port}")
    retry = wt.RetryPolicy(attempts=3, backoff=0.01)
    caplog.set_level(logging.WARNING, logger="workflow_trigger")
    async with wt.AsyncClient(provider, retry=retry) as client:
        with pytest.raises(wt.TransportError, match="could not connect"):
            await client.trigger("wf")
        assert client.requests_sent == 3
    assert sum("retrying POST" in r.getMessage() for r in caplog.records) == 2


async def test_malformed_status_body_is_retried_as_protocol_error_only_at_the_end(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.add_fault(Fault.malformed(count=1, on="poll"))
    with pytest.raises(wt.ProtocolError, match="JSON"):
        await client.run("wf")


async def test_cancelling_the_callers_scope_stops_polling_at_once(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("slow", Scenario(duration=60))
    ex = await client.trigger("slow")
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.wait, ex)
            with anyio.fail_after(5):
                await emulator.wait_for_polls(ex.execution_id, 2)
            scope.cancel()
    polls = emulator.polls(ex.execution_id)
    await anyio.sleep(FAST.interval * 5)
    assert emulator.polls(ex.execution_id) == polls


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda c: c.trigger("", {}), "non-empty"),
        (lambda c: c.trigger("wf", {"x": float("nan")}), "JSON"),
        (lambda c: c.trigger("wf", {"x": {1, 2}}), "JSON"),
        (lambda c: c.run("wf", {}, timeout=0), "timeout"),
        (lambda c: c.run("wf", {}, timeout=-1), "timeout"),
        (lambda c: c.trigger("..", {}), "'..'"),
    ],
)
async def test_bad_input_is_refused_before_any_request(
    client: wt.AsyncClient, emulator: Emulator, call: Any, match: str
) -> None:
    with pytest.raises(wt.InvalidInputError, match=match):
        await call(client)
    assert emulator.requests == 0


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("request_timeout", 0, "request_timeout must be a positive number of seconds"),
        ("connect_timeout", float("inf"), "connect_timeout must be a finite number of seconds"),
        ("rate_limit", -5, "rate_limit must be a positive number of requests per second"),
        ("rate_limit", float("nan"), "rate_limit must be a positive number of requests per second"),
    ],
)
async def test_bad_client_options_say_what_they_must_be(
    make_client: Any, option: str, value: float, message: str
) -> None:
    with pytest.raises(wt.InvalidInputError, match=message):
        make_client(**{option: value})


async def test_an_execution_of_another_platform_is_refused(client: wt.AsyncClient) -> None:
    ex = wt.Execution.from_token(
        wt.Execution(
            provider="pinkfish",
            workflow_id="w",
            execution_id="e",
            triggered_at=wt.Execution.from_token((await client.trigger("wf")).token()).triggered_at,
        ).token()
    )
    with pytest.raises(wt.InvalidInputError, match="pinkfish"):
        await client.wait(ex)


async def test_a_token_resumes_in_a_new_client(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=0.1, result={"ok": True}))
    async with make_client() as first:
        token = (await first.trigger("wf")).token()
    async with make_client() as second:
        outcome = await second.wait(wt.Execution.from_token(token))
    assert outcome.result == {"ok": True}
    assert emulator.triggers("wf") == 1


@attrs.frozen
class AttrsSummary:
    title: str
    count: int


@dataclasses.dataclass
class DataSummary:
    title: str
    count: int


class DictSummary(TypedDict):
    title: str
    count: int


@pytest.mark.parametrize("result_type", [AttrsSummary, DataSummary, DictSummary, dict])
async def test_result_type_structures_the_result(
    client: wt.AsyncClient, emulator: Emulator, result_type: type[Any]
) -> None:
    emulator.scenario("wf", Scenario(result={"title": "t", "count": 3}))
    outcome = await client.run("wf", result_type=result_type)
    result = outcome.unwrap()
    assert isinstance(result, dict if result_type is DictSummary else result_type)
    if isinstance(result, dict):
        assert result == {"title": "t", "count": 3}
    else:
        assert (result.title, result.count) == ("t", 3)


async def test_a_result_that_does_not_fit_names_the_field(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(result={"title": "t", "count": "many"}))
    with pytest.raises(wt.ResultTypeError, match=r"count") as info:
        await client.run("wf", result_type=AttrsSummary)
    assert any("count" in f for f in info.value.fields)


async def test_watch_reports_each_change_until_terminal(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=0.15, result=1))
    ex = await client.trigger("wf")
    seen = [snap.status async for snap in client.watch(ex)]
    assert seen == [wt.Status.PENDING, wt.Status.SUCCEEDED]


async def test_a_callers_session_is_used_and_never_closed(emulator: Emulator) -> None:
    async with aiohttp.ClientSession() as session:
        provider = codika_for(emulator)
        async with wt.AsyncClient(provider, session=session, poll=FAST) as client:
            assert (await client.run("wf")).ok
        assert not session.closed


async def test_secrets_stay_out_of_reprs_logs_errors_and_tokens(
    make_client: Callable[..., wt.AsyncClient],
    emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="workflow_trigger")
    key = emulator.codika_api_key
    emulator.add_fault(Fault.server_error(count=1, on="poll"))
    texts: list[str] = []
    async with make_client(codika_for(emulator, auth="query")) as client:
        outcome = await client.run("wf")
        texts += [repr(client), repr(client.provider), repr(outcome), outcome.execution.token()]
    async with make_client(codika_for(emulator, api_key="ck_wrong", auth="query")) as client:
        with pytest.raises(wt.AuthenticationError) as info:
            await client.run("wf")
        texts.append(str(info.value))
    texts += [r.getMessage() for r in caplog.records]
    assert any("api_key=***" in t for t in texts)
    for text in texts:
        assert key not in text and "ck_wrong" not in text


async def test_max_concurrency_bounds_executions_in_flight(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=(0.02, 0.08), result=1))
    async with make_client(max_concurrency=4) as client, anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(client.run, "wf")
    assert emulator.triggers("wf") == 20
    assert emulator.max_in_flight <= 4


async def test_on_snapshot_reports_each_change_during_wait(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=0.15, result=1))
    seen: list[wt.Status] = []
    outcome = await client.run("wf", on_snapshot=lambda snap: seen.append(snap.status))
    assert seen == [wt.Status.PENDING, wt.Status.SUCCEEDED]
    assert outcome.polls > len(seen)  # unchanged polls are not reported again


async def test_errors_leave_the_client_block_unwrapped(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    with pytest.raises(wt.AuthenticationError):
        async with make_client(codika_for(emulator, api_key="ck_wrong")) as client:
            await client.trigger("wf")
    with pytest.raises(KeyError):
        async with make_client():
            raise KeyError("user code")


async def test_cancelling_a_task_inside_the_client_block_propagates(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    emulator.scenario("slow", Scenario(duration=60))
    with anyio.move_on_after(0.2) as scope:
        async with make_client() as client:
            await client.run("slow", timeout=None)
    assert scope.cancelled_caught
