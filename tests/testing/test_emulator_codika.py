"""The emulator's Codika routes against the protocol in the platform documents."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import pytest

from workflow_trigger.testing import (
    Emulator,
    Fault,
    Scenario,
    WebhookSignatureError,
    sign_webhook,
    verify_webhook,
    webhook_headers,
)

if TYPE_CHECKING:
    from conftest import CodikaHTTP

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def poll_until_done(codika: CodikaHTTP, execution_id: str) -> dict[str, Any]:
    """Poll until the status is terminal; bounded, paced (not synchronised) by a short sleep."""
    with anyio.fail_after(5):
        while True:
            answer = await codika.poll(execution_id)
            if answer.status == 200 and answer.json["execution"]["status"] != "pending":
                execution: dict[str, Any] = answer.json["execution"]
                return execution
            await anyio.sleep(0.005)


# -- happy path and auth modes ------------------------------------------------


async def test_trigger_then_poll_success(emulator: Emulator, codika: CodikaHTTP) -> None:
    emulator.scenario("main-workflow", Scenario(duration=0.0, result={"x": 1}))
    answer = await codika.trigger("main-workflow", {"payload": {"field1": "value1"}})
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json
    assert list(body) == ["success", "executionId", "message"]
    assert body["success"] is True and body["message"] == "Execution started"
    assert UUID7.match(body["executionId"])

    status = await codika.poll(body["executionId"])
    assert status.status == 200
    execution = status.json["execution"]
    assert execution["executionId"] == body["executionId"]
    assert execution["status"] == "success"
    assert execution["resultData"] == {"x": 1}
    assert ISO_MS.match(execution["createdAt"])
    assert execution["duration"] == 0
    assert "errorDetails" not in execution


async def test_pending_until_duration_has_passed(emulator: Emulator, codika: CodikaHTTP) -> None:
    emulator.scenario("slow", Scenario(duration=60.0, result=1))
    execution_id = await codika.start("slow")
    execution = (await codika.poll(execution_id)).json["execution"]
    assert execution["status"] == "pending"
    assert "resultData" not in execution and "duration" not in execution
    assert emulator.executions[0].status == "pending"


async def test_short_duration_finishes(emulator: Emulator, codika: CodikaHTTP) -> None:
    emulator.scenario("main-workflow", Scenario(duration=0.05, result={"x": 1}))
    started = time.monotonic()
    execution_id = await codika.start("main-workflow")
    execution = await poll_until_done(codika, execution_id)
    assert time.monotonic() - started >= 0.05
    assert execution["resultData"] == {"x": 1}
    assert execution["duration"] == 50


def _signed(emu: Emulator, body: bytes, **kwargs: Any) -> dict[str, str]:
    return {"Content-Type": "application/json"} | webhook_headers(
        emu.codika_signing_secret, body, **kwargs
    )


@pytest.mark.parametrize("mode", ["api_key_header", "org_key_header", "query", "signature"])
async def test_each_auth_mode_triggers_and_polls(
    emulator: Emulator, codika: CodikaHTTP, mode: str
) -> None:
    body = json.dumps({"payload": {"n": 1}}).encode()
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    if mode == "api_key_header":
        headers = {"X-API-Key": emulator.codika_api_key}
    elif mode == "org_key_header":
        headers = {"X-Process-Manager-Key": emulator.codika_org_key}
    elif mode == "query":
        params = {"api_key": emulator.codika_api_key}
    else:
        headers = _signed(emulator, body)
    answer = await codika.trigger("main-workflow", data=body, headers=headers, params=params)
    assert answer.status == 200, answer.body
    execution_id = answer.json["executionId"]
    # Signatures authenticate triggers only; poll with a key in that case.
    poll_headers = codika.key_headers() if mode == "signature" else headers
    status = await codika.poll(execution_id, headers=poll_headers, params=params)
    assert status.status == 200, status.body
    assert status.json["execution"]["status"] == "success"
    assert emulator.executions[0].payload == {"n": 1}


# -- signatures ----------------------------------------------------------------


def test_standard_webhooks_test_vector() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    msg_id, timestamp, body = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign_webhook(secret, msg_id, timestamp, body) == expected
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1a,ignored v1,bm90IGl0 {expected}",
    }
    verify_webhook(secret, headers, body, now=timestamp + 299)
    with pytest.raises(WebhookSignatureError, match="5 minutes"):
        verify_webhook(secret, headers, body, now=timestamp + 301)
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify_webhook(secret, headers, body + b" ", now=timestamp)


@pytest.mark.parametrize("offset", [-301, 301])
async def test_signature_timestamp_out_of_tolerance_is_401(
    emulator: Emulator, codika: CodikaHTTP, offset: int
) -> None:
    body = b'{"payload": {}}'
    headers = _signed(emulator, body, timestamp=int(time.time()) + offset)
    answer = await codika.trigger("main-workflow", data=body, headers=headers)
    assert answer.status == 401
    assert answer.json == {
        "success": False,
        "error": "The webhook-timestamp header is more than 5 minutes from the current time",
        "code": "INVALID_SIGNATURE",
    }
    assert emulator.executions == []


async def test_bad_signature_wins_over_a_valid_key(emulator: Emulator, codika: CodikaHTTP) -> None:
    body = b'{"payload": {}}'
    headers = _signed(emulator, b"something else") | codika.key_headers()
    answer = await codika.trigger("main-workflow", data=body, headers=headers)
    assert answer.status == 401
    assert answer.json["code"] == "INVALID_SIGNATURE"
    assert headers["webhook-signature"] not in answer.body.decode()
    partial = {"webhook-id": "msg_1"} | codika.key_headers()
    answer = await codika.trigger("main-workflow", data=body, headers=partial)
    assert answer.status == 401 and "incomplete" in answer.json["error"]


async def test_rotated_signatures_any_valid_one_passes(
    emulator: Emulator, codika: CodikaHTTP
) -> None:
    body = b'{"payload": {"a": 1}}'
    headers = _signed(emulator, body)
    headers["webhook-signature"] = "v1,AAAAAAAA " + headers["webhook-signature"]
    answer = await codika.trigger("main-workflow", data=body, headers=headers)
    assert answer.status == 200, answer.body


# -- refusals ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "params", "named"),
    [
        ({"X-API-Key": "ck_wrong_secret_value"}, {}, "X-API-Key"),
        ({"X-Process-Manager-Key": "cko_wrong_secret_value"}, {}, "X-Process-Manager-Key"),
        ({}, {"api_key": "ck_wrong_secret_value"}, "api_key query parameter"),
    ],
)
async def test_wrong_key_is_401_without_echoing_it(
    emulator: Emulator,
    codika: CodikaHTTP,
    headers: dict[str, str],
    params: dict[str, str],
    named: str,
) -> None:
    trig = await codika.trigger("main-workflow", headers=headers, params=params)
    poll = await codika.poll("whatever", headers=headers, params=params)
    for answer in (trig, poll):
        assert answer.status == 401
        assert answer.json["success"] is False and answer.json["code"] == "UNAUTHORIZED"
        assert named in answer.json["error"]
        assert b"wrong_secret_value" not in answer.body
    assert emulator.executions == []


async def test_first_credential_present_decides(emulator: Emulator, codika: CodikaHTTP) -> None:
    headers = {"X-API-Key": "ck_stale", "X-Process-Manager-Key": emulator.codika_org_key}
    assert (await codika.trigger("main-workflow", headers=headers)).status == 401


async def test_missing_credentials_is_401(codika: CodikaHTTP) -> None:
    answer = await codika.trigger("main-workflow", headers={})
    assert answer.status == 401
    assert answer.json["error"].startswith("No credentials")


async def test_foreign_key_is_403(emulator: Emulator, codika: CodikaHTTP) -> None:
    answer = await codika.trigger("main-workflow", headers={"X-API-Key": "ck_other_instance"})
    assert answer.status == 403
    assert answer.json["code"] == "FORBIDDEN"
    assert b"ck_other_instance" not in answer.body


async def test_inactive_instance_is_412_for_triggers_only(
    emulator: Emulator, codika: CodikaHTTP
) -> None:
    execution_id = await codika.start("main-workflow")
    emulator.inactive = True
    answer = await codika.trigger("main-workflow")
    assert answer.status == 412
    assert answer.json == {
        "success": False,
        "error": "Process instance is not active",
        "code": "PROCESS_INSTANCE_INACTIVE",
    }
    assert (await codika.poll(execution_id)).status == 200
    emulator.inactive = False
    assert (await codika.trigger("main-workflow")).status == 200
    assert emulator.triggers("main-workflow") == 2


async def test_unknown_instance_and_execution_are_404(codika: CodikaHTTP) -> None:
    answer = await codika.trigger("main-workflow", instance="pi_nope")
    assert (answer.status, answer.json["code"]) == (404, "PROCESS_INSTANCE_NOT_FOUND")
    answer = await codika.poll(str(uuid.uuid4()))
    assert (answer.status, answer.json["code"]) == (404, "EXECUTION_NOT_FOUND")
    assert answer.json["success"] is False


async def test_strict_workflows_unknown_workflow_is_404() -> None:
    async with Emulator(strict_workflows=True) as emu, aiohttp.ClientSession() as session:
        emu.scenario("known", Scenario())
        url = f"{emu.base_url}/webhook/{emu.codika_instance_id}"
        headers = {"X-API-Key": emu.codika_api_key}
        async with session.post(f"{url}/unknown", json={}, headers=headers) as response:
            assert response.status == 404
            assert await response.json() == {
                "success": False,
                "error": "Workflow not found",
                "code": "WORKFLOW_NOT_FOUND",
            }
        async with session.post(f"{url}/known", json={}, headers=headers) as response:
            assert response.status == 200
        assert emu.trigger_requests == 2 and emu.triggers("unknown") == 0


async def test_register_delay_404_then_200(emulator: Emulator, codika: CodikaHTTP) -> None:
    emulator.scenario("late", Scenario(register_delay=0.1, result="ok"))
    execution_id = await codika.start("late")
    first = await codika.poll(execution_id)
    assert (first.status, first.json["code"]) == (404, "EXECUTION_NOT_FOUND")
    execution = await poll_until_done(codika, execution_id)
    assert execution["resultData"] == "ok"
    assert emulator.polls(execution_id) >= 2


async def test_invalid_json_body_is_400(emulator: Emulator, codika: CodikaHTTP) -> None:
    answer = await codika.trigger("main-workflow", data=b"{not json")
    assert (answer.status, answer.json["code"]) == (400, "INVALID_JSON")
    assert emulator.executions == []


# -- payloads, results, outcomes ------------------------------------------------


@pytest.mark.parametrize(
    ("data", "payload"),
    [
        (b'{"payload": {"text_input": "Hello"}}', {"text_input": "Hello"}),
        (b'{"text_input": "Hello"}', {"text_input": "Hello"}),
        (b"", {}),
        (b'{"payload": {}}', {}),
        (b"[1, 2]", [1, 2]),
    ],
)
async def test_payload_passthrough(
    emulator: Emulator, codika: CodikaHTTP, data: bytes, payload: Any
) -> None:
    emulator.scenario("echo", Scenario(result=lambda received: {"echo": received}))
    execution_id = (await codika.trigger("echo", data=data)).json["executionId"]
    assert emulator.executions[0].payload == payload
    assert emulator.request_log[0].body == data
    execution = (await codika.poll(execution_id)).json["execution"]
    assert execution["resultData"] == {"echo": payload}


@pytest.mark.parametrize("status", ["failed", "error"])
async def test_failed_runs_carry_error_details(
    emulator: Emulator, codika: CodikaHTTP, status: str
) -> None:
    error = {"message": "boom", "type": "node_failure", "code": "E1", "failedNodeName": "HTTP"}
    emulator.scenario("bad", Scenario(status=status, error=error))
    execution = (await codika.poll(await codika.start("bad"))).json["execution"]
    assert execution["status"] == status
    assert execution["errorDetails"] == error
    assert "resultData" not in execution


async def test_failed_run_without_error_gets_a_default(
    emulator: Emulator, codika: CodikaHTTP
) -> None:
    emulator.scenario("bad", Scenario(status="failed"))
    execution = (await codika.poll(await codika.start("bad"))).json["execution"]
    assert execution["errorDetails"]["message"] == "Workflow execution failed"


async def test_id_field_variants(emulator: Emulator, codika: CodikaHTTP) -> None:
    emulator.scenario("with-id", Scenario(id_field="id"))
    emulator.scenario("no-id", Scenario(id_field=None))
    answer = (await codika.trigger("with-id")).json
    assert list(answer) == ["success", "id", "message"]
    assert (await codika.poll(answer["id"])).status == 200
    assert (await codika.trigger("no-id")).json == {
        "success": True,
        "message": "Execution started",
    }
    assert emulator.triggers("no-id") == 1


def test_scenario_validation() -> None:
    with pytest.raises(ValueError):
        Scenario(status="completed")
    with pytest.raises(ValueError):
        Scenario(duration=(2.0, 1.0))
    with pytest.raises(ValueError):
        Scenario(duration=-1)
    with pytest.raises(ValueError):
        Fault.server_error(status=404)
    with pytest.raises(ValueError):
        Fault.drop(count=0)
