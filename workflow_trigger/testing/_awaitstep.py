"""AwaitStep's routes (Cloudflare Workflows): trigger, poll, control, events, functions.

All API paths are under ``/api`` and authenticate with ``Authorization: Bearer
<key>`` (the read-only key has the ``read`` scope only: 403 on trigger and run
control). ``POST /api/workflows/{id}/trigger`` takes ``{"connectionId",
"params"}`` and answers 201 with the whole run record (status ``queued``), or
``{"instanceId"}`` alone with ``trigger_reply="instance"`` (the documented
form); ``GET /api/workflows/{id}/runs/{runId}`` finds runs by record ``id``
(and by ``instanceId`` only in the instance form). ``output`` and ``error``
are JSON-encoded strings (``json_strings=False``: plain JSON values). Errors
are ``{"error": "<message>"}``, 5xx ones with the ``requestId``; a 429 is
``text/plain`` with ``Retry-After`` and ``RateLimit-*``. Every API response
carries ``X-Request-Id``.

A trigger whose params hold ``instanceId`` and ``eventType`` delivers an event
to that run instead of starting one (answered with that run's record);
a scenario's ``wait_for_event`` keeps the run ``waiting`` at half its duration
until the event comes. Functions (``functions``) are invoked by
``POST /fn/{name}``, standing for the Worker URL.
"""

from __future__ import annotations

import hmac
import json
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import attrs
from aiohttp import web

from ._core import EmulatorCore
from ._execution import Execution
from ._wire import iso_ms, parse_json

__all__ = ["AwaitStepConfig", "AwaitStepRoutes"]

PLATFORM = "awaitstep"
MAX_BODY = 1024 * 1024
MAX_PARAMS = 100 * 1024
RATE_LIMITS = {"trigger": 30, "other": 200}

_STATUS = {
    "pending": "queued",
    "running": "running",
    "paused": "paused",
    "waiting": "waiting",
    "success": "complete",
    "failed": "errored",
    "error": "errored",
    "timeout": "errored",
    "terminated": "terminated",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@attrs.define
class AwaitStepConfig:
    """Keys, connection, deployments and answer forms of AwaitStep."""

    api_key: str = "ask_test_key"
    read_only_key: str | None = "ask_read_only"
    connection_id: str = "conn_test"
    version_id: str = "ver_test"
    trigger_reply: Literal["run", "instance"] = "run"
    json_strings: bool = True
    functions: set[str] = attrs.field(factory=set)
    undeployed: set[str] = attrs.field(factory=set)


def params_size(params: Any) -> int:
    """``JSON.stringify(params).length``: compact JSON, in UTF-16 code units."""
    text = json.dumps(params, separators=(",", ":"), ensure_ascii=False)
    return len(text.encode("utf-16-le")) // 2


def error(status: int, code: str, message: str) -> web.Response:
    """AwaitStep's error answer (``code`` is not part of it)."""
    del code
    if status == 429:
        text = "Too many requests, please try again later."
        return web.Response(status=429, text=text, content_type="text/plain")
    if status >= 500:
        request_id = str(uuid.uuid4())
        message = "Internal server error" if status == 500 else message
        body = {"error": message, "requestId": request_id}
        return web.json_response(body, status=status, headers={"X-Request-Id": request_id})
    return web.json_response({"error": message}, status=status)


def function_error(status: int, code: str, message: str) -> web.Response:
    """What a Worker answers for an unhandled error: ``{"message"}``."""
    del code
    return web.json_response({"message": message}, status=status)


class AwaitStepRoutes:
    """The AwaitStep route set; reads :class:`AwaitStepConfig` on every request."""

    platform = PLATFORM

    def __init__(self, core: EmulatorCore, config: AwaitStepConfig) -> None:
        self.core = core
        self.config = config
        self._instances: dict[str, Execution] = {}

    def routes(self) -> list[web.RouteDef]:
        runs = "/api/workflows/{workflow}/runs/{run}"
        return [
            web.post("/api/workflows/{workflow}/trigger", self._api(self.trigger, "trigger")),
            web.get(runs, self._api(self.get_run, "other")),
            web.post(runs + "/{action:pause|resume|terminate}", self._api(self.control, "other")),
            web.route("*", "/fn/{name}", self.function),
        ]

    def _api(self, handler: Handler, kind: str) -> Handler:
        async def with_headers(request: web.Request) -> web.StreamResponse:
            response = await handler(request)
            response.headers.setdefault("X-Request-Id", str(uuid.uuid4()))
            if response.status == 429:
                retry = response.headers.get("Retry-After", "60")
                reset = math.ceil(float(retry)) if retry.replace(".", "").isdigit() else 60
                response.headers["RateLimit-Limit"] = str(RATE_LIMITS[kind])
                response.headers["RateLimit-Remaining"] = "0"
                response.headers["RateLimit-Reset"] = str(reset)
            return response

        return with_headers

    def _authenticate(self, request: web.Request, scope: str) -> web.Response | None:
        scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
        token = sent.strip().encode()
        if scheme.lower() == "bearer" and token:
            if hmac.compare_digest(token, self.config.api_key.encode()):
                return None
            read_only = self.config.read_only_key
            if read_only is not None and hmac.compare_digest(token, read_only.encode()):
                return None if scope == "read" else error(403, "", f"Missing scope: {scope}")
        return error(401, "", "Unauthorized")

    def _find(self, workflow_id: str, run_id: str) -> Execution | None:
        execution = self.core.find_execution(run_id, PLATFORM)
        if execution is None and self.config.trigger_reply == "instance":
            execution = self._instances.get(run_id)
        if execution is None or execution.workflow_id != workflow_id:
            return None
        # Function invocations are executions too, but have no run record.
        return execution if "instanceId" in execution.extra else None

    def record(self, execution: Execution, *, fresh: bool = False) -> dict[str, Any]:
        """The run record; ``fresh``: as created (queued), for the trigger's answer."""
        state = execution.state
        output: Any = None
        error_value: Any = None
        if not fresh and state == "success":
            output = execution.result
        elif not fresh and _STATUS[state] == "errored":
            given = execution.scenario.error or {}
            default = "Workflow timed out" if state == "timeout" else "Workflow execution failed"
            error_value = {
                "name": given.get("name", "Error"),
                "message": given.get("message", default),
            }
        if self.config.json_strings:
            output = None if output is None else json.dumps(output)
            error_value = None if error_value is None else json.dumps(error_value)
        updated = execution.created_at if fresh else execution.wall(execution.updated_at())
        return {
            "id": execution.id,
            "workflowId": execution.workflow_id,
            "versionId": execution.extra["versionId"],
            "connectionId": execution.extra["connectionId"],
            "instanceId": execution.extra["instanceId"],
            "status": "queued" if fresh else _STATUS[state],
            "output": output,
            "error": error_value,
            "createdAt": iso_ms(execution.created_at),
            "updatedAt": iso_ms(updated),
        }

    def _reply(self, execution: Execution) -> web.Response:
        if self.config.trigger_reply == "instance":
            return web.json_response({"instanceId": execution.extra["instanceId"]}, status=201)
        return web.json_response(self.record(execution, fresh=True), status=201)

    async def trigger(self, request: web.Request) -> web.StreamResponse:
        workflow_id = request.match_info["workflow"]
        record = self.core.begin(PLATFORM, "trigger", workflow_id=workflow_id)
        faulty = await self.core.apply_fault(request, error)
        if faulty is not None:
            return faulty
        try:
            body = record.body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return error(413, "", "Payload too large")
        if len(body) > MAX_BODY:
            return error(413, "", "Payload too large")
        refused = self._authenticate(request, "deploy")
        if refused is not None:
            return refused
        try:
            document = parse_json(body, {})
        except ValueError:
            return error(400, "", "Invalid JSON")
        if not isinstance(document, dict):
            return error(400, "", "Invalid JSON")
        if workflow_id in self.config.functions:
            return error(400, "", "Functions cannot be triggered: POST to the function's URL")
        scenario = self.core.scenario_for(workflow_id)
        if scenario is None:
            return error(404, "", "Not found")
        if workflow_id in self.config.undeployed:
            return error(400, "", "No version deployed")
        connection = document.get("connectionId")
        if not connection:
            return error(400, "", "No connection")
        if connection != self.config.connection_id:
            return error(404, "", "Connection not found")
        params = document.get("params")
        params = {} if params is None else params
        problem = None
        if not isinstance(params, dict):
            problem = "Trigger params must be an object"
        elif params_size(params) > MAX_PARAMS:
            problem = "Trigger params must be under 100 KB"
        if problem is not None:
            details = [{"path": "params", "message": problem}]
            return web.json_response({"error": "Validation failed", "details": details}, status=422)
        if isinstance(params.get("instanceId"), str) and isinstance(params.get("eventType"), str):
            return self._deliver(workflow_id, params)
        execution = self.core.start_execution(
            PLATFORM,
            workflow_id,
            params,
            scenario,
            execution_id="run_" + self.core.new_id().replace("-", ""),
        )
        instance_id = self.core.new_id()
        execution.extra.update(
            instanceId=instance_id, connectionId=connection, versionId=self.config.version_id
        )
        self._instances[instance_id] = execution
        return self._reply(execution)

    def _deliver(self, workflow_id: str, params: dict[str, Any]) -> web.Response:
        target = self._instances.get(params["instanceId"]) or self._find(
            workflow_id, params["instanceId"]
        )
        if target is None or target.workflow_id != workflow_id:
            return error(404, "", "Run not found")
        if target.finished:
            return error(400, "", f"Run is {_STATUS[target.state]}: it takes no events")
        target.deliver(params["eventType"], params.get("payload"))
        return self._reply(target)

    async def get_run(self, request: web.Request) -> web.StreamResponse:
        workflow_id, run_id = request.match_info["workflow"], request.match_info["run"]
        execution = self._find(workflow_id, run_id)
        self.core.begin(PLATFORM, "poll", workflow_id=workflow_id, execution_id=run_id)
        faulty = await self.core.apply_fault(request, error)
        if faulty is not None:
            return faulty
        refused = self._authenticate(request, "read")
        if refused is not None:
            return refused
        if execution is None or execution.registering:
            return error(404, "", "Run not found")
        self.core.observe(execution)
        return web.json_response(self.record(execution))

    async def control(self, request: web.Request) -> web.StreamResponse:
        workflow_id, run_id = request.match_info["workflow"], request.match_info["run"]
        execution = self._find(workflow_id, run_id)
        self.core.begin(PLATFORM, "control", workflow_id=workflow_id, execution_id=run_id)
        faulty = await self.core.apply_fault(request, error)
        if faulty is not None:
            return faulty
        refused = self._authenticate(request, "deploy")
        if refused is not None:
            return refused
        if execution is None or execution.registering:
            return error(404, "", "Run not found")
        action = request.match_info["action"]
        if execution.finished:
            return error(400, "", f"Cannot {action} a run that is {_STATUS[execution.state]}")
        {"pause": execution.pause, "resume": execution.resume, "terminate": execution.terminate}[
            action
        ]()
        return web.json_response({"ok": True})

    async def function(self, request: web.Request) -> web.StreamResponse:
        """A deployed function's Worker: POST runs the graph, other methods only answer 200."""
        name = request.match_info["name"]
        invoking = request.method == "POST"
        record = self.core.begin(PLATFORM, "trigger" if invoking else "any", workflow_id=name)
        faulty = await self.core.apply_fault(request, function_error)
        if faulty is not None:
            return faulty
        scenario = self.core.scenario_for(name)
        if name not in self.config.functions or scenario is None:
            return function_error(404, "", "Not found")
        if not invoking:
            return web.Response(status=200)
        body = record.body = await request.read()
        try:
            payload = json.loads(body)
        except ValueError:
            return function_error(500, "", "Unexpected end of JSON input")
        execution = self.core.start_execution(PLATFORM, name, payload, scenario)
        await execution.settle()
        self.core.observe(execution)
        if execution.status == "success":
            return web.json_response(execution.result)
        message = (execution.scenario.error or {}).get("message", "Function failed")
        return function_error(500, "", message)
