"""The Pinkfish provider, from the document's own JSON examples; no HTTP."""

import json
from datetime import datetime, timezone
from typing import Any

import attrs
import pytest

from workflow_trigger import (
    APIError,
    Artifact,
    AuthenticationError,
    Execution,
    InvalidInputError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ServerError,
    Snapshot,
    Status,
    UnsupportedOperation,
)
from workflow_trigger.providers.base import Provider, Response, TriggerContext, TriggerOptions
from workflow_trigger.providers.pinkfish import Pinkfish

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
CONTEXT = TriggerContext(now=NOW, message_id="msg_1")
KEY = "pf_super_secret_key"
BASE = "https://triggers.app.pinkfish.ai"
RUN = "1778786207851669420"
AUTOMATION = "d831ue4rccbc73knbi80"
IDS = {"x-pf-run-id": RUN, "x-pf-automation-id": AUTOMATION}
RUN_URL = f"{BASE}/ext/webhook/{KEY}/runs/{AUTOMATION}/{RUN}"

STATUS_COMPLETE = {
    "automationId": AUTOMATION,
    "runId": RUN,
    "status": "COMPLETE",
    "stepStatus": {"1": "COMPLETE"},
    "stepInfo": {"1": {"status": "COMPLETE", "name": "Step 1", "executionOrder": 1}},
}
RESULTS = {
    "automationId": AUTOMATION,
    "automationVersion": 3,
    "automationName": "Hello World",
    "id": RUN,
    "type": "TRIGGER",
    "results": [
        {
            "stepIndex": 1,
            "stepVersion": 3,
            "resultUrls": {
                "output.txt": {
                    "url": "https://run-files.app.pinkfish.ai/a/output.txt?sig=abc",
                    "mimeType": "text/plain",
                    "size": 13,
                },
                "stdout.txt": {
                    "url": "https://run-files.app.pinkfish.ai/a/stdout.txt?sig=def",
                    "mimeType": "text/plain",
                    "size": 419,
                },
            },
            "exitCode": 0,
            "duration": 2264,
        }
    ],
    "started": "2026-05-14T19:16:47Z",
    "status": "COMPLETE",
}
DESIGNATED = {
    "url": "https://run-files.app.pinkfish.ai/b/retrieved-poem.txt?sig=ghi",
    "fileName": "retrieved-poem.txt",
    "mimeType": "text/plain",
    "size": 117,
}


def response(status: int, body: Any = b"", headers: dict[str, str] | None = None) -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Response(status=status, headers=headers or {}, body=raw)


def pinkfish(**kwargs: Any) -> Pinkfish:
    return Pinkfish(KEY, **kwargs)


def execution(provider: Pinkfish) -> Execution:
    return provider.parse_trigger("trg_1", response(200, b"", IDS), CONTEXT).execution


def finished(provider: Pinkfish) -> Snapshot:
    return provider.parse_status(execution(provider), response(200, STATUS_COMPLETE), NOW)


# -- trigger ---------------------------------------------------------------------------


def test_is_a_provider_with_the_documented_defaults() -> None:
    provider = pinkfish()
    assert isinstance(provider, Provider) and provider.kind == "pinkfish"
    assert provider.default_poll.interval == 3.0


def test_trigger_request_from_the_document() -> None:
    payload = {"user_request": "process this data"}
    req = pinkfish().trigger_request("trg_1", payload, CONTEXT)
    assert req.kind == "trigger" and req.method == "POST"
    assert req.url == f"{BASE}/ext/triggers/trg_1"
    assert req.headers["X-API-KEY"] == KEY
    assert req.headers["x-api-wait"] == "false"
    assert req.headers["Content-Type"] == "application/json"
    assert json.loads(req.body or b"") == payload
    assert req.retry_after_send is False
    assert KEY not in repr(req) and KEY not in req.redacted_url


def test_sync_mode_asks_pinkfish_to_wait() -> None:
    req = pinkfish(wait="sync").trigger_request("trg_1", None, CONTEXT)
    assert req.headers["x-api-wait"] == "true"
    assert json.loads(req.body or b"") == {}


def test_webhook_trigger_puts_the_key_in_the_path_and_masks_it() -> None:
    req = pinkfish(trigger="webhook").trigger_request("trg_1", {}, CONTEXT)
    assert req.url == f"{BASE}/ext/webhook/{KEY}/triggers/trg_1"
    assert "X-API-KEY" not in req.headers
    assert req.redacted_url == f"{BASE}/ext/webhook/***/triggers/trg_1"


def test_a_key_that_needs_encoding_is_encoded_and_masked_in_both_forms() -> None:
    key = "k/ey?with#odd chars"
    provider = Pinkfish(key, trigger="webhook")
    req = provider.trigger_request("trg", {}, CONTEXT)
    assert req.url == f"{BASE}/ext/webhook/k%2Fey%3Fwith%23odd%20chars/triggers/trg"
    assert req.redacted_url == f"{BASE}/ext/webhook/***/triggers/trg"
    assert key not in provider.redact(f"said {key}")


def test_path_characters_cannot_escape_their_segment() -> None:
    req = pinkfish().trigger_request("a/../b?x#y", {}, CONTEXT)
    assert req.url == f"{BASE}/ext/triggers/a%2F..%2Fb%3Fx%23y"
    ex = Execution(
        provider="pinkfish",
        workflow_id="t",
        execution_id="r/../x",
        extras={"automation_id": "a?b#c"},
        triggered_at=NOW,
    )
    url = pinkfish().status_request(ex).url
    assert url == f"{BASE}/ext/webhook/{KEY}/runs/a%3Fb%23c/r%2F..%2Fx/status"


@pytest.mark.parametrize(
    "options", [TriggerOptions(idempotency_key="k"), TriggerOptions(connection_id="c")]
)
def test_idempotency_keys_and_connections_are_refused(options: TriggerOptions) -> None:
    with pytest.raises(InvalidInputError, match="idempotency"):
        pinkfish().trigger_request("trg", {}, attrs.evolve(CONTEXT, options=options))


@pytest.mark.parametrize(
    "kwargs",
    [{"wait": "later"}, {"trigger": "email"}, {"base_url": "triggers.app.pinkfish.ai"}],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        pinkfish(**kwargs)
    with pytest.raises(InvalidInputError):
        Pinkfish("")


def test_parse_trigger_reads_the_ids_from_headers() -> None:
    triggered = pinkfish().parse_trigger("trg_1", response(200, b"", IDS), CONTEXT)
    ex = triggered.execution
    assert ex.provider == "pinkfish" and ex.workflow_id == "trg_1"
    assert ex.execution_id == RUN and ex.extras == {"automation_id": AUTOMATION}
    assert ex.triggered_at == NOW
    assert triggered.snapshot is None


@pytest.mark.parametrize("headers", [{}, {"x-pf-run-id": RUN}, {"x-pf-automation-id": AUTOMATION}])
def test_missing_id_headers_are_a_protocol_error(headers: dict[str, str]) -> None:
    with pytest.raises(ProtocolError, match="X-Pf-Run-Id"):
        pinkfish().parse_trigger("trg", response(200, b"", headers), CONTEXT)


def test_sync_mode_answer_is_a_finished_run() -> None:
    run = {
        "id": RUN,
        "automationId": AUTOMATION,
        "results": [{"stepIndex": 1, "result": {"resultType": "text", "result": "hi"}}],
        "started": "2026-05-14T19:16:47Z",
    }
    provider = pinkfish(wait="sync")
    triggered = provider.parse_trigger("trg", response(200, run, IDS), CONTEXT)
    snap = triggered.snapshot
    assert snap is not None and snap.status is Status.SUCCEEDED
    assert snap.result == run and snap.result["results"][0]["result"]["result"] == "hi"
    # the results are already there: no results request
    assert provider.result_request(triggered.execution, snap) is None


def test_sync_mode_falls_back_to_the_ids_in_the_body() -> None:
    run = {**RESULTS, "designatedOutput": DESIGNATED}
    triggered = pinkfish(wait="sync").parse_trigger("trg", response(200, run), CONTEXT)
    assert triggered.execution.execution_id == RUN
    assert triggered.execution.extras == {"automation_id": AUTOMATION}
    snap = triggered.snapshot
    assert snap is not None and len(snap.artifacts) == 2
    assert snap.designated_output is not None
    assert snap.designated_output.name == "retrieved-poem.txt"


def test_sync_mode_timeout_falls_back_to_polling() -> None:
    body = {"status": "timeout", "message": "Run still in progress"}
    triggered = pinkfish(wait="sync").parse_trigger("trg", response(200, body, IDS), CONTEXT)
    assert triggered.execution.execution_id == RUN and triggered.snapshot is None


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"id": RUN, "status": "RUNNING"}, None),
        ({"id": RUN, "status": "FAILED", "results": []}, Status.FAILED),
        ({"id": RUN, "status": "TIMEOUT"}, Status.TIMED_OUT),
        (b"not json", None),
        ([1, 2], None),
        ({"automationId": AUTOMATION}, None),
    ],
)
def test_sync_mode_other_answers(body: Any, status: Status | None) -> None:
    snap = pinkfish(wait="sync").parse_trigger("trg", response(200, body, IDS), CONTEXT).snapshot
    assert (snap.status if snap else None) is status


def test_async_mode_ignores_any_body() -> None:
    triggered = pinkfish().parse_trigger("trg", response(200, RESULTS, IDS), CONTEXT)
    assert triggered.snapshot is None


# -- status ------------------------------------------------------------------------------


def test_status_request_uses_the_webhook_path_and_masks_the_key() -> None:
    provider = pinkfish()
    req = provider.status_request(execution(provider))
    assert req.kind == "status" and req.method == "GET"
    assert req.url == f"{RUN_URL}/status"
    assert req.headers == {} and req.retry_after_send is True
    assert KEY not in req.redacted_url and "/ext/webhook/***/runs/" in req.redacted_url
    assert KEY not in repr(req)


def test_status_needs_the_automation_id() -> None:
    ex = Execution(provider="pinkfish", workflow_id="t", execution_id=RUN, triggered_at=NOW)
    with pytest.raises(InvalidInputError, match="automation_id"):
        pinkfish().status_request(ex)


def test_status_from_the_document() -> None:
    snap = finished(pinkfish())
    assert snap.status is Status.SUCCEEDED and snap.raw_status == "COMPLETE"
    assert snap.result is None  # the results come from their own request
    assert [(s.id, s.name, s.status, s.raw_status) for s in snap.steps] == [
        ("1", "Step 1", Status.SUCCEEDED, "COMPLETE")
    ]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("PENDING", Status.PENDING),
        ("RUNNING", Status.RUNNING),
        ("COMPLETE", Status.SUCCEEDED),
        ("FAILED", Status.FAILED),
        ("TIMEOUT", Status.TIMED_OUT),
        ("running", Status.RUNNING),
        ("PAUSING", Status.RUNNING),
    ],
)
def test_every_status_value(raw: str, status: Status) -> None:
    provider = pinkfish()
    snap = provider.parse_status(execution(provider), response(200, {"status": raw}), NOW)
    assert snap.status is status and snap.raw_status == raw
    if status in (Status.FAILED, Status.TIMED_OUT):
        assert snap.error is not None and raw in snap.error.message
    else:
        assert snap.error is None


def test_steps_are_ordered_by_execution_order_then_key() -> None:
    body = {
        "status": "RUNNING",
        "stepStatus": {"10": "PENDING", "2": "RUNNING", "1": "COMPLETE", "b": "PENDING"},
        "stepInfo": {
            "1": {"status": "COMPLETE", "name": "Fetch", "executionOrder": 2},
            "2": {"status": "RUNNING", "name": "Think", "executionOrder": 1},
            "3": {"status": "PENDING", "name": "Later"},
        },
    }
    provider = pinkfish()
    snap = provider.parse_status(execution(provider), response(200, body), NOW)
    assert [(s.id, s.name, s.status) for s in snap.steps] == [
        ("2", "Think", Status.RUNNING),
        ("1", "Fetch", Status.SUCCEEDED),
        ("3", "Later", Status.PENDING),
        ("10", None, Status.PENDING),
        ("b", None, Status.PENDING),
    ]


# -- results -------------------------------------------------------------------------------


def test_result_request_only_for_a_success_without_results() -> None:
    provider = pinkfish()
    ex = execution(provider)
    req = provider.result_request(ex, finished(provider))
    assert req is not None and req.kind == "result" and req.method == "GET"
    assert req.url == f"{RUN_URL}/results" and req.retry_after_send is True
    assert KEY not in req.redacted_url
    failed = provider.parse_status(ex, response(200, {"status": "FAILED"}), NOW)
    assert provider.result_request(ex, failed) is None


def test_results_document_from_the_document() -> None:
    provider = pinkfish()
    ex = execution(provider)
    snap = provider.parse_result(ex, finished(provider), response(200, RESULTS))
    assert snap.status is Status.SUCCEEDED
    assert snap.result == RESULTS and isinstance(snap.result["results"], list)
    assert snap.artifacts == (
        Artifact(
            name="output.txt",
            url="https://run-files.app.pinkfish.ai/a/output.txt?sig=abc",
            mime_type="text/plain",
            size=13,
        ),
        Artifact(
            name="stdout.txt",
            url="https://run-files.app.pinkfish.ai/a/stdout.txt?sig=def",
            mime_type="text/plain",
            size=419,
        ),
    )
    assert snap.designated_output is None
    assert snap.steps == finished(provider).steps


def test_designated_output() -> None:
    provider = pinkfish()
    doc = {"id": RUN, "status": "COMPLETE", "results": [], "designatedOutput": DESIGNATED}
    snap = provider.parse_result(execution(provider), finished(provider), response(200, doc))
    assert snap.designated_output == Artifact(
        name="retrieved-poem.txt", url=DESIGNATED["url"], mime_type="text/plain", size=117
    )
    assert snap.artifacts == ()


def test_odd_result_files_are_skipped_or_named_from_their_url() -> None:
    doc = {
        "results": [
            "not a step",
            {"resultUrls": ["not", "a", "map"]},
            {"resultUrls": {"a.txt": {"mimeType": "text/plain"}, "b.bin": {"url": "https://f/b"}}},
        ],
        "designatedOutput": {"url": "https://f/x/report.pdf", "size": True},
    }
    provider = pinkfish()
    snap = provider.parse_result(execution(provider), finished(provider), response(200, doc))
    assert snap.artifacts == (Artifact(name="b.bin", url="https://f/b"),)
    assert snap.designated_output == Artifact(name="report.pdf", url="https://f/x/report.pdf")


@pytest.mark.parametrize("body", [{"id": RUN}, {"results": {}}, b"<html>", [1]])
def test_results_without_a_results_list_are_a_protocol_error(body: Any) -> None:
    provider = pinkfish()
    with pytest.raises(ProtocolError):
        provider.parse_result(execution(provider), finished(provider), response(200, body))


def test_download_request_carries_no_credentials() -> None:
    artifact = Artifact(name="output.txt", url="https://run-files.app.pinkfish.ai/a?sig=s3cr3t")
    for provider in (pinkfish(), pinkfish(trigger="webhook")):
        req = provider.download_request(artifact)
        assert req.kind == "download" and req.method == "GET" and req.url == artifact.url
        assert req.headers == {} and req.body is None and req.retry_after_send is True
        assert "s3cr3t" not in req.redacted_url
        assert req.redacted_url == "https://run-files.app.pinkfish.ai/a?***"


@pytest.mark.parametrize("artifact", [Artifact(name="x", url="file:///etc/passwd"), "https://f"])
def test_download_needs_an_http_artifact(artifact: Any) -> None:
    with pytest.raises(InvalidInputError):
        pinkfish().download_request(artifact)


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (400, InvalidInputError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, NotFoundError),
        (429, RateLimitError),
        (500, ServerError),
        (418, APIError),
    ],
)
def test_error_statuses_map_to_classes(code: int, cls: type[Exception]) -> None:
    body = {"error": "invalid_request", "message": "Trigger not found or disabled"}
    with pytest.raises(cls) as info:
        pinkfish().parse_trigger("trg", response(code, body), CONTEXT)
    assert isinstance(info.value, APIError)
    assert info.value.status_code == code and info.value.code == "invalid_request"
    assert "Trigger not found or disabled" in str(info.value)


def test_errors_without_a_json_body() -> None:
    with pytest.raises(ServerError, match="HTTP 502"):
        pinkfish().parse_trigger("trg", response(502, b"Bad Gateway"), CONTEXT)


@pytest.mark.parametrize("trigger", ["api", "webhook"])
def test_auth_errors_name_the_credential_and_never_show_it(trigger: Any) -> None:
    provider = pinkfish(trigger=trigger)
    body = {"error": "unauthorized", "message": f"API key {KEY} is not valid"}
    with pytest.raises(AuthenticationError) as info:
        provider.parse_trigger("trg", response(401, body), CONTEXT)
    text = str(info.value)
    assert KEY not in text and "***" in text
    assert ("X-API-KEY header" if trigger == "api" else "URL path") in text
    with pytest.raises(AuthenticationError, match="URL path") as info:
        provider.parse_status(execution(provider), response(401, body), NOW)
    assert KEY not in str(info.value)


def test_every_error_message_masks_the_key() -> None:
    provider = pinkfish()
    body = {"error": f"bad_{KEY}", "message": f"no run at /ext/webhook/{KEY}/runs"}
    ex = execution(provider)
    for call in (
        lambda: provider.parse_status(ex, response(404, body), NOW),
        lambda: provider.parse_result(ex, finished(provider), response(500, body)),
    ):
        with pytest.raises(APIError) as info:
            call()
        assert KEY not in str(info.value) and KEY not in (info.value.code or "")


def test_no_controls() -> None:
    provider = pinkfish()
    with pytest.raises(UnsupportedOperation):
        provider.control_request(execution(provider), "cancel", None)


@pytest.mark.parametrize("trigger", ["api", "webhook"])
def test_a_key_with_a_newline_is_refused_without_showing_it(trigger: Any) -> None:
    with pytest.raises(InvalidInputError, match="newline") as info:
        Pinkfish(KEY + "\n", trigger=trigger)
    assert KEY not in str(info.value)


def test_repr_hides_the_key() -> None:
    provider = pinkfish(trigger="webhook", wait="sync")
    assert KEY not in repr(provider) and "webhook" in repr(provider)
