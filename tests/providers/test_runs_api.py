"""The Runs API provider, from the document's own JSON examples; no HTTP."""

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from workflow_trigger import (
    APIError,
    AuthenticationError,
    Execution,
    InvalidInputError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ServerError,
    Status,
    UnsupportedOperation,
)
from workflow_trigger.providers.base import Provider, Response, TriggerContext, TriggerOptions
from workflow_trigger.providers.runs_api import RunsApi, rate_limit_hint

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
CONTEXT = TriggerContext(now=NOW, message_id="msg_1")
KEY = "wfk_super_secret_key"
BASE = "http://localhost:3000"

TRIGGERED = {
    "success": True,
    "data": {
        "runId": "run_xyz789",
        "status": "pending",
        "workflowId": "wf_abc123",
        "workflowVersion": 3,
    },
}
COMPLETED = {
    "success": True,
    "data": {
        "id": "run_xyz789",
        "status": "completed",
        "input": {"customerId": "cus_xxx"},
        "output": {"invoiceId": "inv_123"},
        "startedAt": "2024-01-15T10:00:00.000Z",
        "completedAt": "2024-01-15T10:00:05.000Z",
        "steps": [{"id": "create-invoice", "status": "completed", "output": {"id": "inv_123"}}],
    },
}


def response(status: int, body: Any, **headers: str) -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Response(
        status=status, headers={k.replace("_", "-"): v for k, v in headers.items()}, body=raw
    )


def runs(**kwargs: Any) -> RunsApi:
    return RunsApi(BASE, KEY, **kwargs)


def execution(provider: RunsApi) -> Execution:
    return provider.parse_trigger("wf_abc123", response(200, TRIGGERED), CONTEXT).execution


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"success": False, "error": {"code": code, "message": message, **extra}}


def test_is_a_provider_with_the_documented_defaults() -> None:
    provider = runs()
    assert isinstance(provider, Provider)
    assert provider.kind == "runs_api"
    assert provider.default_rate_limit == pytest.approx(500 / 60)
    assert provider.default_poll.interval == 1.0


def test_trigger_request_from_the_document() -> None:
    req = runs().trigger_request("wf_abc123", {"customerId": "cus_xxx", "amount": 9900}, CONTEXT)
    assert req.kind == "trigger" and req.method == "POST"
    assert req.url == f"{BASE}/api/v1/workflows/wf_abc123/run"
    assert req.headers["x-api-key"] == KEY
    assert req.headers["Content-Type"] == "application/json"
    assert json.loads(req.body or b"") == {"input": {"customerId": "cus_xxx", "amount": 9900}}
    assert req.retry_after_send is False
    assert KEY not in repr(req) and KEY not in req.redacted_url


def test_no_payload_sends_an_empty_input() -> None:
    req = runs().trigger_request("wf", None, CONTEXT)
    assert json.loads(req.body or b"") == {"input": {}}


def test_an_idempotency_key_is_sent_and_makes_the_trigger_retryable() -> None:
    options = TriggerOptions(idempotency_key="process-order-123")
    req = runs().trigger_request(
        "wf", {"orderId": "order_123"}, attrs.evolve(CONTEXT, options=options)
    )
    assert json.loads(req.body or b"")["idempotencyKey"] == "process-order-123"
    assert req.retry_after_send is True


@pytest.mark.parametrize("key", ["", "  "])
def test_blank_idempotency_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidInputError, match="idempotency_key"):
        runs().trigger_request(
            "wf", {}, attrs.evolve(CONTEXT, options=TriggerOptions(idempotency_key=key))
        )


def test_connection_id_from_the_provider_or_the_options() -> None:
    provider = runs(connection_id="conn_production_stripe")
    body = json.loads(provider.trigger_request("wf", {}, CONTEXT).body or b"")
    assert body["connectionId"] == "conn_production_stripe"
    options = TriggerOptions(connection_id="conn_sandbox")
    body = json.loads(
        provider.trigger_request("wf", {}, attrs.evolve(CONTEXT, options=options)).body or b""
    )
    assert body["connectionId"] == "conn_sandbox"
    body = json.loads(runs().trigger_request("wf", {}, CONTEXT).body or b"")
    assert "connectionId" not in body


def test_path_characters_cannot_escape_their_segment() -> None:
    req = runs().trigger_request("a/../b?x#y", {}, CONTEXT)
    assert req.url == f"{BASE}/api/v1/workflows/a%2F..%2Fb%3Fx%23y/run"
    ex = Execution(
        provider="runs_api", workflow_id="wf", execution_id="r/../x?y#z", triggered_at=NOW
    )
    assert runs().status_request(ex).url == f"{BASE}/api/v1/runs/r%2F..%2Fx%3Fy%23z"


@pytest.mark.parametrize("workflow_id", ["", ".", "..", "a\nb", None])
def test_bad_workflow_ids_are_refused(workflow_id: Any) -> None:
    with pytest.raises(InvalidInputError):
        runs().trigger_request(workflow_id, {}, CONTEXT)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((BASE, ""), {}),
        ((BASE, None), {}),
        (("localhost:3000", KEY), {}),
        ((BASE + "?x=1", KEY), {}),
        ((BASE, KEY), {"connection_id": ""}),
    ],
)
def test_bad_configuration_is_refused(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        RunsApi(*args, **kwargs)


def test_trailing_slash_in_base_url_is_dropped() -> None:
    req = RunsApi(BASE + "/", KEY).trigger_request("wf", {}, CONTEXT)
    assert req.url == f"{BASE}/api/v1/workflows/wf/run"


def test_parse_trigger_from_the_document() -> None:
    triggered = runs().parse_trigger("wf_abc123", response(200, TRIGGERED), CONTEXT)
    ex = triggered.execution
    assert ex.provider == "runs_api" and ex.workflow_id == "wf_abc123"
    assert ex.execution_id == "run_xyz789"
    assert ex.extras == {"workflow_version": "3"}
    assert ex.triggered_at == NOW
    assert triggered.snapshot is None


def test_trigger_accepts_an_envelope_without_success_and_an_id_fallback() -> None:
    body = {"data": {"id": "run_1", "status": "completed"}}
    triggered = runs().parse_trigger("wf", response(201, body), CONTEXT)
    assert triggered.execution.execution_id == "run_1"
    assert triggered.execution.extras == {}
    assert triggered.snapshot is None  # an idempotent replay: the output needs one poll


@pytest.mark.parametrize("body", [{"success": True, "data": {}}, {"data": {"runId": ""}}])
def test_trigger_without_a_run_id_is_a_protocol_error(body: Any) -> None:
    with pytest.raises(ProtocolError, match="runId"):
        runs().parse_trigger("wf", response(200, body), CONTEXT)


def test_trigger_answer_that_is_not_json_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="JSON"):
        runs().parse_trigger("wf", response(200, b"<html>"), CONTEXT)


def test_status_request() -> None:
    provider = runs()
    req = provider.status_request(execution(provider))
    assert req.kind == "status" and req.method == "GET"
    assert req.url == f"{BASE}/api/v1/runs/run_xyz789"
    assert req.headers == {"x-api-key": KEY}
    assert req.body is None and req.retry_after_send is True


def test_completed_run_from_the_document() -> None:
    provider = runs()
    snap = provider.parse_status(execution(provider), response(200, COMPLETED), NOW)
    assert snap.status is Status.SUCCEEDED and snap.raw_status == "completed"
    assert snap.result == {"invoiceId": "inv_123"}
    assert snap.error is None
    assert len(snap.steps) == 1
    step = snap.steps[0]
    assert step.id == "create-invoice" and step.name is None
    assert step.status is Status.SUCCEEDED and step.raw_status == "completed"
    assert snap.observed_at == NOW
    assert snap.started_at == datetime(2024, 1, 15, 10, 0, 0, tzinfo=timezone.utc)
    assert snap.finished_at == datetime(2024, 1, 15, 10, 0, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("pending", Status.PENDING),
        ("running", Status.RUNNING),
        ("completed", Status.SUCCEEDED),
        ("failed", Status.FAILED),
        ("cancelled", Status.CANCELLED),
        ("warming_up", Status.RUNNING),
    ],
)
def test_every_status_value(raw: str, status: Status) -> None:
    provider = runs()
    body = {"success": True, "data": {"id": "run_xyz789", "status": raw}}
    snap = provider.parse_status(execution(provider), response(200, body), NOW)
    assert snap.status is status and snap.raw_status == raw
    assert snap.result is None


def test_failed_run_carries_its_error() -> None:
    provider = runs()
    body = {
        "success": True,
        "data": {
            "id": "run_xyz789",
            "status": "failed",
            "error": {"code": "STEP_ERROR", "message": "Step create-invoice failed"},
            "output": {"partial": True},
            "steps": [
                {"id": "calculate-total", "name": "Calculate", "status": "completed"},
                {"id": "create-invoice", "name": "Create Invoice", "status": "failed"},
            ],
        },
    }
    snap = provider.parse_status(execution(provider), response(200, body), NOW)
    assert snap.status is Status.FAILED and snap.result is None
    assert snap.error is not None
    assert snap.error.code == "STEP_ERROR" and snap.error.message == "Step create-invoice failed"
    assert [(s.id, s.name, s.status) for s in snap.steps] == [
        ("calculate-total", "Calculate", Status.SUCCEEDED),
        ("create-invoice", "Create Invoice", Status.FAILED),
    ]


def test_failed_run_without_an_error_says_unknown_and_bad_steps_are_skipped() -> None:
    provider = runs()
    body = {"data": {"status": "failed", "steps": [{"status": "failed"}, "x", {"id": 3}]}}
    snap = provider.parse_status(execution(provider), response(200, body), NOW)
    assert snap.error is not None and snap.error.message == "Unknown error"
    assert snap.steps == ()


def test_an_exhausted_read_budget_sets_the_next_poll() -> None:
    provider = runs()
    body = {"data": {"id": "run_xyz789", "status": "running"}}
    spent = response(200, body, x_ratelimit_remaining="0", x_ratelimit_reset="12")
    assert provider.parse_status(execution(provider), spent, NOW).retry_after == 12.0
    left = response(200, body, x_ratelimit_remaining="5", x_ratelimit_reset="12")
    assert provider.parse_status(execution(provider), left, NOW).retry_after is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, (None, None)),
        ({"x-ratelimit-remaining": "499", "x-ratelimit-reset": "42"}, (499, 42.0)),
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "0.5"}, (0, 0.5)),
        ({"x-ratelimit-remaining": "-1", "x-ratelimit-reset": "soon"}, (None, None)),
        ({"x-ratelimit-remaining": "lots", "x-ratelimit-reset": "nan"}, (None, None)),
        ({"x-ratelimit-reset": str(int(NOW.timestamp()) + 30)}, (None, 30.0)),
        ({"x-ratelimit-reset": str(int(NOW.timestamp()) * 1000 + 1500)}, (None, 1.5)),
        ({"x-ratelimit-reset": str(int(NOW.timestamp()) - 30)}, (None, 0.0)),
    ],
)
def test_rate_limit_hint(headers: dict[str, str], expected: tuple[Any, Any]) -> None:
    assert rate_limit_hint(Response(status=200, headers=headers), NOW) == expected


def test_rate_limit_hint_needs_a_clock_for_an_epoch_reset() -> None:
    later = str(int((NOW + timedelta(seconds=30)).timestamp()))
    hint = rate_limit_hint(Response(status=200, headers={"x-ratelimit-reset": later}))
    assert hint == (None, None)


def test_validation_error_keeps_details() -> None:
    details = [{"path": ["customerId"], "message": "Required"}]
    body = error_body("VALIDATION_ERROR", "Input validation failed", details=details)
    with pytest.raises(InvalidInputError) as info:
        runs().parse_trigger("wf", response(400, body), CONTEXT)
    assert info.value.status_code == 400 and info.value.code == "VALIDATION_ERROR"
    assert info.value.details == details
    assert "Input validation failed" in str(info.value)


def test_not_found() -> None:
    body = error_body("NOT_FOUND", "Workflow not found")
    with pytest.raises(NotFoundError, match="Workflow not found") as info:
        runs().parse_trigger("wf", response(404, body), CONTEXT)
    assert info.value.code == "NOT_FOUND"


def test_invalid_status_says_the_workflow_must_be_active() -> None:
    body = error_body("INVALID_STATUS", "Workflow must be active to run. Current status: draft")
    with pytest.raises(APIError, match="must be active") as info:
        runs().parse_trigger("wf", response(400, body), CONTEXT)
    assert type(info.value) is APIError
    assert info.value.code == "INVALID_STATUS" and "activate it" in str(info.value)


def test_rate_limited_with_retry_after() -> None:
    body = error_body("RATE_LIMITED", "Rate limit exceeded. Limit: 500 requests per minute.")
    with pytest.raises(RateLimitError) as info:
        runs().parse_trigger("wf", response(429, body, retry_after="7"), CONTEXT)
    assert info.value.retry_after == 7.0 and info.value.code == "RATE_LIMITED"
    with pytest.raises(RateLimitError) as info:
        runs().parse_trigger("wf", response(429, body), CONTEXT)
    assert info.value.retry_after is None


@pytest.mark.parametrize(("status", "code"), [(401, "UNAUTHORIZED"), (403, "FORBIDDEN")])
def test_auth_errors_name_the_credential_and_never_show_it(status: int, code: str) -> None:
    body = error_body(code, f"Invalid API key {KEY}")
    with pytest.raises(AuthenticationError) as info:
        runs().parse_trigger("wf", response(status, body), CONTEXT)
    assert "the API key in the x-api-key header" in str(info.value)
    assert "workflows:execute" in str(info.value)
    assert KEY not in str(info.value) and info.value.code == code
    provider = runs()
    with pytest.raises(AuthenticationError, match="runs:read"):
        provider.parse_status(execution(provider), response(status, body), NOW)


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (401, {"error": "nope"}, AuthenticationError),
        (404, b"Not Found", NotFoundError),
        (429, b"", RateLimitError),
        (500, {"success": False, "error": {"code": "INTERNAL", "message": "boom"}}, ServerError),
        (502, b"<html>", ServerError),
        (418, {}, APIError),
    ],
)
def test_error_statuses_without_the_envelope(status: int, body: Any, cls: type[Exception]) -> None:
    with pytest.raises(cls):
        runs().parse_trigger("wf", response(status, body), CONTEXT)


def test_a_2xx_carrying_the_error_envelope_is_an_error() -> None:
    body = {"error": {"code": "NOT_FOUND", "message": "Run not found"}}
    provider = runs()
    with pytest.raises(NotFoundError, match="Run not found"):
        provider.parse_status(execution(provider), response(200, body), NOW)


def test_cancel_is_unsupported_and_sends_nothing() -> None:
    provider = runs()
    with pytest.raises(UnsupportedOperation, match="cancel"):
        provider.control_request(execution(provider), "cancel", None)
    with pytest.raises(UnsupportedOperation):
        provider.control_request(execution(provider), "pause", None)


def test_a_key_with_a_newline_is_refused_without_showing_it() -> None:
    with pytest.raises(InvalidInputError, match="newline") as info:
        RunsApi(BASE, KEY + "\n")
    assert KEY not in str(info.value)


def test_repr_and_redaction_hide_the_key() -> None:
    provider = runs(connection_id="conn_1")
    assert KEY not in repr(provider) and "conn_1" in repr(provider)
    assert provider.redact(f"{BASE}/x?k={KEY}") == f"{BASE}/x?k=***"
