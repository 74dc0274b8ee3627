"""AwaitStep: ``POST /api/workflows/:id/trigger``, then ``GET .../runs/:runId``.

The protocol, from "Triggering Runs via API" and the platform notes:

- ``Authorization: Bearer ask_...``; scopes ``read`` (runs) and ``deploy``
  (trigger, pause, resume, terminate);
- the trigger sends ``{"connectionId", "params"}``, ``params`` at most
  102,400 characters serialised (JavaScript's length: UTF-16 code units;
  checked here, before sending), and answers either
  ``{"instanceId"}`` or the whole 201 run record. Runs are looked up by the
  record's ``id`` (polling by ``instanceId`` gives 404), so the execution id is
  ``id`` when present, else ``instanceId``; the instance id is kept in extras
  because events are routed by it;
- a run record's ``output`` and ``error`` may be JSON-encoded strings;
- states: queued, running, paused, waiting (for an event), complete,
  errored, terminated, unknown;
- pause / resume / terminate are ``POST .../runs/:runId/{action}`` answering
  ``{"ok": true}``; an event for a waiting run is another trigger whose params
  are ``{"instanceId", "eventType", "payload"}``;
- errors are ``{"error": "<message>"}`` (422 adds ``details``); every
  response has ``X-Request-Id``;
- no idempotency key: a trigger that may have reached the server is never
  sent again.

Functions (``kind: "script"``) are no runs: ``AwaitStepFunction`` POSTs the
payload to the Worker's URL and the reply is the result (a 500 ``{"message"}``
is the function's failure).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from .._secrets import Secret, excerpt
from ..errors import (
    APIError,
    AuthenticationError,
    InvalidInputError,
    PayloadTooLarge,
    ProtocolError,
)
from ..models import ErrorInfo, Execution, Snapshot, Status
from ..policies import PollPolicy
from ._env import Env
from .base import (
    Control,
    ProviderBase,
    Request,
    RequestKind,
    Response,
    TriggerContext,
    Triggered,
    answer_id,
    as_object,
    check_base_url,
    check_same_execution,
    error_for_status,
    json_body,
    map_status,
    path_segment,
)

__all__ = ["AwaitStep"]

#: the platform refuses params whose JSON is longer than this (in JavaScript string length)
PARAMS_LIMIT = 102_400

# ``waiting`` (blocked on step.waitForEvent) is PAUSED: the run will not move
# until someone sends it an event. ``unknown`` is Cloudflare's transient "no
# state yet" answer: non-terminal, so the wait goes on.
_STATUSES = {
    "queued": Status.PENDING,
    "running": Status.RUNNING,
    "paused": Status.PAUSED,
    "waiting": Status.PAUSED,
    "complete": Status.SUCCEEDED,
    "errored": Status.FAILED,
    "terminated": Status.CANCELLED,
    "unknown": Status.RUNNING,
}

_ACTIONS = {"pause": "pause", "resume": "resume", "cancel": "terminate"}


def _check_params_size(params: Any) -> None:
    """``PayloadTooLarge`` for params over the platform's cap, checked as it checks:
    ``JSON.stringify(params).length``, which counts UTF-16 code units, so "é" is one
    (not its two UTF-8 bytes) and a character beyond U+FFFF two."""
    text = json_body(params, "params").decode()
    length = len(text.encode("utf-16-le")) // 2
    if length > PARAMS_LIMIT:
        raise PayloadTooLarge(
            f"the params are {length:,} characters long as JSON, over AwaitStep's limit of "
            f"{PARAMS_LIMIT:,} (100 KB); nothing was sent. Send a reference (a URL or an id) "
            "instead."
        )


class AwaitStep(ProviderBase):
    """AwaitStep workflows (Cloudflare Workflows) through the AwaitStep API."""

    kind: ClassVar[str] = "awaitstep"
    controls: ClassVar[frozenset[Control]] = frozenset({"cancel", "pause", "resume", "event"})

    def __init__(
        self,
        api_key: str,
        connection_id: str,
        *,
        base_url: str = "https://app.awaitstep.dev",
        poll: PollPolicy | None = None,
    ) -> None:
        if not isinstance(api_key, str) or not api_key.strip() or not api_key.isprintable():
            raise InvalidInputError(
                "api_key must be an 'ask_...' key: a non-empty string without control "
                "characters (a trailing newline from a file?)"
            )
        if not isinstance(connection_id, str) or not connection_id.strip():
            raise InvalidInputError(
                "connection_id must be a non-empty string: the Cloudflare connection "
                "('conn_...') that triggers run against"
            )
        self.base_url = check_base_url(base_url)
        self.connection_id = connection_id
        self._api_key = Secret(api_key)
        # The document's polling example waits 2 s between polls, 60 times.
        self.default_poll = poll or PollPolicy(interval=2.0, timeout=120.0)

    def __repr__(self) -> str:
        return f"AwaitStep(connection_id={self.connection_id!r}, base_url={self.base_url!r})"

    def _secrets(self) -> tuple[Secret, ...]:
        return (self._api_key,)

    def _request(self, kind: RequestKind, method: str, path: str, body: Any = None) -> Request:
        url = f"{self.base_url}/api/workflows/{path}"
        headers = {"Authorization": f"Bearer {self._api_key.reveal()}"}
        raw = None
        if body is not None:
            raw = json_body(body)
            headers["Content-Type"] = "application/json"
        return self.request(kind, method, url, headers, raw)

    def _trigger_body(self, connection_id: str, params: Any) -> dict[str, Any]:
        _check_params_size(params)  # refuse before anything is sent
        return {"connectionId": connection_id, "params": params}

    # -- trigger -----------------------------------------------------------------

    def trigger_request(self, workflow_id: str, payload: Any, context: TriggerContext) -> Request:
        options = context.options
        if options.idempotency_key is not None:
            raise InvalidInputError(
                "AwaitStep has no idempotency keys: a retried trigger always starts a new "
                "run. Leave idempotency_key unset."
            )
        connection = options.connection_id or self.connection_id
        body = self._trigger_body(connection, {} if payload is None else payload)
        path = f"{path_segment(workflow_id, 'workflow id')}/trigger"
        return self._request("trigger", "POST", path, body)

    def parse_trigger(
        self, workflow_id: str, response: Response, context: TriggerContext
    ) -> Triggered:
        record = self._record(response, f"trigger of {workflow_id!r}")
        instance_id = answer_id(record.get("instanceId"), "instanceId", required=False)
        run_id = answer_id(record.get("id"), "id", required=False) or instance_id
        if run_id is None:
            raise ProtocolError(
                f"AwaitStep accepted the trigger of {workflow_id!r} but its answer has no id "
                "nor instanceId, so the run cannot be followed; check base_url"
            )
        extras = {"instance_id": instance_id} if instance_id else {}
        # the record names its connection; the bare {"instanceId"} answer does not, so the
        # connection the trigger went through is kept (events must use the same one)
        connection = answer_id(record.get("connectionId"), "connectionId", required=False) or (
            context.options.connection_id or self.connection_id
        )
        if connection is not None:
            extras["connection_id"] = connection
        execution = Execution(
            provider=self.kind,
            workflow_id=workflow_id,
            execution_id=run_id,
            extras=extras,
            triggered_at=context.now,
        )
        first = self._snapshot(record, context.now) if "status" in record else None
        return Triggered(
            execution=execution, snapshot=first if first and first.status.is_terminal else None
        )

    # -- status ------------------------------------------------------------------

    def status_request(self, execution: Execution) -> Request:
        path = f"{path_segment(execution.workflow_id, 'workflow id')}/runs/"
        path += path_segment(execution.execution_id, "run id")
        return self._request("status", "GET", path)

    def parse_status(self, execution: Execution, response: Response, now: datetime) -> Snapshot:
        record = self._record(response, f"status of run {excerpt(execution.execution_id, 60)}")
        # a run record names the run by ``id`` and its Cloudflare instance by
        # ``instanceId``; the handle holds one or both (the trigger may answer only the
        # instance): the record is this run's when one of them matches
        ours = {execution.execution_id, execution.extras.get("instance_id")}
        reported = [record.get(name) for name in ("id", "instanceId")]
        reported = [r for r in reported if r not in (None, "")]
        if reported and not ours.intersection(r for r in reported if isinstance(r, str)):
            check_same_execution(execution, reported[0], "AwaitStep run record")
        return self._snapshot(record, now)

    def _snapshot(self, record: dict[str, Any], now: datetime) -> Snapshot:
        raw = record.get("status")
        status = map_status(self.kind, raw, _STATUSES)
        failure = self._decoded(record.get("error"))
        error = None
        if status is Status.FAILED or failure not in (None, "", {}):
            error = self._error_info(failure)
        return Snapshot(
            status=status,
            raw_status=str(raw),
            observed_at=now,
            result=self._decoded(record.get("output")) if status is Status.SUCCEEDED else None,
            error=error,
        )

    def _decoded(self, value: Any) -> Any:
        """A JSON-encoded string decoded; anything else (or text that is not JSON) as it is."""
        return self._embedded_json(value) if isinstance(value, str) else value

    def _error_info(self, failure: Any) -> ErrorInfo:
        """``{"name", "message"}`` (a serialised JS Error), a plain string, or nothing."""
        found = failure if isinstance(failure, dict) else {"message": failure}
        message, name = found.get("message"), found.get("name")
        text = message if isinstance(message, str) and message else name
        return ErrorInfo(
            message=text if isinstance(text, str) and text else "Unknown error",
            code=name if isinstance(name, str) else None,
            details=failure if isinstance(failure, dict) else None,
        )

    # -- controls ----------------------------------------------------------------

    def control_request(self, execution: Execution, control: Control, data: Any) -> Request:
        workflow = path_segment(execution.workflow_id, "workflow id")
        if control == "event":
            data = data if isinstance(data, dict) else {}
            event_type = data.get("event_type")
            if not isinstance(event_type, str) or not event_type:
                raise InvalidInputError("the event type must be a non-empty string")
            params = {
                "instanceId": execution.extras.get("instance_id", execution.execution_id),
                "eventType": event_type,
                "payload": data.get("payload"),
            }
            connection = execution.extras.get("connection_id", self.connection_id)
            body = self._trigger_body(connection, params)
            return self._request("control", "POST", f"{workflow}/trigger", body)
        if control not in _ACTIONS:
            raise self.unsupported(control)
        path = f"{workflow}/runs/{path_segment(execution.execution_id, 'run id')}/"
        return self._request("control", "POST", path + _ACTIONS[control])

    def parse_control(self, execution: Execution, response: Response) -> None:
        # ``{"ok": true}`` is documented, but any 2xx is the platform's yes.
        if not 200 <= response.status < 300:
            raise self._error(response, f"control of run {execution.execution_id}")

    # -- answers and errors ------------------------------------------------------

    def _record(self, response: Response, what: str) -> dict[str, Any]:
        if not 200 <= response.status < 300:
            raise self._error(response, what)
        return as_object(self._json(response), "AwaitStep's answer")

    def _error(self, response: Response, what: str) -> APIError:
        try:
            body = self._json(response)
        except ProtocolError:
            body = None
        body = body if isinstance(body, dict) else {}
        message = body.get("error")
        message = excerpt(message) if isinstance(message, str) else f"HTTP {response.status}"
        request_id = self._header(response, "x-request-id") or body.get("requestId")
        said = f"HTTP {response.status}: {message}"
        if isinstance(request_id, str) and request_id:
            said += f"; request id {excerpt(request_id, 60)}"
        if response.status in (401, 403):
            scope = "read" if what.startswith("status") else "deploy"
            return AuthenticationError(
                f"AwaitStep refused the API key in the Authorization: Bearer header for the "
                f"{what} ({said}); check that the key is current and has the {scope!r} scope",
                status_code=response.status,
            )
        return error_for_status(
            response, f"AwaitStep answered the {what} with {said}", details=body.get("details")
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AwaitStep:
        """The provider configured by the environment (``env``, or ``os.environ``).

        The variables are those ``workflow-trigger --help`` lists; a missing one is an
        ``InvalidInputError`` naming it.
        """
        e = Env(env)
        key = e.need("AWAITSTEP_API_KEY", "the AwaitStep API key")
        connection = e.need("AWAITSTEP_CONNECTION_ID", "the AwaitStep connection id")
        return cls(key, connection, **e.url("AWAITSTEP_BASE_URL"))
