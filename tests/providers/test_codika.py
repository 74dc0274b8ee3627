"""The Codika provider, from the document's own JSON examples; no HTTP."""

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from workflow_trigger import (
    APIError,
    AuthenticationError,
    Codika,
    Execution,
    InvalidInputError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ServerError,
    Status,
)
from workflow_trigger.providers.base import Response, TriggerContext, TriggerOptions
from workflow_trigger.providers.codika import sign_standard_webhook

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
CONTEXT = TriggerContext(now=NOW, message_id="msg_1")
KEY = "ck_super_secret_key"


def response(status: int, body: Any, **headers: str) -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Response(
        status=status, headers={k.replace("_", "-"): v for k, v in headers.items()}, body=raw
    )


def execution(provider: Codika) -> Execution:
    triggered = provider.parse_trigger(
        "main-workflow",
        response(
            200, {"success": True, "executionId": "019c8fb3-x", "message": "Execution started"}
        ),
        CONTEXT,
    )
    return triggered.execution


def test_trigger_request_wraps_payload_and_sends_the_instance_key() -> None:
    codika = Codika("pi_123", api_key=KEY)
    req = codika.trigger_request("main-workflow", {"text": "hi"}, CONTEXT)
    assert req.method == "POST"
    assert req.url == "https://api.codika.io/webhook/pi_123/main-workflow"
    assert req.headers["X-API-Key"] == KEY
    assert json.loads(req.body or b"") == {"payload": {"text": "hi"}}
    assert req.retry_after_send is False
    assert KEY not in repr(req)


def test_workflows_without_input_send_an_empty_payload() -> None:
    req = Codika("pi", api_key=KEY).trigger_request("r", None, CONTEXT)
    assert json.loads(req.body or b"") == {"payload": {}}


def test_query_auth_puts_the_key_in_the_url_and_redacts_it() -> None:
    codika = Codika("pi_123", api_key=KEY, auth="query")
    req = codika.trigger_request("wf", {}, CONTEXT)
    assert req.url.endswith(f"?api_key={KEY}")
    assert "X-API-Key" not in req.headers
    assert KEY not in req.redacted_url and "api_key=***" in req.redacted_url
    status = codika.status_request(execution(codika))
    assert KEY in status.url and KEY not in status.redacted_url


def test_org_key_goes_in_the_process_manager_header() -> None:
    codika = Codika("pi_123", org_key="cko_org")
    req = codika.status_request(execution(codika))
    assert req.headers == {"X-Process-Manager-Key": "cko_org"}
    assert req.url == "https://api.codika.io/status/pi_123/019c8fb3-x"
    assert req.retry_after_send is True


def test_standard_webhooks_published_test_vector() -> None:
    signature = sign_standard_webhook(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signed_triggers_carry_the_signature_not_the_key() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    codika = Codika("pi", api_key=KEY, signing_secret=secret)
    req = codika.trigger_request("wf", {"a": 1}, CONTEXT)
    assert req.headers["webhook-id"] == "msg_1"
    assert req.headers["webhook-timestamp"] == str(int(NOW.timestamp()))
    expected = sign_standard_webhook(secret, "msg_1", int(NOW.timestamp()), req.body or b"")
    assert req.headers["webhook-signature"] == expected
    assert "X-API-Key" not in req.headers
    # polls still use the key
    assert codika.status_request(execution(codika)).headers["X-API-Key"] == KEY
    assert secret not in repr(codika) and KEY not in repr(codika)


def test_a_bad_signing_secret_is_refused_at_construction() -> None:
    with pytest.raises(InvalidInputError, match="whsec_"):
        Codika("pi", api_key=KEY, signing_secret="whsec_not base64!")


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"api_key": KEY, "org_key": "cko"},
        {"api_key": ""},
        {"api_key": KEY, "auth": "cookie"},
        {"org_key": "cko", "auth": "query"},
        {"api_key": KEY, "base_url": "api.codika.io"},
        {"api_key": KEY, "base_url": "ftp://x"},
        {"api_key": KEY, "base_url": "http://"},
        {"api_key": KEY, "base_url": "http://h:notaport"},
        {"api_key": KEY, "registering_grace": -1},
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        Codika("pi", **kwargs)


@pytest.mark.parametrize("workflow_id", ["", "  ", ".", "..", "a\nb", None, 3])
def test_bad_workflow_ids_are_refused(workflow_id: Any) -> None:
    with pytest.raises(InvalidInputError):
        Codika("pi", api_key=KEY).trigger_request(workflow_id, {}, CONTEXT)


def test_path_characters_cannot_escape_their_segment() -> None:
    req = Codika("pi", api_key=KEY).trigger_request("a/../b?x#y", {}, CONTEXT)
    assert req.url == "https://api.codika.io/webhook/pi/a%2F..%2Fb%3Fx%23y"


@pytest.mark.parametrize("payload", [{"x": float("nan")}, {"x": float("inf")}, {"x": object()}])
def test_unserialisable_payloads_are_refused(payload: Any) -> None:
    with pytest.raises(InvalidInputError, match="JSON"):
        Codika("pi", api_key=KEY).trigger_request("wf", payload, CONTEXT)


def test_idempotency_keys_are_refused_because_codika_has_none() -> None:
    with pytest.raises(InvalidInputError, match="idempotency"):
        Codika("pi", api_key=KEY).trigger_request(
            "wf", {}, attrs.evolve(CONTEXT, options=TriggerOptions(idempotency_key="k"))
        )


def test_trigger_falls_back_to_id() -> None:
    codika = Codika("pi", api_key=KEY)
    triggered = codika.parse_trigger("wf", response(200, {"success": True, "id": 42}), CONTEXT)
    assert triggered.execution.execution_id == "42"
    assert triggered.execution.extras == {"process_instance_id": "pi"}
    assert triggered.execution.triggered_at == NOW


@pytest.mark.parametrize(
    "body",
    [{"success": True, "message": "Execution started"}, {"executionId": ""}, {"id": None}],
)
def test_trigger_without_an_id_is_a_protocol_error(body: Any) -> None:
    with pytest.raises(ProtocolError, match="executionId"):
        Codika("pi", api_key=KEY).parse_trigger("wf", response(200, body), CONTEXT)


def test_trigger_answer_that_is_not_json_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="JSON"):
        Codika("pi", api_key=KEY).parse_trigger("wf", response(200, b"<html>"), CONTEXT)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, InvalidInputError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, NotFoundError),
        (429, RateLimitError),
        (500, ServerError),
    ],
)
def test_error_statuses_map_to_classes(status: int, cls: type[Exception]) -> None:
    body = {"success": False, "error": "nope", "code": "SOME_CODE"}
    with pytest.raises(cls) as info:
        Codika("pi", api_key=KEY).parse_trigger("wf", response(status, body), CONTEXT)
    assert isinstance(info.value, APIError)
    assert info.value.status_code == status and info.value.code == "SOME_CODE"
    assert "nope" in str(info.value)


def test_412_says_the_instance_is_inactive() -> None:
    body = {"success": False, "error": "Process instance is not active", "code": "INACTIVE"}
    with pytest.raises(APIError, match=r"inactive.*activate") as info:
        Codika("pi_9", api_key=KEY).parse_trigger("wf", response(412, body), CONTEXT)
    assert info.value.status_code == 412


def test_auth_errors_name_the_credential_and_never_show_it() -> None:
    body = {"success": False, "error": f"Invalid API key {KEY}", "code": "UNAUTHORIZED"}
    with pytest.raises(AuthenticationError) as info:
        Codika("pi", api_key=KEY).parse_trigger("wf", response(401, body), CONTEXT)
    assert "X-API-Key header" in str(info.value)
    assert KEY not in str(info.value)
    signed = Codika("pi", api_key=KEY, signing_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    with pytest.raises(AuthenticationError, match="signature"):
        signed.parse_trigger("wf", response(401, body), CONTEXT)
    query = Codika("pi", api_key=KEY, auth="query")
    with pytest.raises(AuthenticationError, match="query parameter"):
        query.parse_status(execution(query), response(403, body), NOW)


def test_status_success_from_the_document() -> None:
    codika = Codika("pi", api_key=KEY)
    body = {
        "execution": {
            "status": "success",
            "resultData": {"result": "Processed output", "processedAt": "2025-03-15T10:30:00.000Z"},
        }
    }
    snap = codika.parse_status(execution(codika), response(200, body), NOW)
    assert snap.status is Status.SUCCEEDED and snap.raw_status == "success"
    assert snap.result == body["execution"]["resultData"]
    assert snap.error is None


@pytest.mark.parametrize("raw", ["failed", "error"])
def test_status_failed_and_error_carry_error_details(raw: str) -> None:
    codika = Codika("pi", api_key=KEY)
    details = {
        "message": "HTTP node failed",
        "type": "node_failure",
        "code": "E_HTTP",
        "failedNodeName": "Call API",
    }
    body = {"execution": {"status": raw, "errorDetails": details}}
    snap = codika.parse_status(execution(codika), response(200, body), NOW)
    assert snap.status is Status.FAILED
    assert snap.error is not None
    assert snap.error.message == "HTTP node failed" and snap.error.code == "E_HTTP"
    assert snap.error.details["failedNodeName"] == "Call API"


def test_failed_without_details_says_unknown_error() -> None:
    codika = Codika("pi", api_key=KEY)
    snap = codika.parse_status(
        execution(codika), response(200, {"execution": {"status": "failed"}}), NOW
    )
    assert snap.error is not None and snap.error.message == "Unknown error"


def test_pending_and_unknown_statuses_are_not_terminal() -> None:
    codika = Codika("pi", api_key=KEY)
    ex = execution(codika)
    pending = codika.parse_status(ex, response(200, {"execution": {"status": "pending"}}), NOW)
    assert pending.status is Status.PENDING
    odd = codika.parse_status(ex, response(200, {"execution": {"status": "warming_up"}}), NOW)
    assert not odd.status.is_terminal and odd.raw_status == "warming_up"


def test_404_within_the_registering_grace_is_pending_then_not_found() -> None:
    codika = Codika("pi", api_key=KEY, registering_grace=10)
    ex = execution(codika)
    gone = response(404, {"success": False, "error": "Execution not found", "code": "NOT_FOUND"})
    early = codika.parse_status(ex, gone, NOW + timedelta(seconds=9))
    assert early.status is Status.PENDING and early.raw_status == "registering"
    with pytest.raises(NotFoundError, match="019c8fb3-x"):
        codika.parse_status(ex, gone, NOW + timedelta(seconds=11))


def test_status_uses_the_instance_recorded_on_the_execution() -> None:
    codika = Codika("pi_other", api_key=KEY)
    ex = Execution(
        provider="codika",
        workflow_id="wf",
        execution_id="e1",
        extras={"process_instance_id": "pi_first"},
        triggered_at=NOW,
    )
    assert codika.status_request(ex).url.endswith("/status/pi_first/e1")


def test_controls_are_unsupported() -> None:
    from workflow_trigger import UnsupportedOperation

    codika = Codika("pi", api_key=KEY)
    with pytest.raises(UnsupportedOperation, match="cancel"):
        codika.control_request(execution(codika), "cancel", None)


def test_status_requests_share_their_headers_and_a_pickled_provider_carries_no_cache() -> None:
    import pickle

    provider = Codika("pi_1", api_key="ck_live_secret", base_url="https://example.test")
    now = datetime.now(timezone.utc)
    requests = [provider.status_request(_execution(now, i)) for i in range(3)]
    # each run in flight keeps its status request: one headers mapping serves them all
    assert requests[0].headers is requests[1].headers is requests[2].headers
    assert requests[0].headers == {"X-API-Key": "ck_live_secret"}
    with pytest.raises(TypeError):
        requests[0].headers["X-API-Key"] = "other"  # type: ignore[index]
    assert requests[0].redacted_url is requests[0].url  # nothing to mask: no copy
    # a worker process gets the provider (secrets revealed on purpose) but not its caches
    from workflow_trigger._ray_pool import provider_bytes

    again = pickle.loads(provider_bytes(provider))
    assert "_headers_cache" not in vars(again) and "_redactor_cache" not in vars(again)
    assert again.status_request(_execution(now)).headers == requests[0].headers


def _execution(now: datetime, i: int = 0) -> Execution:
    return Execution(
        provider="codika",
        workflow_id="wf",
        execution_id=f"exec_{i}",
        extras={"process_instance_id": "pi_1"},
        triggered_at=now,
    )


def test_a_plain_id_is_sent_as_it_is_and_any_other_is_encoded() -> None:
    """The fast path for ids of unreserved characters gives what ``quote`` would."""
    from urllib.parse import quote

    from workflow_trigger.providers.base import path_segment

    for plain in ["abc", "01a235bd-7d5e-73ab-8cee-4445f7af6396", "a.b_c~d-e", "x" * 256]:
        assert path_segment(plain, "id") == quote(plain, safe="") == plain
    for other in ["a/b", "a b", "é", "a?b#c", "%41"]:
        assert path_segment(other, "id") == quote(other, safe="") != other
    for refused in [".", "..", "", "x" * 257, "a\x00b"]:
        with pytest.raises(InvalidInputError):
            path_segment(refused, "id")
