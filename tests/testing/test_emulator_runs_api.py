"""The emulator's Runs API routes against 002_167b1ba1a5fa38fd.txt and the platform notes."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import pytest

from workflow_trigger.testing import Emulator, Fault, Scenario

if TYPE_CHECKING:
    from conftest import HTTP, Answer

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RUN_KEYS = [
    "id",
    "status",
    "input",
    "output",
    "error",
    "startedAt",
    "completedAt",
    "steps",
    "triggerType",
    "durationMs",
    "createdAt",
]


def key(emu: Emulator) -> dict[str, str]:
    return {"x-api-key": emu.runs_api_api_key}


async def run(http: HTTP, workflow: str = "wf_abc123", body: Any = None, **kw: Any) -> Answer:
    sent = {"input": {}} if body is None else body
    return await http.post(f"/api/v1/workflows/{workflow}/run", sent, headers=key(http.emu), **kw)


async def start(http: HTTP, workflow: str = "wf_abc123", body: Any = None) -> str:
    answer = await run(http, workflow, body)
    assert answer.status == 200, answer.body
    run_id: str = answer.json["data"]["runId"]
    return run_id


async def get_run(http: HTTP, run_id: str, headers: dict[str, str] | None = None) -> Answer:
    return await http.get(
        f"/api/v1/runs/{run_id}", headers=key(http.emu) if headers is None else headers
    )


async def data(http: HTTP, run_id: str) -> dict[str, Any]:
    answer = await get_run(http, run_id)
    assert answer.status == 200, answer.body
    assert answer.json["success"] is True
    found: dict[str, Any] = answer.json["data"]
    return found


# -- happy path ------------------------------------------------------------------


async def test_run_then_read_a_completed_run(emulator: Emulator, http: HTTP) -> None:
    emulator.scenario(
        "wf_abc123",
        Scenario(result={"invoiceId": "inv_123"}, steps=("create-invoice",)),
    )
    body = {
        "input": {"customerId": "cus_xxx", "amount": 9900},
        "connectionId": "conn_production_stripe",
        "idempotencyKey": "unique-key-123",
    }
    answer = await run(http, body=body)
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    assert list(answer.json) == ["success", "data"]
    started = answer.json["data"]
    assert list(started) == ["runId", "status", "workflowId", "workflowVersion"]
    assert started["runId"].startswith("run_")
    assert started["status"] == "pending"
    assert (started["workflowId"], started["workflowVersion"]) == ("wf_abc123", 1)

    run_data = await data(http, started["runId"])
    assert list(run_data) == RUN_KEYS
    assert run_data["id"] == started["runId"]
    assert run_data["status"] == "completed"
    assert run_data["input"] == {"customerId": "cus_xxx", "amount": 9900}
    assert run_data["output"] == {"invoiceId": "inv_123"}
    assert run_data["error"] is None
    assert run_data["steps"] == [
        {"id": "create-invoice", "status": "completed", "output": {"invoiceId": "inv_123"}}
    ]
    assert run_data["triggerType"] == "api"
    assert run_data["durationMs"] == 0
    for field in ("startedAt", "completedAt", "createdAt"):
        assert ISO_MS.match(run_data[field]), field
    execution = emulator.executions[0]
    assert execution.platform == "runs_api"
    assert execution.extra["connectionId"] == "conn_production_stripe"
    assert execution.extra["idempotencyKey"] == "unique-key-123"


async def test_missing_or_null_input_is_an_empty_object(emulator: Emulator, http: HTTP) -> None:
    emulator.scenario("echo", Scenario(result=lambda received: {"echo": received}))
    first = await start(http, "echo", {})
    answer = await http.post("/api/v1/workflows/echo/run", data=b"", headers=key(emulator))
    second = answer.json["data"]["runId"]
    for run_id in (first, second):
        assert (await data(http, run_id))["output"] == {"echo": {}}


async def test_pending_then_running(emulator: Emulator, http: HTTP) -> None:
    emulator.scenario("queued", Scenario(duration=60, queued=30, steps=("a", "b")))
    emulator.scenario("going", Scenario(duration=60, queued=0, steps=("a", "b")))
    pending = await data(http, await start(http, "queued"))
    assert pending["status"] == "pending"
    assert (pending["startedAt"], pending["completedAt"], pending["durationMs"]) == (None,) * 3
    assert pending["output"] is None and pending["error"] is None
    assert [s["status"] for s in pending["steps"]] == ["pending", "pending"]
    running = await data(http, await start(http, "going"))
    assert running["status"] == "running"
    assert ISO_MS.match(running["startedAt"]) and running["completedAt"] is None
    assert [s["status"] for s in running["steps"]] == ["running", "pending"]


async def test_steps_progress_over_the_duration(emulator: Emulator, http: HTTP) -> None:
    steps = ("fetch", "transform", "send")
    emulator.scenario("wf", Scenario(duration=30, queued=3, steps=steps, result={"ok": 1}))
    run_id = await start(http, "wf")
    execution = emulator.executions[0]
    seen = []
    for advance in (0, 5, 6, 10, 9):  # run time 0, 5, 11, 21, 30
        execution.advance(advance)
        run_data = await data(http, run_id)
        seen.append((run_data["status"], [s["status"] for s in run_data["steps"]]))
        assert [s["id"] for s in run_data["steps"]] == list(steps)
    assert seen == [
        ("pending", ["pending", "pending", "pending"]),
        ("running", ["running", "pending", "pending"]),
        ("running", ["completed", "running", "pending"]),
        ("running", ["completed", "completed", "running"]),
        ("completed", ["completed", "completed", "completed"]),
    ]
    final = await data(http, run_id)
    assert [s["output"] for s in final["steps"]] == [None, None, {"ok": 1}]
    assert final["durationMs"] >= 0


async def test_statuses_follow_the_clock_in_order(emulator: Emulator, http: HTTP) -> None:
    emulator.scenario("wf", Scenario(duration=0.15, queued=0.05))
    run_id = await start(http, "wf")
    statuses: list[str] = []
    with anyio.fail_after(5):
        while not statuses or statuses[-1] != "completed":
            status = (await data(http, run_id))["status"]
            if not statuses or statuses[-1] != status:
                statuses.append(status)
            await anyio.sleep(0.005)  # paces the polls; the loop ends on the status
    order = ["pending", "running", "completed"]
    assert statuses == sorted(statuses, key=order.index) and statuses[-1] == "completed"
    run_data = await data(http, run_id)
    assert run_data["startedAt"] <= run_data["completedAt"]
    assert 100 <= run_data["durationMs"] <= 5000


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        ("failed", None, {"code": "STEP_ERROR", "message": "Step 'send' failed"}),
        ("error", {"code": "E1", "message": "boom"}, {"code": "E1", "message": "boom"}),
        ("timeout", None, {"code": "TIMEOUT", "message": "Workflow execution timed out"}),
    ],
)
async def test_failed_runs(
    emulator: Emulator, http: HTTP, status: str, error: Any, expected: dict[str, str]
) -> None:
    emulator.scenario("bad", Scenario(status=status, error=error, steps=("fetch", "send")))
    run_data = await data(http, await start(http, "bad"))
    assert run_data["status"] == "failed"
    assert run_data["error"] == expected
    assert run_data["output"] is None
    assert [s["status"] for s in run_data["steps"]] == ["completed", "failed"]


async def test_a_run_cancelled_elsewhere_is_cancelled(emulator: Emulator, http: HTTP) -> None:
    emulator.scenario("wf", Scenario(duration=60, queued=0, steps=("a", "b")))
    run_id = await start(http, "wf")
    emulator.executions[0].terminate()  # no cancel endpoint is documented: out of band
    run_data = await data(http, run_id)
    assert run_data["status"] == "cancelled"
    assert run_data["error"] is None and run_data["output"] is None
    assert ISO_MS.match(run_data["completedAt"])
    assert [s["status"] for s in run_data["steps"]] == ["cancelled", "pending"]
    assert emulator.in_flight == 0
    async with http.session.post(
        f"{emulator.base_url}/api/v1/runs/{run_id}/cancel", headers=key(emulator)
    ) as response:
        assert response.status in (404, 405)


# -- idempotency -----------------------------------------------------------------


async def test_idempotency_key_returns_the_existing_run(emulator: Emulator, http: HTTP) -> None:
    emulator.scenario("wf", Scenario(result=1))
    body = {"input": {"orderId": "order_123"}, "idempotencyKey": "process-order-123"}
    first = await run(http, "wf", body)
    second = await run(http, "wf", body)
    assert first.json["data"]["runId"] == second.json["data"]["runId"]
    assert second.json["data"]["status"] == "completed"  # the run as it is now
    assert emulator.triggers("wf") == 1
    assert len(emulator.executions) == 1
    assert emulator.trigger_requests == 2
    assert emulator.idempotent_replays == 1
    assert emulator.request_log[1].replayed is emulator.executions[0]
    assert emulator.request_log[1].started is None
    other = await run(http, "wf", {"input": {}, "idempotencyKey": "process-order-124"})
    assert other.json["data"]["runId"] != first.json["data"]["runId"]
    assert emulator.triggers("wf") == 2
    no_key = [await start(http, "wf") for _ in range(2)]
    assert no_key[0] != no_key[1]


async def test_idempotency_keys_expire(make_http: Callable[..., Awaitable[HTTP]]) -> None:
    http = await make_http(runs_api_idempotency_ttl=0)
    body = {"input": {}, "idempotencyKey": "k"}
    ids = {(await run(http, "wf", body)).json["data"]["runId"] for _ in range(2)}
    assert len(ids) == 2 and http.emu.idempotent_replays == 0


# -- errors ----------------------------------------------------------------------


def envelope(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"success": False, "error": {"code": code, "message": message, **extra}}


async def test_authentication(emulator: Emulator, http: HTTP) -> None:
    path = "/api/v1/workflows/wf/run"
    missing = await http.post(path, {"input": {}})
    wrong = await http.post(path, {"input": {}}, headers={"x-api-key": "wfk_wrong_secret"})
    assert (missing.status, wrong.status) == (401, 401)
    assert missing.json["error"]["code"] == "UNAUTHORIZED"
    assert wrong.json == envelope("UNAUTHORIZED", "Invalid API key")
    assert b"wfk_wrong_secret" not in wrong.body
    read_only = {"x-api-key": emulator.runs_api_read_only_key or ""}
    forbidden = await http.post(path, {"input": {}}, headers=read_only)
    assert forbidden.status == 403
    assert forbidden.json == envelope("FORBIDDEN", "The API key lacks the workflows:execute scope")
    run_id = await start(http, "wf")
    assert (await get_run(http, run_id, headers=read_only)).status == 200
    assert (await get_run(http, run_id, headers={})).status == 401
    assert emulator.executions[0].id == run_id and len(emulator.executions) == 1


@pytest.mark.parametrize(
    ("form", "detail"),
    [
        ("path", {"path": ["customerId"], "message": "Required"}),
        ("field", {"field": "customerId", "message": "Required"}),
    ],
)
async def test_validation_error_for_required_input(
    make_http: Callable[..., Awaitable[HTTP]], form: str, detail: dict[str, Any]
) -> None:
    http = await make_http(runs_api_details_form=form)
    http.emu.scenario("invoice", Scenario(required_inputs=("customerId", "amount")))
    answer = await run(http, "invoice", {"input": {"amount": 9900}})
    assert answer.status == 400
    assert answer.json == envelope("VALIDATION_ERROR", "Input validation failed", details=[detail])
    assert http.emu.executions == []
    assert (await run(http, "invoice", {"input": {"customerId": "c", "amount": 1}})).status == 200


@pytest.mark.parametrize(
    ("data", "details"),
    [
        (
            b'{"input": "text"}',
            [{"path": ["input"], "message": "Expected object, received string"}],
        ),
        (
            b'{"idempotencyKey": 7}',
            [{"path": ["idempotencyKey"], "message": "Expected string, received number"}],
        ),
        (b"[1]", [{"path": [], "message": "Expected object, received array"}]),
    ],
)
async def test_malformed_bodies_are_validation_errors(
    emulator: Emulator, http: HTTP, data: bytes, details: list[Any]
) -> None:
    answer = await http.post("/api/v1/workflows/wf/run", data=data, headers=key(emulator))
    assert answer.status == 400
    assert answer.json == envelope("VALIDATION_ERROR", "Invalid request body", details=details)
    not_json = await http.post("/api/v1/workflows/wf/run", data=b"{oops", headers=key(emulator))
    assert (not_json.status, not_json.json["error"]["code"]) == (400, "VALIDATION_ERROR")


async def test_inactive_workflow_is_invalid_status(emulator: Emulator, http: HTTP) -> None:
    emulator.runs_api_workflow_status["wf_draft"] = "draft"
    answer = await run(http, "wf_draft")
    assert answer.status == 400
    assert answer.json == envelope(
        "INVALID_STATUS", "Workflow must be active to run. Current status: draft"
    )
    emulator.runs_api_workflow_status["wf_draft"] = "active"
    assert (await run(http, "wf_draft")).status == 200


async def test_not_found(make_http: Callable[..., Awaitable[HTTP]]) -> None:
    http = await make_http(strict_workflows=True, runs_api_connection_ids=["conn_live"])
    http.emu.scenario("known", Scenario())
    answer = await run(http, "unknown")
    assert answer.status == 404
    assert answer.json == envelope("NOT_FOUND", "Workflow not found")
    answer = await run(http, "known", {"input": {}, "connectionId": "conn_nope"})
    assert answer.json == envelope("NOT_FOUND", "Connection not found")
    assert (await run(http, "known", {"connectionId": "conn_live"})).status == 200
    answer = await get_run(http, "run_does_not_exist")
    assert answer.status == 404
    assert answer.json == envelope("NOT_FOUND", "Run not found")


async def test_envelope_without_success_switch(make_http: Callable[..., Awaitable[HTTP]]) -> None:
    http = await make_http(runs_api_error_success=False)
    answer = await get_run(http, "run_x")
    assert answer.json == {"error": {"code": "NOT_FOUND", "message": "Run not found"}}


async def test_register_delay_then_found(emulator: Emulator, http: HTTP) -> None:
    emulator.scenario("late", Scenario(register_delay=0.05))
    run_id = await start(http, "late")
    assert (await get_run(http, run_id)).status == 404
    with anyio.fail_after(5):
        while True:
            answer = await get_run(http, run_id)
            if answer.status != 404:
                break
            await anyio.sleep(0.005)  # paces the polls
    assert answer.json["data"]["status"] == "completed"


# -- rate limits -----------------------------------------------------------------


async def test_no_rate_limit_headers_when_no_limit_is_enforced(
    emulator: Emulator, http: HTTP
) -> None:
    """Announcing the documented limits without enforcing them made clients wait for resets."""
    answers = [await run(http, "wf"), await get_run(http, "run_missing")]
    assert [a.status for a in answers] == [200, 404]
    for answer in answers:
        assert not [name for name in answer.headers if name.lower().startswith("x-ratelimit")]


async def test_rate_limit_headers_on_every_response_when_enforced(
    make_http: Callable[..., Awaitable[HTTP]],
) -> None:
    http = await make_http(runs_api_rate_limit=500, runs_api_read_rate_limit=1000)
    before = time.time()
    answers = [
        await run(http, "wf"),
        await run(http, "wf"),
        await http.post("/api/v1/workflows/wf/run", {"input": {}}),  # 401
        await get_run(http, "run_missing"),  # 404, the read window
    ]
    assert [a.status for a in answers] == [200, 200, 401, 404]
    assert [a.headers["X-RateLimit-Limit"] for a in answers] == ["500", "500", "500", "1000"]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["499", "498", "500", "999"]
    reset = int(answers[0].headers["X-RateLimit-Reset"])
    assert math.floor(before) + 60 <= reset <= math.ceil(time.time()) + 60


async def test_rate_limit_enforced_when_configured(
    make_http: Callable[..., Awaitable[HTTP]],
) -> None:
    http = await make_http(runs_api_rate_limit=2)
    statuses = [(await run(http, "wf")).status for _ in range(2)]
    limited = await run(http, "wf")
    assert [*statuses, limited.status] == [200, 200, 429]
    assert limited.json == envelope(
        "RATE_LIMITED", "Rate limit exceeded. Limit: 2 requests per minute."
    )
    assert limited.headers["X-RateLimit-Limit"] == "2"
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert 0 < int(limited.headers["X-RateLimit-Reset"]) - time.time() <= 61
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    assert http.emu.triggers("wf") == 2
    run_id = http.emu.executions[0].id
    assert (await get_run(http, run_id)).status == 200  # reads have their own window
    other = {"x-api-key": http.emu.runs_api_read_only_key or ""}
    answer = await http.post("/api/v1/workflows/wf/run", {"input": {}}, headers=other)
    assert answer.status == 403  # per key: another key is not limited


async def test_rate_limit_reset_in_seconds_switch(
    make_http: Callable[..., Awaitable[HTTP]],
) -> None:
    http = await make_http(runs_api_rate_limit=500, runs_api_rate_limit_reset="seconds")
    answer = await run(http, "wf")
    assert answer.headers["X-RateLimit-Reset"] == "60"


# -- faults and counters ---------------------------------------------------------


async def test_faults_render_the_runs_api_envelope(emulator: Emulator, http: HTTP) -> None:
    emulator.add_fault(Fault.server_error(status=503, on="trigger", platform="runs_api"))
    emulator.add_fault(Fault.rate_limited(retry_after=2, on="poll", platform="runs_api"))
    answer = await run(http, "wf")
    assert answer.status == 503
    assert answer.json == envelope("SERVICE_UNAVAILABLE", "Service Unavailable")
    run_id = await start(http, "wf")
    limited = await get_run(http, run_id)
    assert limited.status == 429 and limited.headers["Retry-After"] == "2"
    assert limited.json == envelope("RATE_LIMITED", "Rate limit exceeded")
    assert (await get_run(http, run_id)).status == 200


async def test_faults_restricted_to_another_platform_do_not_apply(
    emulator: Emulator, http: HTTP
) -> None:
    emulator.add_fault(Fault.server_error(platform="codika"))
    assert (await run(http, "wf")).status == 200
    assert emulator.faults_remaining == 1


async def test_malformed_slow_and_drop(emulator: Emulator, http: HTTP) -> None:
    emulator.add_fault(Fault.malformed(on="poll"))
    emulator.add_fault(Fault.slow(delay=0.05, on="poll"))
    emulator.add_fault(Fault.drop(on="trigger"))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await run(http, "wf")
    assert emulator.executions == [] and emulator.request_log[0].status is None
    run_id = await start(http, "wf")
    with pytest.raises(json.JSONDecodeError):
        json.loads((await get_run(http, run_id)).body)
    started = time.monotonic()
    assert (await get_run(http, run_id)).status == 200
    assert time.monotonic() - started >= 0.05


async def test_counters(emulator: Emulator, http: HTTP) -> None:
    emulator.scenario("long", Scenario(duration=60))
    first, second = await start(http, "wf"), await start(http, "long")
    for run_id in (first, first, second):
        await get_run(http, run_id)
    assert (emulator.trigger_requests, emulator.poll_requests) == (2, 3)
    assert (emulator.triggers("wf"), emulator.triggers("long")) == (1, 1)
    assert (emulator.polls(first), emulator.polls(second)) == (2, 1)
    assert (emulator.in_flight, emulator.max_in_flight) == (1, 2)
    assert {r.platform for r in emulator.request_log} == {"runs_api"}
    assert [r.operation for r in emulator.request_log] == ["trigger"] * 2 + ["poll"] * 3
    assert emulator.operation_requests("poll") == 3


async def test_a_scenario_applies_on_every_platform(emulator: Emulator, http: HTTP) -> None:
    emulator.scenario("shared", Scenario(result={"same": True}))
    run_id = await start(http, "shared")
    assert (await data(http, run_id))["output"] == {"same": True}
    codika = await http.post(
        f"/webhook/{emulator.codika_instance_id}/shared",
        {"payload": {}},
        headers={"X-API-Key": emulator.codika_api_key},
    )
    status = await http.get(
        f"/status/{emulator.codika_instance_id}/{codika.json['executionId']}",
        headers={"X-API-Key": emulator.codika_api_key},
    )
    assert status.json["execution"]["resultData"] == {"same": True}
    assert emulator.triggers("shared") == 2
    # Each platform finds only its own runs.
    assert (await get_run(http, codika.json["executionId"])).status == 404
