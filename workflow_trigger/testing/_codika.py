"""Codika's public API routes: trigger a workflow, poll its execution.

``POST /webhook/{processInstanceId}/{workflowId}`` starts a run and answers
``{"success": true, "executionId": ..., "message": "Execution started"}``;
``GET /status/{processInstanceId}/{executionId}`` answers ``{"execution":
{...}}``. Errors everywhere are ``{"success": false, "error": <message>,
"code": <CODE>}``.

A request goes through, in order: fault injection (faults model the network
and proxies in front of the service, so they come before anything else),
authentication, the process instance (404), whether it is active (412, triggers
only), the workflow (404 in strict mode), the body (400 if it is not JSON).

Authentication: the first credential present decides, in this order, and a
bad one is refused even if a later one would have passed (so a test catches a
client sending a stale credential next to a good one):

1. Standard Webhooks signature headers (triggers only; any of the three
   present means signature mode);
2. ``X-API-Key``: the instance key;
3. ``X-Process-Manager-Key``: the organisation key;
4. the ``api_key`` query parameter: the instance key.

A key listed in ``foreign_keys`` is a genuine key of another instance or
organisation: 403 instead of 401. Messages name the credential, never its value.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

import attrs
from aiohttp import web

from ._core import EmulatorCore
from ._execution import Execution
from ._webhooks import SIGNATURE_HEADERS, WebhookSignatureError, verify_webhook

__all__ = ["CodikaConfig", "CodikaRoutes", "codika_error"]

PLATFORM = "codika"


@attrs.define
class CodikaConfig:
    """The one process instance the emulator serves, and its credentials."""

    instance_id: str = "pi_test"
    api_key: str = "ck_test_key"
    org_key: str = "cko_test_org"
    signing_secret: str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    foreign_keys: frozenset[str] = frozenset({"ck_other_instance", "cko_other_org"})
    inactive: bool = False


def codika_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"success": False, "error": message, "code": code}, status=status)


def _iso(execution: Execution) -> str:
    return execution.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CodikaRoutes:
    """The Codika route set; reads :class:`CodikaConfig` on every request."""

    platform = PLATFORM

    def __init__(self, core: EmulatorCore, config: CodikaConfig) -> None:
        self.core = core
        self.config = config

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/webhook/{instance}/{workflow}", self.trigger),
            web.get("/status/{instance}/{execution}", self.status),
        ]

    async def trigger(self, request: web.Request) -> web.StreamResponse:
        workflow_id = request.match_info["workflow"]
        record = self.core.begin(PLATFORM, "trigger", workflow_id=workflow_id)
        faulty = await self.core.apply_fault(request, codika_error)
        if faulty is not None:
            return faulty
        body = record.body = await request.read()
        refused = self._authenticate(request, body, signatures=True)
        if refused is not None:
            return refused
        if request.match_info["instance"] != self.config.instance_id:
            return codika_error(404, "PROCESS_INSTANCE_NOT_FOUND", "Process instance not found")
        if self.config.inactive:
            return codika_error(412, "PROCESS_INSTANCE_INACTIVE", "Process instance is not active")
        scenario = self.core.scenario_for(workflow_id)
        if scenario is None:
            return codika_error(404, "WORKFLOW_NOT_FOUND", "Workflow not found")
        try:
            payload = _payload(body)
        except ValueError:
            return codika_error(400, "INVALID_JSON", "The request body is not valid JSON")
        execution = self.core.start_execution(PLATFORM, workflow_id, payload, scenario)
        answer: dict[str, Any] = {"success": True}
        if scenario.id_field is not None:
            answer[scenario.id_field] = execution.id
        answer["message"] = "Execution started"
        return web.json_response(answer)

    async def status(self, request: web.Request) -> web.StreamResponse:
        execution_id = request.match_info["execution"]
        execution = self.core.find_execution(execution_id)
        if execution is not None and execution.platform != PLATFORM:
            execution = None
        self.core.begin(
            PLATFORM,
            "poll",
            workflow_id=execution.workflow_id if execution is not None else None,
            execution_id=execution_id,
        )
        faulty = await self.core.apply_fault(request, codika_error)
        if faulty is not None:
            return faulty
        refused = self._authenticate(request, b"", signatures=False)
        if refused is not None:
            return refused
        if request.match_info["instance"] != self.config.instance_id:
            return codika_error(404, "PROCESS_INSTANCE_NOT_FOUND", "Process instance not found")
        if execution is None or execution.registering:
            return codika_error(404, "EXECUTION_NOT_FOUND", "Execution not found")
        self.core.observe(execution)
        return web.json_response({"execution": _execution_body(execution)})

    def _authenticate(
        self, request: web.Request, body: bytes, *, signatures: bool
    ) -> web.Response | None:
        headers = request.headers
        if signatures and any(name in headers for name in SIGNATURE_HEADERS):
            try:
                verify_webhook(self.config.signing_secret, headers, body)
            except WebhookSignatureError as exc:
                return codika_error(401, "INVALID_SIGNATURE", str(exc))
            return None
        candidates = (
            (headers.get("X-API-Key"), self.config.api_key, "instance API key (X-API-Key header)"),
            (
                headers.get("X-Process-Manager-Key"),
                self.config.org_key,
                "organisation key (X-Process-Manager-Key header)",
            ),
            (
                request.query.get("api_key"),
                self.config.api_key,
                "instance API key (api_key query parameter)",
            ),
        )
        for sent, expected, what in candidates:
            if sent is None:
                continue
            if hmac.compare_digest(sent.encode(), expected.encode()):
                return None
            if sent in self.config.foreign_keys:
                return codika_error(
                    403, "FORBIDDEN", f"The {what} belongs to another instance or organisation"
                )
            return codika_error(401, "UNAUTHORIZED", f"The {what} is not valid")
        return codika_error(
            401,
            "UNAUTHORIZED",
            "No credentials: send an X-API-Key header, an X-Process-Manager-Key header, "
            "an api_key query parameter or webhook signature headers",
        )


def _payload(body: bytes) -> Any:
    """The workflow input: the ``payload`` member if there is one, else the whole body."""
    if not body.strip():
        return {}
    document = json.loads(body)
    if isinstance(document, dict) and "payload" in document:
        return document["payload"]
    return document


def _execution_body(execution: Execution) -> dict[str, Any]:
    status = execution.status
    body: dict[str, Any] = {
        "executionId": execution.id,
        # Codika has no timeout or terminated status: such runs failed.
        "status": "failed" if status in ("timeout", "terminated") else status,
        "createdAt": _iso(execution),
    }
    if execution.finished:
        body["duration"] = round(execution.duration * 1000)
        if status == "success":
            body["resultData"] = execution.result
        else:
            default = _TIMEOUT_ERROR if status == "timeout" else _DEFAULT_ERROR
            body["errorDetails"] = dict(execution.scenario.error or default)
    return body


_DEFAULT_ERROR = {"message": "Workflow execution failed", "type": "node_failure"}
_TIMEOUT_ERROR = {"message": "Workflow execution timed out", "type": "timeout"}
