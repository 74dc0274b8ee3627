"""The AwaitStep providers (workflows and functions), from the document's JSON; no HTTP."""

import json
from datetime import datetime, timezone
from typing import Any

import attrs
import pytest

from workflow_trigger import (
    APIError,
    AuthenticationError,
    Execution,
    InvalidInputError,
    NotFoundError,
    PayloadTooLarge,
    ProtocolError,
    RateLimitError,
    ServerError,
    Status,
    UnsupportedOperation,
)
from workflow_trigger.providers.awaitstep import AwaitStep
from workflow_trigger.providers.awaitstep_function import AwaitStepFunction
from workflow_trigger.providers.base import Provider, Response, TriggerContext, TriggerOptions

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
CONTEXT = TriggerContext(now=NOW, message_id="msg_1")
KEY = "ask_super_secret_key"
BASE = "https://app.awaitstep.dev"
INSTANCE = "9d3f1a2b-4c5e-6d7f-8a9b-0c1d2e3f4a5b"
RECORD = {
    "id": "run_01",
    "workflowId": "wf_abc123",
    "versionId": "ver_1",
    "connectionId": "conn_xyz789",
    "instanceId": INSTANCE,
    "status": "queued",
    "output": None,
    "error": None,
    "createdAt": "2026-11-25T12:00:00Z",
    "updatedAt": "2026-11-25T12:00:00Z",
}


def response(status: int, body: Any, **headers: str) -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Response(
        status=status, headers={k.replace("_", "-"): v for k, v in headers.items()}, body=raw
    )


def steps(**kwargs: Any) -> AwaitStep:
    return AwaitStep(KEY, "conn_xyz789", **kwargs)


def execution(provider: AwaitStep, record: Any = RECORD) -> Execution:
    return provider.parse_trigger("wf_abc123", response(201, record), CONTEXT).execution


def status(provider: AwaitStep, **fields: Any) -> Any:
    return provider.parse_status(execution(provider), response(200, {**RECORD, **fields}), NOW)


# -- trigger ---------------------------------------------------------------------------


def test_is_a_provider_with_the_documented_defaults() -> None:
    provider = steps()
    assert isinstance(provider, Provider) and provider.kind == "awaitstep"
    assert provider.default_poll.interval == 2.0
    assert isinstance(AwaitStepFunction("https://fn.example.workers.dev"), Provider)


def test_trigger_request_from_the_document() -> None:
    payload = {"orderId": "ord_001", "userId": "usr_42", "amount": 4999}
    req = steps().trigger_request("wf_abc123", payload, CONTEXT)
    assert req.kind == "trigger" and req.method == "POST"
    assert req.url == f"{BASE}/api/workflows/wf_abc123/trigger"
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert json.loads(req.body or b"") == {"connectionId": "conn_xyz789", "params": payload}
    assert req.retry_after_send is False
    assert KEY not in repr(req)


def test_connection_override_and_empty_params() -> None:
    options = TriggerOptions(connection_id="conn_other")
    req = steps().trigger_request("wf", None, attrs.evolve(CONTEXT, options=options))
    assert json.loads(req.body or b"") == {"connectionId": "conn_other", "params": {}}


def test_idempotency_keys_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="idempotency"):
        steps().trigger_request(
            "wf", {}, attrs.evolve(CONTEXT, options=TriggerOptions(idempotency_key="k"))
        )


def test_params_over_100_kb_are_refused_before_sending() -> None:
    overhead = len(json.dumps({"a": ""}, separators=(",", ":")))
    at_limit = {"a": "x" * (102_400 - overhead)}
    steps().trigger_request("wf", at_limit, CONTEXT)
    with pytest.raises(PayloadTooLarge, match="102,400") as info:
        steps().trigger_request("wf", {"a": "x" * (102_401 - overhead)}, CONTEXT)
    assert info.value.status_code is None


@pytest.mark.parametrize(("char", "units"), [("é", 1), ("€", 1), ("😀", 2)])
def test_the_params_limit_counts_javascript_characters_not_bytes(char: str, units: int) -> None:
    # The platform checks JSON.stringify(params).length: UTF-16 code units.
    overhead = len(json.dumps({"a": ""}, separators=(",", ":")))
    room = 102_400 - overhead
    at_limit = {"a": char * (room // units) + "x" * (room % units)}
    steps().trigger_request("wf", at_limit, CONTEXT)
    over = {"a": char * (room // units) + "x" * (room % units + 1)}
    with pytest.raises(PayloadTooLarge, match="102,401 characters"):
        steps().trigger_request("wf", over, CONTEXT)


def test_path_characters_cannot_escape_their_segment() -> None:
    req = steps().trigger_request("a/../b?x#y", {}, CONTEXT)
    assert req.url == f"{BASE}/api/workflows/a%2F..%2Fb%3Fx%23y/trigger"
    ex = Execution(
        provider="awaitstep", workflow_id="a/../b", execution_id="r?x#y", triggered_at=NOW
    )
    assert steps().status_request(ex).url == f"{BASE}/api/workflows/a%2F..%2Fb/runs/r%3Fx%23y"


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("", "conn"), {}),
        ((KEY, ""), {}),
        ((KEY, None), {}),
        ((KEY, "conn"), {"base_url": "app.awaitstep.dev"}),
    ],
)
def test_bad_configuration_is_refused(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        AwaitStep(*args, **kwargs)


def test_trigger_answer_with_only_the_instance_id() -> None:
    triggered = steps().parse_trigger("wf_abc123", response(200, {"instanceId": INSTANCE}), CONTEXT)
    ex = triggered.execution
    assert ex.provider == "awaitstep" and ex.execution_id == INSTANCE
    # the bare answer names no connection: the one the trigger used is kept for events
    assert ex.extras == {"instance_id": INSTANCE, "connection_id": "conn_xyz789"}
    assert triggered.snapshot is None


def test_the_bare_answer_keeps_a_per_call_connection() -> None:
    context = attrs.evolve(CONTEXT, options=TriggerOptions(connection_id="conn_live"))
    triggered = steps().parse_trigger("wf", response(200, {"instanceId": INSTANCE}), context)
    assert triggered.execution.extras["connection_id"] == "conn_live"
    event = steps().control_request(
        triggered.execution, "event", {"event_type": "go", "payload": {}}
    )
    assert json.loads(event.body or b"")["connectionId"] == "conn_live"


def test_trigger_answer_with_the_whole_run_record_uses_its_id() -> None:
    triggered = steps().parse_trigger("wf_abc123", response(201, RECORD), CONTEXT)
    ex = triggered.execution
    assert ex.execution_id == "run_01"
    assert ex.extras == {"instance_id": INSTANCE, "connection_id": "conn_xyz789"}
    assert triggered.snapshot is None  # queued is not terminal


def test_a_run_record_that_already_ended_is_the_first_snapshot() -> None:
    record = {**RECORD, "status": "complete", "output": '{"total": 4999}'}
    triggered = steps().parse_trigger("wf", response(201, record), CONTEXT)
    assert triggered.snapshot is not None
    assert triggered.snapshot.status is Status.SUCCEEDED
    assert triggered.snapshot.result == {"total": 4999}


@pytest.mark.parametrize("body", [{}, {"id": "", "instanceId": None}, {"ok": True}])
def test_trigger_without_any_id_is_a_protocol_error(body: Any) -> None:
    with pytest.raises(ProtocolError, match="instanceId"):
        steps().parse_trigger("wf", response(201, body), CONTEXT)


# -- status ------------------------------------------------------------------------------


def test_status_request() -> None:
    provider = steps()
    req = provider.status_request(execution(provider))
    assert req.kind == "status" and req.method == "GET"
    assert req.url == f"{BASE}/api/workflows/wf_abc123/runs/run_01"
    assert req.headers == {"Authorization": f"Bearer {KEY}"}
    assert req.retry_after_send is True


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("queued", Status.PENDING),
        ("running", Status.RUNNING),
        ("paused", Status.PAUSED),
        ("waiting", Status.PAUSED),
        ("complete", Status.SUCCEEDED),
        ("errored", Status.FAILED),
        ("terminated", Status.CANCELLED),
        ("unknown", Status.RUNNING),
        ("brand-new-state", Status.RUNNING),
    ],
)
def test_every_state(raw: str, expected: Status) -> None:
    snap = status(steps(), status=raw)
    assert snap.status is expected and snap.raw_status == raw


@pytest.mark.parametrize(
    ("output", "result"),
    [
        ('{"total": 4999, "items": [1, 2]}', {"total": 4999, "items": [1, 2]}),
        ({"total": 4999}, {"total": 4999}),
        ("plain text, not JSON", "plain text, not JSON"),
        ('"a JSON string"', "a JSON string"),
        (None, None),
    ],
)
def test_output_is_decoded_when_json_encoded(output: Any, result: Any) -> None:
    snap = status(steps(), status="complete", output=output)
    assert snap.status is Status.SUCCEEDED and snap.result == result and snap.error is None


def test_error_is_decoded_when_json_encoded() -> None:
    error = json.dumps({"name": "NonRetryableError", "message": "card declined"})
    snap = status(steps(), status="errored", error=error)
    assert snap.status is Status.FAILED and snap.result is None
    assert snap.error is not None
    assert snap.error.message == "card declined" and snap.error.code == "NonRetryableError"
    assert snap.error.details == {"name": "NonRetryableError", "message": "card declined"}


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ("Step charge failed", "Step charge failed"),
        ({"name": "Error"}, "Error"),
        (None, "Unknown error"),
        ("null", "Unknown error"),
    ],
)
def test_error_forms(error: Any, message: str) -> None:
    snap = status(steps(), status="errored", error=error)
    assert snap.error is not None and snap.error.message == message


def test_status_not_json_is_a_protocol_error() -> None:
    provider = steps()
    with pytest.raises(ProtocolError):
        provider.parse_status(execution(provider), response(200, b"<html>"), NOW)


# -- controls --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("control", "action"), [("pause", "pause"), ("resume", "resume"), ("cancel", "terminate")]
)
def test_run_controls(control: Any, action: str) -> None:
    provider = steps()
    req = provider.control_request(execution(provider), control, None)
    assert req.kind == "control" and req.method == "POST"
    assert req.url == f"{BASE}/api/workflows/wf_abc123/runs/run_01/{action}"
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert req.retry_after_send is False
    provider.parse_control(execution(provider), response(200, {"ok": True}))


def test_send_event_to_a_waiting_run() -> None:
    provider = steps()
    data = {"event_type": "approval-decision", "payload": {"approved": True, "comments": "ok"}}
    req = provider.control_request(execution(provider), "event", data)
    assert req.url == f"{BASE}/api/workflows/wf_abc123/trigger"
    assert json.loads(req.body or b"") == {
        "connectionId": "conn_xyz789",
        "params": {
            "instanceId": INSTANCE,
            "eventType": "approval-decision",
            "payload": {"approved": True, "comments": "ok"},
        },
    }


def test_event_falls_back_to_the_execution_id_and_the_providers_connection() -> None:
    ex = Execution(provider="awaitstep", workflow_id="wf", execution_id=INSTANCE, triggered_at=NOW)
    req = steps().control_request(ex, "event", {"event_type": "go", "payload": None})
    body = json.loads(req.body or b"")
    assert body["params"]["instanceId"] == INSTANCE and body["connectionId"] == "conn_xyz789"


@pytest.mark.parametrize("data", [None, {"event_type": ""}, {"event_type": 3}])
def test_event_needs_an_event_type(data: Any) -> None:
    provider = steps()
    with pytest.raises(InvalidInputError, match="event type"):
        provider.control_request(execution(provider), "event", data)


def test_event_payload_is_capped_too() -> None:
    provider = steps()
    data = {"event_type": "big", "payload": "x" * 102_400}
    with pytest.raises(PayloadTooLarge):
        provider.control_request(execution(provider), "event", data)


def test_a_refused_control_raises_the_mapped_error() -> None:
    provider = steps()
    with pytest.raises(NotFoundError, match="Run not found"):
        provider.parse_control(execution(provider), response(404, {"error": "Run not found"}))


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "body", "cls"),
    [
        (400, {"error": "No version deployed"}, InvalidInputError),
        (400, {"error": "No connection"}, InvalidInputError),
        (404, {"error": "Connection not found"}, NotFoundError),
        (500, {"error": "Internal server error", "requestId": "req_9"}, ServerError),
        (409, {"error": "Conflict"}, InvalidInputError),
        (418, b"teapot", APIError),
    ],
)
def test_error_statuses_map_to_classes(code: int, body: Any, cls: type[Exception]) -> None:
    with pytest.raises(cls) as info:
        steps().parse_trigger("wf", response(code, body), CONTEXT)
    assert isinstance(info.value, APIError) and info.value.status_code == code
    if isinstance(body, dict):
        assert body["error"] in str(info.value)


def test_the_request_id_is_quoted_for_support() -> None:
    body = {"error": "Internal server error", "requestId": "req_9"}
    with pytest.raises(ServerError, match="req_9"):
        steps().parse_trigger("wf", response(500, body), CONTEXT)
    with pytest.raises(ServerError, match="req_header"):
        steps().parse_trigger("wf", response(500, body, x_request_id="req_header"), CONTEXT)


def test_validation_failure_keeps_details() -> None:
    details = [{"path": "params", "message": "Trigger params must be under 100 KB"}]
    body = {"error": "Validation failed", "details": details}
    with pytest.raises(InvalidInputError) as info:
        steps().parse_trigger("wf", response(422, body), CONTEXT)
    assert info.value.details == details and "Validation failed" in str(info.value)


def test_rate_limit_is_plain_text_with_retry_after() -> None:
    rate_limited = response(429, b"Too Many Requests", retry_after="30", content_type="text/plain")
    with pytest.raises(RateLimitError) as info:
        steps().parse_trigger("wf", rate_limited, CONTEXT)
    assert info.value.retry_after == 30.0


@pytest.mark.parametrize(("code", "scope"), [(401, "deploy"), (403, "deploy")])
def test_auth_errors_name_the_credential_and_never_show_it(code: int, scope: str) -> None:
    body = {"error": f"Bad token Bearer {KEY}"}
    with pytest.raises(AuthenticationError) as info:
        steps().parse_trigger("wf", response(code, body), CONTEXT)
    text = str(info.value)
    assert "Authorization: Bearer header" in text and scope in text and KEY not in text
    provider = steps()
    with pytest.raises(AuthenticationError, match="'read'"):
        provider.parse_status(execution(provider), response(403, body), NOW)


def test_a_key_with_a_newline_is_refused_without_showing_it() -> None:
    with pytest.raises(InvalidInputError, match="newline") as info:
        AwaitStep(KEY + "\n", "conn")
    assert KEY not in str(info.value)


def test_repr_hides_the_key() -> None:
    provider = steps()
    assert KEY not in repr(provider) and "conn_xyz789" in repr(provider)


# -- functions ---------------------------------------------------------------------------

FN_URL = "https://order-fn.acct.workers.dev"


def test_function_trigger_posts_the_payload_unwrapped() -> None:
    fn = AwaitStepFunction(FN_URL, headers={"CF-Access-Client-Secret": "cf_secret_value"})
    req = fn.trigger_request("orders", {"orderId": "ord_001"}, CONTEXT)
    assert req.kind == "trigger" and req.method == "POST" and req.url == FN_URL
    assert json.loads(req.body or b"") == {"orderId": "ord_001"}
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["CF-Access-Client-Secret"] == "cf_secret_value"
    assert req.retry_after_send is False
    assert "cf_secret_value" not in repr(fn) and "CF-Access-Client-Secret" in repr(fn)
    assert fn.kind == "awaitstep_function"


def test_function_reply_is_the_result() -> None:
    fn = AwaitStepFunction(FN_URL)
    triggered = fn.parse_trigger("orders", response(200, {"EXPORT_total": 4999}), CONTEXT)
    ex = triggered.execution
    assert ex.provider == "awaitstep_function" and ex.workflow_id == "orders"
    assert ex.execution_id == "msg_1" and ex.triggered_at == NOW
    snap = triggered.snapshot
    assert snap is not None and snap.status is Status.SUCCEEDED
    assert snap.result == {"EXPORT_total": 4999} and snap.raw_status == "HTTP 200"


def test_function_reply_that_is_text_or_empty() -> None:
    fn = AwaitStepFunction(FN_URL)
    snap = fn.parse_trigger("f", response(200, b"done"), CONTEXT).snapshot
    assert snap is not None and snap.result == "done"
    snap = fn.parse_trigger("f", response(204, b""), CONTEXT).snapshot
    assert snap is not None and snap.status is Status.SUCCEEDED and snap.result is None


def test_function_failure_is_data() -> None:
    fn = AwaitStepFunction(FN_URL)
    snap = fn.parse_trigger("f", response(500, {"message": "amount missing"}), CONTEXT).snapshot
    assert snap is not None and snap.status is Status.FAILED
    assert snap.error is not None and snap.error.message == "amount missing"


@pytest.mark.parametrize(
    ("code", "body", "cls"),
    [
        (500, b"<html>Error 1101</html>", ServerError),
        (503, {"message": "overloaded"}, ServerError),
        (404, b"Not found", NotFoundError),
        (401, {"error": "no access"}, AuthenticationError),
    ],
)
def test_function_other_statuses_are_errors(code: int, body: Any, cls: type[Exception]) -> None:
    with pytest.raises(cls):
        AwaitStepFunction(FN_URL).parse_trigger("f", response(code, body), CONTEXT)


def test_function_header_values_never_show_in_errors() -> None:
    fn = AwaitStepFunction(FN_URL, headers={"Authorization": "Bearer fn_token_123"})
    with pytest.raises(AuthenticationError) as info:
        fn.parse_trigger("f", response(401, {"message": "bad Bearer fn_token_123"}), CONTEXT)
    assert "fn_token_123" not in str(info.value)
    with pytest.raises(AuthenticationError) as info:
        fn.parse_trigger("f", response(401, {"message": "token fn_token_123 expired"}), CONTEXT)
    assert "fn_token_123" not in str(info.value) and "expired" in str(info.value)


def test_function_has_no_run_record_and_no_controls() -> None:
    fn = AwaitStepFunction(FN_URL)
    ex = fn.parse_trigger("f", response(200, {}), CONTEXT).execution
    with pytest.raises(UnsupportedOperation, match=r"client\.run"):
        fn.status_request(ex)
    with pytest.raises(UnsupportedOperation):
        fn.parse_status(ex, response(200, {}), NOW)
    with pytest.raises(UnsupportedOperation):
        fn.control_request(ex, "cancel", None)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        (TriggerOptions(idempotency_key="k"), "f"),
        (TriggerOptions(connection_id="c"), "f"),
        (TriggerOptions(), ""),
    ],
)
def test_function_refuses_what_it_cannot_honour(options: TriggerOptions, name: str) -> None:
    with pytest.raises(InvalidInputError):
        AwaitStepFunction(FN_URL).trigger_request(name, {}, attrs.evolve(CONTEXT, options=options))


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("order-fn.workers.dev", None),
        ("ftp://x", None),
        (None, None),
        (FN_URL, {"X": 1}),
        (FN_URL, {"X-Token": "abc\r\nX-Evil: 1"}),
    ],
)
def test_function_bad_configuration_is_refused(url: Any, headers: Any) -> None:
    with pytest.raises(InvalidInputError):
        AwaitStepFunction(url, headers=headers)
