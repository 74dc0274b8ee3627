"""The Runs API (LoopFour's workflow API) routes: run a workflow, read a run.

``POST /api/v1/workflows/{id}/run`` with ``{"input", "connectionId",
"idempotencyKey"}`` answers ``{"success": true, "data": {"runId", "status":
"pending", "workflowId", "workflowVersion"}}``; ``GET /api/v1/runs/{runId}``
answers ``{"success": true, "data": {<run>}}``. Errors are ``{"success": false,
"error": {"code", "message", "details"?}}`` (``error_success=False`` drops the
``success`` member, as some answers do).

A trigger goes through, in order: faults, the key (``x-api-key``: 401, or 403
for the read-only key), the rate limit (429), the body (400), the workflow
(404 in strict mode), its status (400 ``INVALID_STATUS`` unless active), the
connection (404, only when ``connection_ids`` is set), the input schema (400
``VALIDATION_ERROR`` for a missing ``required_inputs`` field), the idempotency
key (the same key within ``idempotency_ttl`` returns the existing run and
starts nothing). A rate limit is enforced only when configured
(``rate_limit`` for runs, ``read_rate_limit`` for reads; off by default), and
only then do the answers of its kind carry ``X-RateLimit-Limit`` /
``-Remaining`` / ``-Reset`` for the sent key's sliding one-minute window:
headers announcing a limit the emulator does not enforce would make clients
wait for resets for nothing. There is no cancel endpoint (none is
documented): ``Execution.terminate()`` stands for a cancel from elsewhere.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import attrs
from aiohttp import web

from ._core import EmulatorCore
from ._execution import Execution
from ._wire import SlidingWindow, iso_ms, json_type, parse_json

__all__ = ["RunsApiConfig", "RunsApiRoutes"]

PLATFORM = "runs_api"

_STATUS = {
    "pending": "pending",
    "running": "running",
    "paused": "running",
    "waiting": "running",
    "success": "completed",
    "failed": "failed",
    "error": "failed",
    "timeout": "failed",
    "terminated": "cancelled",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Category = Literal["execute", "read"]


@attrs.define
class RunsApiConfig:
    """Keys, workflows and answer forms of the Runs API (see the module docstring)."""

    api_key: str = "wfk_test_key"
    read_only_key: str | None = "wfk_read_only"
    workflow_version: int = 1
    workflow_status: dict[str, str] = attrs.field(factory=dict)
    connection_ids: set[str] | None = None
    rate_limit: int | None = None
    read_rate_limit: int | None = None
    rate_limit_reset: Literal["epoch", "seconds"] = "epoch"
    idempotency_ttl: float = 24 * 3600.0
    error_success: bool = True
    details_form: Literal["path", "field"] = "path"


class RunsApiRoutes:
    """The Runs API route set; reads :class:`RunsApiConfig` on every request."""

    platform = PLATFORM

    def __init__(self, core: EmulatorCore, config: RunsApiConfig) -> None:
        self.core = core
        self.config = config
        self.window = SlidingWindow()
        self._idempotency: dict[str, tuple[Execution, float]] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/v1/workflows/{workflow}/run", self._headers(self.run, "execute")),
            web.get("/api/v1/runs/{run}", self._headers(self.get_run, "read")),
        ]

    # -- rendering -----------------------------------------------------------

    def error(
        self, status: int, code: str, message: str, details: list[Any] | None = None
    ) -> web.Response:
        error: dict[str, Any] = {"code": code, "message": message}
        if details is not None:
            error["details"] = details
        body: dict[str, Any] = {"success": False} if self.config.error_success else {}
        body["error"] = error
        return web.json_response(body, status=status)

    def _invalid(self, message: str, problems: list[tuple[list[str], str]]) -> web.Response:
        by_field = self.config.details_form == "field"
        details: list[dict[str, Any]] = [
            {"field": ".".join(path), "message": text}
            if by_field
            else {"path": path, "message": text}
            for path, text in problems
        ]
        return self.error(400, "VALIDATION_ERROR", message, details)

    def _configured(self, category: Category) -> int | None:
        """The enforced limit per minute, ``None`` when off."""
        return self.config.rate_limit if category == "execute" else self.config.read_rate_limit

    def _headers(self, handler: Handler, category: Category) -> Handler:
        async def with_headers(request: web.Request) -> web.StreamResponse:
            response = await handler(request)
            limit = self._configured(category)
            if limit is None:
                return response
            key = (request.headers.get("x-api-key", ""), category)
            frees_in = self.window.frees_in(key)
            reset = (
                frees_in if self.config.rate_limit_reset == "seconds" else time.time() + frees_in
            )
            response.headers["X-RateLimit-Limit"] = str(limit)
            response.headers["X-RateLimit-Remaining"] = str(max(0, limit - self.window.used(key)))
            response.headers["X-RateLimit-Reset"] = str(math.ceil(reset))
            return response

        return with_headers

    # -- checks --------------------------------------------------------------

    def _authenticate(self, request: web.Request, scope: str) -> web.Response | None:
        sent = request.headers.get("x-api-key")
        if sent is None:
            return self.error(401, "UNAUTHORIZED", "Missing API key: send an x-api-key header")
        if hmac.compare_digest(sent.encode(), self.config.api_key.encode()):
            return None
        read_only = self.config.read_only_key
        if read_only is not None and hmac.compare_digest(sent.encode(), read_only.encode()):
            if scope == "runs:read":
                return None
            return self.error(403, "FORBIDDEN", f"The API key lacks the {scope} scope")
        return self.error(401, "UNAUTHORIZED", "Invalid API key")

    def _rate_limit(self, request: web.Request, category: Category) -> web.Response | None:
        key = (request.headers.get("x-api-key", ""), category)
        configured = self._configured(category)
        if configured is not None and self.window.used(key) >= configured:
            response = self.error(
                429,
                "RATE_LIMITED",
                f"Rate limit exceeded. Limit: {configured} requests per minute.",
            )
            response.headers["Retry-After"] = str(math.ceil(self.window.frees_in(key)))
            return response
        self.window.hit(key)
        return None

    # -- handlers ------------------------------------------------------------

    async def run(self, request: web.Request) -> web.StreamResponse:
        workflow_id = request.match_info["workflow"]
        record = self.core.begin(PLATFORM, "trigger", workflow_id=workflow_id)
        faulty = await self.core.apply_fault(request, self.error)
        if faulty is not None:
            return faulty
        body = record.body = await request.read()
        refused = self._authenticate(request, "workflows:execute") or self._rate_limit(
            request, "execute"
        )
        if refused is not None:
            return refused
        try:
            document = parse_json(body, {})
        except ValueError:
            return self.error(400, "VALIDATION_ERROR", "The request body is not valid JSON")
        problems = _body_problems(document)
        if problems:
            return self._invalid("Invalid request body", problems)
        scenario = self.core.scenario_for(workflow_id)
        if scenario is None:
            return self.error(404, "NOT_FOUND", "Workflow not found")
        status = self.config.workflow_status.get(workflow_id, "active")
        if status != "active":
            message = f"Workflow must be active to run. Current status: {status}"
            return self.error(400, "INVALID_STATUS", message)
        connection = document.get("connectionId")
        known = self.config.connection_ids
        if connection is not None and known is not None and connection not in known:
            return self.error(404, "NOT_FOUND", "Connection not found")
        payload = document.get("input") or {}
        missing = [name for name in scenario.required_inputs if name not in payload]
        if missing:
            return self._invalid(
                "Input validation failed", [([name], "Required") for name in missing]
            )
        key = document.get("idempotencyKey")
        if key is not None:
            existing = self._idempotency.get(key)
            if (
                existing is not None
                and time.monotonic() - existing[1] < self.config.idempotency_ttl
            ):
                self.core.replay(existing[0])
                data = _started(existing[0], replayed=True)
                return web.json_response({"success": True, "data": data})
        run_id = "run_" + self.core.new_id().replace("-", "")
        execution = self.core.start_execution(
            PLATFORM, workflow_id, payload, scenario, execution_id=run_id
        )
        execution.extra.update(
            workflowVersion=self.config.workflow_version,
            connectionId=connection,
            idempotencyKey=key,
        )
        if key is not None:
            self._idempotency[key] = (execution, time.monotonic())
        return web.json_response({"success": True, "data": _started(execution)})

    async def get_run(self, request: web.Request) -> web.StreamResponse:
        run_id = request.match_info["run"]
        execution = self.core.find_execution(run_id, PLATFORM)
        workflow_id = execution.workflow_id if execution is not None else None
        self.core.begin(PLATFORM, "poll", workflow_id=workflow_id, execution_id=run_id)
        faulty = await self.core.apply_fault(request, self.error)
        if faulty is not None:
            return faulty
        refused = self._authenticate(request, "runs:read") or self._rate_limit(request, "read")
        if refused is not None:
            return refused
        if execution is None or execution.registering:
            return self.error(404, "NOT_FOUND", "Run not found")
        self.core.observe(execution)
        return web.json_response({"success": True, "data": run_body(execution)})


def _body_problems(document: Any) -> list[tuple[list[str], str]]:
    if not isinstance(document, dict):
        return [([], f"Expected object, received {json_type(document)}")]
    expected = {"input": "object", "connectionId": "string", "idempotencyKey": "string"}
    problems = []
    for name, kind in expected.items():
        value = document.get(name)
        if value is not None and json_type(value) != kind:
            problems.append(([name], f"Expected {kind}, received {json_type(value)}"))
    return problems


def _started(execution: Execution, *, replayed: bool = False) -> dict[str, Any]:
    """The trigger's ``data``: a new run is ``pending``; a replay reports the run as it is now."""
    return {
        "runId": execution.id,
        "status": _STATUS[execution.state] if replayed else "pending",
        "workflowId": execution.workflow_id,
        "workflowVersion": execution.extra["workflowVersion"],
    }


def run_body(execution: Execution) -> dict[str, Any]:
    """The run object of ``GET /api/v1/runs/{runId}``."""
    state = execution.state
    status = _STATUS[state]
    started, ended = execution.running_since(), execution.ended_at()
    return {
        "id": execution.id,
        "status": status,
        "input": execution.payload,
        "output": execution.result if state == "success" else None,
        "error": _run_error(execution) if status == "failed" else None,
        "startedAt": None if started is None else iso_ms(execution.wall(started)),
        "completedAt": None if ended is None else iso_ms(execution.wall(ended)),
        "steps": _steps(execution),
        "triggerType": "api",
        "durationMs": None if ended is None else round((ended - (started or ended)) * 1000),
        "createdAt": iso_ms(execution.created_at),
    }


def _run_error(execution: Execution) -> dict[str, Any]:
    if execution.scenario.error is not None:
        return dict(execution.scenario.error)
    if execution.state == "timeout":
        return {"code": "TIMEOUT", "message": "Workflow execution timed out"}
    steps = execution.scenario.steps
    message = f"Step '{steps[-1]}' failed" if steps else "Workflow execution failed"
    return {"code": "STEP_ERROR", "message": message}


def _steps(execution: Execution) -> list[dict[str, Any]]:
    names = execution.scenario.steps
    done, state = execution.steps_completed(), execution.state
    steps = []
    for index, name in enumerate(names):
        if index < done:
            status = "completed"
        elif index > done:
            status = "pending"
        elif execution.finished:
            status = "cancelled" if state == "terminated" else "failed"
        else:
            status = "pending" if state == "pending" else "running"
        last = status == "completed" and index == len(names) - 1
        steps.append({"id": name, "status": status, "output": execution.result if last else None})
    return steps
