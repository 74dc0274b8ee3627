"""The emulator's AwaitStep routes against 003_41c079011abfb220.txt and the platform notes."""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from workflow_trigger.testing import Emulator, Fault, Scenario

if TYPE_CHECKING:
    from conftest import HTTP, Answer

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RECORD_KEYS = [
    "id",
    "workflowId",
    "versionId",
    "connectionId",
    "instanceId",
    "status",
    "output",
    "error",
    "createdAt",
    "updatedAt",
]


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def trigger(
    http: HTTP,
    workflow: str = "wf_abc123",
    params: Any = None,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    if body is None:
        body = {"connectionId": http.emu.awaitstep_connection_id, "params": params or {}}
    sent = bearer(http.emu.awaitstep_api_key) if headers is None else headers
    return await http.post(f"/api/workflows/{workflow}/trigger", body, headers=sent)


async def start(http: HTTP, workflow: str = "wf_abc123", params: Any = None) -> dict[str, Any]:
    answer = await trigger(http, workflow, params)
    assert answer.status == 201, answer.body
    record: dict[str, Any] = answer.json
    return record


async def get_run(
    http: HTTP, workflow: str, run_id: str, headers: dict[str, str] | None = None
) -> Answer:
    sent = bearer(http.emu.awaitstep_api_key) if headers is None else headers
    return await http.get(f"/api/workflows/{workflow}/runs/{run_id}", headers=sent)


async def record_of(http: HTTP, workflow: str, run_id: str) -> dict[str, Any]:
    answer = await get_run(http, workflow, run_id)
    assert answer.status == 200, answer.body
    found: dict[str, Any] = answer.json
    return found


async def control(
    http: HTTP, workflow: str, run_id: str, action: str, headers: dict[str, str] | None = None
) -> Answer:
    sent = bearer(http.emu.awaitstep_api_key) if headers is None else headers
    return await http.post(f"/api/workflows/{workflow}/runs/{run_id}/{action}", headers=sent)


# -- trigger and poll --------------------------------------------------------------


async def test_trigger_answers_the_run_record(emulator: Emulator, http: HTTP) -> None:
    emulator.scenario("wf_abc123", Scenario(result={"orderId": "ord_001", "ok": True}))
    answer = await trigger(http, params={"orderId": "ord_001", "amount": 4999})
    assert answer.status == 201
    assert UUID.match(answer.headers["X-Request-Id"])
    record = answer.json
    assert list(record) == RECORD_KEYS
    assert record["workflowId"] == "wf_abc123"
    assert record["versionId"] == emulator.awaitstep_version_id
    assert record["connectionId"] == "conn_test"
    assert UUID.match(record["instanceId"]) and record["id"] != record["instanceId"]
    assert (record["status"], record["output"], record["error"]) == ("queued", None, None)
    assert ISO_MS.match(record["createdAt"]) and record["updatedAt"] == record["createdAt"]
    assert emulator.executions[0].payload == {"orderId": "ord_001", "amount": 4999}

    polled = await record_of(http, "wf_abc123", record["id"])
    assert list(polled) == RECORD_KEYS
    assert polled["status"] == "complete"
    assert isinstance(polled["output"], str)
    assert json.loads(polled["output"]) == {"orderId": "ord_001", "ok": True}
    assert polled["error"] is None
    assert polled["updatedAt"] >= polled["createdAt"]
    # The default (record) form looks runs up by id only.
    missing = await get_run(http, "wf_abc123", record["instanceId"])
    assert (missing.status, missing.json) == (404, {"error": "Run not found"})
    assert "X-Request-Id" in missing.headers


async def test_instance_reply_switch(make_http: Callable[..., Awaitable[HTTP]]) -> None:
    http = await make_http(awaitstep_trigger_reply="instance")
    answer = await trigger(http, "wf")
    assert answer.status == 201
    assert list(answer.json) == ["instanceId"] and UUID.match(answer.json["instanceId"])
    by_instance = await record_of(http, "wf", answer.json["instanceId"])
    assert by_instance["instanceId"] == answer.json["instanceId"]
    by_id = await record_of(http, "wf", by_instance["id"])
    assert by_id == by_instance


async def test_json_strings_switch(make_http: Callable[..., Awaitable[HTTP]]) -> None:
    http = await make_http(awaitstep_json_strings=False)
    http.emu.scenario("wf", Scenario(result={"a": [1]}))
    record = await record_of(http, "wf", (await start(http, "wf"))["id"])
    assert record["output"] == {"a": [1]}


@pytest.mark.parametrize(
    ("scenario", "status"),
    [
        (Scenario(duration=60, queued=30), "queued"),
        (Scenario(duration=60, queued=0), "running"),
        (Scenario(duration=0, wait_for_event="approval-decision"), "waiting"),
        (Scenario(result="done"), "complete"),
        (Scenario(status="failed"), "errored"),
        (Scenario(status="timeout"), "errored"),
    ],
)
async def test_statuses(emulator: Emulator, http: HTTP, scenario: Scenario, status: str) -> None:
    emulator.scenario("wf", scenario)
    record = await record_of(http, "wf", (await start(http, "wf"))["id"])
    assert record["status"] == status


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (None, {"name": "Error", "message": "Workflow execution failed"}),
        ({"message": "card declined"}, {"name": "Error", "message": "card declined"}),
        (
            {"name": "NonRetryableError", "message": "x"},
            {"name": "NonRetryableError", "message": "x"},
        ),
    ],
)
async def test_error_is_a_json_string(
    emulator: Emulator, http: HTTP, error: Any, expected: dict[str, str]
) -> None:
    emulator.scenario("bad", Scenario(status="error", error=error))
    record = await record_of(http, "bad", (await start(http, "bad"))["id"])
    assert record["status"] == "errored" and record["output"] is None
    assert isinstance(record["error"], str) and json.loads(record["error"]) == expected


# -- run control -------------------------------------------------------------------


async def test_pause_resume_terminate(emulator: Emulator, http: HTTP) -> None:
    emulator.scenario("wf", Scenario(duration=30, queued=0, result=1))
    run_id = (await start(http, "wf"))["id"]
    execution = emulator.executions[0]

    answer = await control(http, "wf", run_id, "pause")
    assert (answer.status, answer.json) == (200, {"ok": True})
    assert "X-Request-Id" in answer.headers
    frozen = execution.clock.now()
    paused = await record_of(http, "wf", run_id)
    assert paused["status"] == "paused"
    assert execution.clock.now() == frozen  # the run's clock stands still
    assert paused["updatedAt"] > paused["createdAt"] or paused["updatedAt"] == paused["createdAt"]

    assert (await control(http, "wf", run_id, "resume")).json == {"ok": True}
    assert (await record_of(http, "wf", run_id))["status"] == "running"
    assert execution.clock.now() < 30  # resumed where it stopped, not at the real time

    assert (await control(http, "wf", run_id, "terminate")).json == {"ok": True}
    terminated = await record_of(http, "wf", run_id)
    assert terminated["status"] == "terminated"
    assert terminated["output"] is None and terminated["error"] is None
    again = await control(http, "wf", run_id, "resume")
    assert again.status == 400
    assert again.json == {"error": "Cannot resume a run that is terminated"}
    assert emulator.operation_requests("control") == 4
    assert emulator.polls(run_id) == 3 and emulator.in_flight == 0


async def test_resume_continues_to_completion(emulator: Emulator, http: HTTP) -> None:
    emulator.scenario("wf", Scenario(duration=30, queued=0, result={"r": 1}))
    run_id = (await start(http, "wf"))["id"]
    await control(http, "wf", run_id, "pause")
    emulator.executions[0].advance(29)  # advancing a paused run moves its clock only
    assert (await record_of(http, "wf", run_id))["status"] == "paused"
    await control(http, "wf", run_id, "resume")
    emulator.executions[0].advance(1)
    record = await record_of(http, "wf", run_id)
    assert record["status"] == "complete" and json.loads(record["output"]) == {"r": 1}


async def test_control_refusals(emulator: Emulator, http: HTTP) -> None:
    run_id = (await start(http, "wf"))["id"]
    read_only = bearer(emulator.awaitstep_read_only_key)
    forbidden = await control(http, "wf", run_id, "pause", headers=read_only)
    assert (forbidden.status, forbidden.json) == (403, {"error": "Missing scope: deploy"})
    unknown = await control(http, "wf", "run_nope", "terminate")
    assert (unknown.status, unknown.json) == (404, {"error": "Run not found"})
    wrong_workflow = await control(http, "other", run_id, "pause")
    assert wrong_workflow.status == 404
    done = await control(http, "wf", run_id, "pause")
    assert (done.status, done.json) == (400, {"error": "Cannot pause a run that is complete"})


# -- events ------------------------------------------------------------------------


async def test_events_release_a_waiting_run(emulator: Emulator, http: HTTP) -> None:
    emulator.scenario(
        "approval", Scenario(duration=30, queued=0, wait_for_event="approval-decision", result=1)
    )
    record = await start(http, "approval", {"orderId": "ord_001"})
    execution = emulator.executions[0]
    execution.advance(20)  # the run stops at half its duration
    assert (await record_of(http, "approval", record["id"]))["status"] == "waiting"
    assert execution.clock.now() == 15

    other = {"instanceId": record["instanceId"], "eventType": "reminder", "payload": {"n": 1}}
    assert (await trigger(http, "approval", other)).status == 201
    assert (await record_of(http, "approval", record["id"]))["status"] == "waiting"

    event = {
        "instanceId": record["instanceId"],
        "eventType": "approval-decision",
        "payload": {"approved": True, "comments": "Looks good"},
    }
    answer = await trigger(http, "approval", event)
    assert answer.status == 201 and answer.json["id"] == record["id"]
    assert (await record_of(http, "approval", record["id"]))["status"] == "running"
    execution.advance(15)
    assert (await record_of(http, "approval", record["id"]))["status"] == "complete"
    assert execution.events == [
        {"type": "reminder", "payload": {"n": 1}},
        {"type": "approval-decision", "payload": {"approved": True, "comments": "Looks good"}},
    ]
    assert emulator.triggers("approval") == 1 and len(emulator.executions) == 1
    assert emulator.trigger_requests == 3

    late = await trigger(http, "approval", event)
    assert (late.status, late.json) == (400, {"error": "Run is complete: it takes no events"})
    unknown = await trigger(http, "approval", {**event, "instanceId": "nope"})
    assert (unknown.status, unknown.json) == (404, {"error": "Run not found"})


async def test_an_event_sent_early_is_kept(emulator: Emulator, http: HTTP) -> None:
    emulator.scenario("wf", Scenario(duration=0, wait_for_event="go"))
    record = await start(http, "wf")
    assert (await record_of(http, "wf", record["id"]))["status"] == "waiting"
    await trigger(http, "wf", {"instanceId": record["instanceId"], "eventType": "go"})
    assert (await record_of(http, "wf", record["id"]))["status"] == "complete"
    assert emulator.executions[0].events == [{"type": "go", "payload": None}]


# -- refusals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer ask_wrong"}, {"Authorization": "Basic ask_test_key"}],
)
async def test_unauthorized(emulator: Emulator, http: HTTP, headers: dict[str, str]) -> None:
    answer = await trigger(http, "wf", headers=headers)
    assert (answer.status, answer.json) == (401, {"error": "Unauthorized"})
    assert "X-Request-Id" in answer.headers
    assert (await get_run(http, "wf", "run_x", headers=headers)).status == 401
    assert emulator.executions == []


async def test_read_only_key(emulator: Emulator, http: HTTP) -> None:
    read_only = bearer(emulator.awaitstep_read_only_key)
    answer = await trigger(http, "wf", headers=read_only)
    assert (answer.status, answer.json) == (403, {"error": "Missing scope: deploy"})
    run_id = (await start(http, "wf"))["id"]
    assert (await get_run(http, "wf", run_id, headers=read_only)).status == 200


async def test_connection_checks(emulator: Emulator, http: HTTP) -> None:
    missing = await trigger(http, "wf", body={"params": {}})
    assert (missing.status, missing.json) == (400, {"error": "No connection"})
    unknown = await trigger(http, "wf", body={"connectionId": "conn_xyz789", "params": {}})
    assert (unknown.status, unknown.json) == (404, {"error": "Connection not found"})
    assert emulator.executions == []


async def test_params_cap_is_100_kb(emulator: Emulator, http: HTTP) -> None:
    overhead = len(json.dumps({"data": ""}, separators=(",", ":")))
    under = {"data": "x" * (102400 - overhead)}
    over = {"data": "x" * (102400 - overhead + 1)}
    assert (await trigger(http, "wf", under)).status == 201
    answer = await trigger(http, "wf", over)
    assert answer.status == 422
    assert answer.json == {
        "error": "Validation failed",
        "details": [{"path": "params", "message": "Trigger params must be under 100 KB"}],
    }
    assert emulator.triggers("wf") == 1


async def test_bodies_over_1_mb_are_refused(emulator: Emulator, http: HTTP) -> None:
    body = json.dumps({"connectionId": "conn_test", "params": {"d": "x" * 1024 * 1024}})
    async with http.session.post(
        f"{emulator.base_url}/api/workflows/wf/trigger",
        data=io.BytesIO(body.encode()),  # a stream: raw bytes this large warn
        headers=bearer(emulator.awaitstep_api_key) | {"Content-Type": "application/json"},
    ) as response:
        assert response.status == 413
        assert await response.json() == {"error": "Payload too large"}
    assert emulator.executions == []


async def test_not_found_undeployed_and_functions(
    make_http: Callable[..., Awaitable[HTTP]],
) -> None:
    http = await make_http(
        strict_workflows=True, awaitstep_functions=["fn_price"], awaitstep_undeployed=["wf_draft"]
    )
    http.emu.scenario("wf_draft", Scenario())
    http.emu.scenario("fn_price", Scenario())
    unknown = await trigger(http, "wf_unknown")
    assert (unknown.status, unknown.json) == (404, {"error": "Not found"})
    undeployed = await trigger(http, "wf_draft")
    assert (undeployed.status, undeployed.json) == (400, {"error": "No version deployed"})
    function = await trigger(http, "fn_price")
    assert function.status == 400 and "function" in function.json["error"].lower()
    invalid = await http.post(
        "/api/workflows/wf_draft/trigger", data=b"{", headers=bearer(http.emu.awaitstep_api_key)
    )
    assert (invalid.status, invalid.json) == (400, {"error": "Invalid JSON"})
    http.emu.awaitstep_undeployed.clear()
    assert (await trigger(http, "wf_draft")).status == 201


# -- functions ---------------------------------------------------------------------


async def test_functions_are_invoked_by_post(
    make_http: Callable[..., Awaitable[HTTP]],
) -> None:
    http = await make_http(awaitstep_functions=["quote", "broken"])
    emu = http.emu
    emu.scenario("quote", Scenario(result=lambda body: {"EXPORT_total": body["n"] * 2}))
    emu.scenario("broken", Scenario(status="failed", error={"message": "boom"}))
    answer = await http.post(emu.awaitstep_function_url("quote"), {"n": 21})
    assert (answer.status, answer.json) == (200, {"EXPORT_total": 42})
    failed = await http.post(emu.awaitstep_function_url("broken"), {})
    assert (failed.status, failed.json) == (500, {"message": "boom"})
    get = await http.get(emu.awaitstep_function_url("quote"))
    assert get.status == 200
    assert emu.triggers("quote") == 1 and emu.triggers("broken") == 1
    assert len(emu.executions) == 2 and emu.in_flight == 0
    assert emu.trigger_requests == 2 and emu.requests == 3
    missing = await http.post(emu.awaitstep_function_url("not-deployed"), {})
    assert missing.status == 404
    bad_json = await http.post(emu.awaitstep_function_url("quote"), data=b"{")
    assert bad_json.status == 500 and "message" in bad_json.json


# -- faults ------------------------------------------------------------------------


async def test_server_error_fault_carries_the_request_id(emulator: Emulator, http: HTTP) -> None:
    emulator.add_fault(Fault.server_error(platform="awaitstep"))
    emulator.add_fault(Fault.server_error(status=502, platform="awaitstep"))
    answer = await trigger(http, "wf")
    assert answer.status == 500
    assert answer.json == {
        "error": "Internal server error",
        "requestId": answer.headers["X-Request-Id"],
    }
    bad_gateway = await trigger(http, "wf")
    assert bad_gateway.status == 502
    assert bad_gateway.json["requestId"] == bad_gateway.headers["X-Request-Id"]


async def test_rate_limited_is_plain_text(emulator: Emulator, http: HTTP) -> None:
    emulator.add_fault(Fault.rate_limited(retry_after=3, on="trigger", platform="awaitstep"))
    emulator.add_fault(Fault.rate_limited(retry_after=1, on="poll", platform="awaitstep"))
    answer = await trigger(http, "wf")
    assert answer.status == 429
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert answer.body.decode() == "Too many requests, please try again later."
    assert answer.headers["Retry-After"] == "3"
    assert answer.headers["RateLimit-Limit"] == "30"
    assert answer.headers["RateLimit-Remaining"] == "0"
    assert answer.headers["RateLimit-Reset"] == "3"
    assert "X-Request-Id" in answer.headers
    run_id = (await start(http, "wf"))["id"]
    poll = await get_run(http, "wf", run_id)
    assert (poll.status, poll.headers["RateLimit-Limit"]) == (429, "200")


async def test_malformed_slow_drop_and_control_faults(emulator: Emulator, http: HTTP) -> None:
    emulator.scenario("wf", Scenario(duration=60))
    emulator.add_fault(Fault.drop(on="trigger", platform="awaitstep"))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await trigger(http, "wf")
    run_id = (await start(http, "wf"))["id"]
    emulator.add_fault(Fault.malformed(on="poll"))
    with pytest.raises(json.JSONDecodeError):
        json.loads((await get_run(http, "wf", run_id)).body)
    emulator.add_fault(Fault.server_error(on="control"))
    assert (await control(http, "wf", run_id, "pause")).status == 500
    emulator.add_fault(Fault.slow(delay=0.05, on="control"))
    started = time.monotonic()
    assert (await control(http, "wf", run_id, "pause")).status == 200
    assert time.monotonic() - started >= 0.05
    assert [r.fault for r in emulator.request_log] == [
        "drop",
        None,
        "malformed",
        "server_error",
        "slow",
    ]
    assert emulator.triggers("wf") == 1
