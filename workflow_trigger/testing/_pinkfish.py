"""Pinkfish's routes: trigger (async or held), status, results and result files.

``POST /ext/triggers/{triggerId}`` (``X-API-KEY``) or its webhook variant
``POST /ext/webhook/{apiKey}/triggers/{triggerId}`` (no header) starts a run
of the trigger's automation with the body as its payload. With ``x-api-wait:
false`` (or no header) it answers 200 with an empty body and the ids in
``X-Pf-Run-Id`` / ``X-Pf-Automation-Id``; with ``x-api-wait: true`` it holds
the request until the run finishes (up to ``sync_limit`` seconds) and answers
the run object, or ``{"status": "timeout", "message"}`` if the run takes
longer. Status and results are ``GET /ext/webhook/{apiKey}/runs/
{automationId}/{runId}/status`` and ``.../results``; result files are served
by the emulator itself at ``GET /files/{token}/{name}``, without credentials.
Errors are ``{"error": "<code>", "message": "<text>"}``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any
from urllib.parse import quote

import attrs
from aiohttp import web

from ._core import EmulatorCore
from ._execution import Execution
from ._wire import iso_s, mime_type, parse_json

__all__ = ["PinkfishConfig", "PinkfishRoutes", "pinkfish_error"]

PLATFORM = "pinkfish"
_BASE32 = "0123456789abcdefghijklmnopqrstuv"
_STATUS = {
    "pending": "PENDING",
    "running": "RUNNING",
    "paused": "RUNNING",
    "waiting": "RUNNING",
    "success": "COMPLETE",
    "failed": "FAILED",
    "error": "FAILED",
    "timeout": "TIMEOUT",
    "terminated": "FAILED",
}


def derived_automation_id(trigger_id: str) -> str:
    """A stable 20-character automation id (the xid alphabet) for a trigger id."""
    number = int.from_bytes(hashlib.sha256(trigger_id.encode()).digest()[:13], "big")
    return "".join(_BASE32[(number >> (5 * index)) & 31] for index in range(20))


@attrs.define
class PinkfishConfig:
    """The key, the automations behind the triggers, and the synchronous hold limit."""

    api_key: str = "pf_test_key"
    sync_limit: float = 60.0
    automation_ids: dict[str, str] = attrs.field(factory=dict)
    automation_version: int = 1

    def automation_id(self, trigger_id: str) -> str:
        """The automation a trigger runs: configured, else derived from the trigger id."""
        return self.automation_ids.get(trigger_id) or derived_automation_id(trigger_id)


def pinkfish_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code.lower(), "message": message}, status=status)


class PinkfishRoutes:
    """The Pinkfish route set; reads :class:`PinkfishConfig` on every request."""

    platform = PLATFORM

    def __init__(self, core: EmulatorCore, config: PinkfishConfig) -> None:
        self.core = core
        self.config = config
        self._files: dict[str, Execution] = {}
        self._last_run_id = 0

    def routes(self) -> list[web.RouteDef]:
        runs = "/ext/webhook/{key}/runs/{automation}/{run}"
        return [
            web.post("/ext/triggers/{trigger}", self.trigger),
            web.post("/ext/webhook/{key}/triggers/{trigger}", self.trigger),
            web.get(runs + "/status", self.status),
            web.get(runs + "/results", self.results),
            web.get("/files/{token}/{name}", self.download),
        ]

    def _authenticate(self, sent: str | None) -> web.Response | None:
        if sent is None:
            return pinkfish_error(401, "unauthorized", "Missing API key: send X-API-KEY")
        if hmac.compare_digest(sent.encode(), self.config.api_key.encode()):
            return None
        return pinkfish_error(401, "unauthorized", "Invalid API key")

    def _run_id(self) -> str:
        """A numeric run id like Pinkfish's (nanoseconds since the epoch), unique."""
        self._last_run_id = max(time.time_ns(), self._last_run_id + 1)
        return str(self._last_run_id)

    async def trigger(self, request: web.Request) -> web.StreamResponse:
        trigger_id = request.match_info["trigger"]
        record = self.core.begin(PLATFORM, "trigger", workflow_id=trigger_id)
        faulty = await self.core.apply_fault(request, pinkfish_error)
        if faulty is not None:
            return faulty
        body = record.body = await request.read()
        sent = request.match_info.get("key", request.headers.get("X-API-KEY"))
        refused = self._authenticate(sent)
        if refused is not None:
            return refused
        wait = request.headers.get("x-api-wait", "false").strip().lower()
        if wait not in ("true", "false"):
            return pinkfish_error(400, "bad_request", "x-api-wait must be true or false")
        try:
            payload = parse_json(body, {})
        except ValueError:
            return pinkfish_error(400, "bad_request", "The request body is not valid JSON")
        scenario = self.core.scenario_for(trigger_id)
        if scenario is None:
            return pinkfish_error(404, "not_found", "Trigger not found")
        execution = self.core.start_execution(
            PLATFORM, trigger_id, payload, scenario, execution_id=self._run_id()
        )
        automation_id = self.config.automation_id(trigger_id)
        token = secrets.token_hex(12)
        execution.extra.update(
            automationId=automation_id,
            automationVersion=self.config.automation_version,
            token=token,
            base_url=str(request.url.origin()),
        )
        self._files[token] = execution
        headers = {"X-Pf-Run-Id": execution.id, "X-Pf-Automation-Id": automation_id}
        if wait == "false":
            return web.Response(status=200, headers=headers)
        limit = self.config.sync_limit
        if not await execution.settle(limit):
            message = f"The run did not finish within {limit:g} seconds: poll its status"
            return web.json_response({"status": "timeout", "message": message}, headers=headers)
        self.core.observe(execution)
        return web.json_response(self.run_object(execution), headers=headers)

    def _lookup(self, request: web.Request, operation: str) -> Execution | None:
        run_id, automation = request.match_info["run"], request.match_info["automation"]
        execution = self.core.find_execution(run_id, PLATFORM)
        if execution is not None and execution.extra["automationId"] != automation:
            execution = None
        workflow_id = execution.workflow_id if execution is not None else None
        self.core.begin(
            PLATFORM,
            "poll" if operation == "poll" else "result",
            workflow_id=workflow_id,
            execution_id=run_id,
        )
        return execution

    async def _answer(self, request: web.Request, operation: str) -> web.StreamResponse:
        execution = self._lookup(request, operation)
        faulty = await self.core.apply_fault(request, pinkfish_error)
        if faulty is not None:
            return faulty
        refused = self._authenticate(request.match_info["key"])
        if refused is not None:
            return refused
        if execution is None or execution.registering:
            return pinkfish_error(404, "not_found", "Run not found")
        self.core.observe(execution)
        if operation == "poll":
            return web.json_response(self.status_body(execution))
        return web.json_response(self.results_body(execution))

    async def status(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "poll")

    async def results(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "result")

    async def download(self, request: web.Request) -> web.StreamResponse:
        token, name = request.match_info["token"], request.match_info["name"]
        execution = self._files.get(token)
        self.core.begin(
            PLATFORM,
            "download",
            workflow_id=None if execution is None else execution.workflow_id,
            execution_id=None if execution is None else execution.id,
        )
        faulty = await self.core.apply_fault(request, pinkfish_error)
        if faulty is not None:
            return faulty
        files = {} if execution is None else execution.scenario.files
        if execution is None or execution.state != "success" or name not in files:
            return pinkfish_error(404, "not_found", "File not found")
        return web.Response(body=files[name], content_type=mime_type(name))

    # -- documents -------------------------------------------------------------

    def _file(self, execution: Execution, name: str) -> dict[str, Any]:
        url = f"{execution.extra['base_url']}/files/{execution.extra['token']}/{quote(name, '')}"
        data = execution.scenario.files[name]
        return {"url": url, "mimeType": mime_type(name), "size": len(data)}

    def _steps(self, execution: Execution) -> list[tuple[str, str]]:
        """(name, status) of every step; a scenario without steps has one, "Step 1"."""
        names = execution.scenario.steps or ("Step 1",)
        done, state = execution.steps_completed(len(names)), execution.state
        steps = []
        for index, name in enumerate(names):
            if index < done:
                status = "COMPLETE"
            elif index > done:
                status = "PENDING"
            elif execution.finished:
                status = _STATUS[state]
            else:
                status = "PENDING" if state == "pending" else "RUNNING"
            steps.append((name, status))
        return steps

    def status_body(self, execution: Execution) -> dict[str, Any]:
        steps = self._steps(execution)
        return {
            "automationId": execution.extra["automationId"],
            "runId": execution.id,
            "status": _STATUS[execution.state],
            "stepStatus": {str(i): status for i, (_, status) in enumerate(steps, 1)},
            "stepInfo": {
                str(i): {"status": status, "name": name, "executionOrder": i}
                for i, (name, status) in enumerate(steps, 1)
            },
        }

    def _ended_steps(self, execution: Execution) -> list[tuple[int, bool, int]]:
        """(step index, whether it is the successful last step, exit code) of ended steps."""
        steps = self._steps(execution)
        ended = []
        for index, (_, status) in enumerate(steps, 1):
            if status in ("COMPLETE", "FAILED", "TIMEOUT"):
                last = index == len(steps) and status == "COMPLETE"
                ended.append((index, last, 0 if status == "COMPLETE" else 1))
        return ended

    def _step_ms(self, execution: Execution) -> int:
        return round(execution.duration / max(1, len(execution.scenario.steps)) * 1000)

    def results_body(self, execution: Execution) -> dict[str, Any]:
        version = execution.extra["automationVersion"]
        files = execution.scenario.files
        results = [
            {
                "stepIndex": index,
                "stepVersion": version,
                "resultUrls": {name: self._file(execution, name) for name in files} if last else {},
                "exitCode": exit_code,
                "duration": self._step_ms(execution),
            }
            for index, last, exit_code in self._ended_steps(execution)
        ]
        body: dict[str, Any] = {
            "automationId": execution.extra["automationId"],
            "automationVersion": version,
            "automationName": execution.workflow_id,
            "id": execution.id,
            "type": "TRIGGER",
            "results": results,
            "started": iso_s(execution.created_at),
            "status": _STATUS[execution.state],
        }
        designated = execution.scenario.designated
        if execution.state == "success" and designated is not None and designated in files:
            entry = self._file(execution, designated)
            body["designatedOutput"] = {
                "url": entry["url"],
                "fileName": designated,
                "mimeType": entry["mimeType"],
                "size": entry["size"],
            }
        return body

    def run_object(self, execution: Execution) -> dict[str, Any]:
        """The finished run, as the synchronous trigger answers it."""
        results = []
        for index, last, exit_code in self._ended_steps(execution):
            if last:
                value = execution.result
                result = {
                    "resultType": "text" if isinstance(value, str) else "json",
                    "result": value,
                }
            elif exit_code:
                message = (execution.scenario.error or {}).get("message", "Step failed")
                result = {"resultType": "error", "result": message}
            else:
                result = {"resultType": "json", "result": None}
            results.append(
                {
                    "stepIndex": index,
                    "result": result,
                    "exitCode": exit_code,
                    "duration": self._step_ms(execution),
                }
            )
        return {
            "id": execution.id,
            "automationId": execution.extra["automationId"],
            "automationVersion": execution.extra["automationVersion"],
            "status": _STATUS[execution.state],
            "results": results,
            "started": iso_s(execution.created_at),
        }
