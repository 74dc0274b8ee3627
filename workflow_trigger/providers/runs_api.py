"""Runs API (LoopFour's ``/api/v1``): ``POST workflows/{id}/run``, then ``GET runs/{runId}``.

The protocol, from the "API Triggers" page and the platform notes:

- the key (``wfk_...``) goes in ``x-api-key``; scopes ``workflows:execute``
  (run) and ``runs:read`` (GET runs);
- the trigger sends ``{"input", "connectionId"?, "idempotencyKey"?}`` and
  answers ``{"success": true, "data": {"runId", "status", "workflowId",
  "workflowVersion"}}``;
- the platform honours ``idempotencyKey`` for 24 hours (the same key returns
  the existing run), so a trigger that carries one may be sent again after it
  reached the server; one without is never retried after send;
- the run answers ``{"success": true, "data": {"id", "status", "output",
  "error": {code, message}, "steps", "startedAt", "completedAt"}}`` with
  ``pending`` / ``running`` / ``completed`` / ``failed`` / ``cancelled``;
- errors are ``{"success": false, "error": {"code", "message", "details"}}``
  (``success`` may be missing): ``VALIDATION_ERROR`` and ``INVALID_STATUS``
  (400), ``UNAUTHORIZED`` (401), ``FORBIDDEN`` (403), ``NOT_FOUND`` (404),
  ``RATE_LIMITED`` (429);
- rate limits per key, sliding window: execute 500/min, read 1000/min, with
  ``X-RateLimit-Remaining`` / ``X-RateLimit-Reset`` on responses;
- a cancel path is not documented, so ``cancel`` sends nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from .._secrets import Secret, excerpt
from ..errors import (
    APIError,
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    UnsupportedOperation,
)
from ..models import ErrorInfo, Execution, Snapshot, Status, Step
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
    parse_time,
    path_segment,
)

__all__ = ["RunsApi", "rate_limit_hint"]

_STATUSES = {
    "pending": Status.PENDING,
    "running": Status.RUNNING,
    "completed": Status.SUCCEEDED,
    "failed": Status.FAILED,
    "cancelled": Status.CANCELLED,
}

# What each documented error code means for the caller: the class, and what to do.
_BY_CODE: dict[str, tuple[type[APIError], str]] = {
    "UNAUTHORIZED": (
        AuthenticationError,
        "check that the API key in the x-api-key header is current and has the {scope} scope",
    ),
    "VALIDATION_ERROR": (
        InvalidInputError,
        "the input was refused: see .details for the fields, and the workflow's inputSchema",
    ),
    "INVALID_STATUS": (APIError, "the workflow must be active to run: activate it, then retry"),
    "NOT_FOUND": (NotFoundError, "check the id and base_url"),
    "RATE_LIMITED": (RateLimitError, "slow down: a key may run 500 and read 1,000 a minute"),
}
_BY_CODE["FORBIDDEN"] = _BY_CODE["UNAUTHORIZED"]

#: above this, ``X-RateLimit-Reset`` is a Unix timestamp, not a number of seconds
_EPOCH_THRESHOLD = 10**9


def rate_limit_hint(
    response: Response, now: datetime | None = None
) -> tuple[int | None, float | None]:
    """``(remaining, seconds until the window resets)`` from a response's headers.

    ``X-RateLimit-Remaining`` is the number of requests left in the window.
    ``X-RateLimit-Reset`` is read as *seconds until the reset*, the usual form
    for a sliding window; a value over 10**9 is a Unix timestamp instead (in
    milliseconds over 10**12) and becomes seconds from ``now``. Providers read
    no clock, so without ``now`` such a timestamp gives None. Either part is
    None when its header is missing or unreadable.
    """
    remaining: int | None = None
    reset: float | None = None
    raw = (response.header("x-ratelimit-remaining") or "").strip()
    if raw.isascii() and raw.isdigit():
        remaining = int(raw)
    try:
        value = float(response.header("x-ratelimit-reset") or "nan")
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value >= 0:
        if value <= _EPOCH_THRESHOLD:
            reset = value
        elif now is not None:
            epoch = value / 1000 if value > _EPOCH_THRESHOLD * 1000 else value
            reset = max(epoch - now.timestamp(), 0.0)
    return remaining, reset


class RunsApi(ProviderBase):
    """LoopFour's workflow Runs API.

    ``base_url`` is the server root (``http://localhost:3000``); ``api_key`` a
    ``wfk_...`` key; ``connection_id`` the default connection for triggers
    (``trigger(connection_id=)`` overrides it). The default client rate limit,
    500 requests a minute, is the documented execute limit per key (reads may
    go to 1,000 a minute, so it is the safe bound for both).
    """

    kind: ClassVar[str] = "runs_api"
    honours_idempotency_key: ClassVar[bool] = True
    reports_rate_limits: ClassVar[bool] = True
    default_rate_limit: float | None = 500 / 60

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        connection_id: str | None = None,
        poll: PollPolicy | None = None,
    ) -> None:
        if not isinstance(api_key, str) or not api_key.strip() or not api_key.isprintable():
            raise InvalidInputError(
                "api_key must be a 'wfk_...' key: a non-empty string without control "
                "characters (a trailing newline from a file?)"
            )
        if connection_id is not None and (
            not isinstance(connection_id, str) or not connection_id.strip()
        ):
            raise InvalidInputError("connection_id must be a non-empty string or None")
        self.base_url = check_base_url(base_url)
        self.connection_id = connection_id
        self._api_key = Secret(api_key)
        # The document's own polling example waits 1 s between polls.
        self.default_poll = poll or PollPolicy(interval=1.0, timeout=120.0)

    def __repr__(self) -> str:
        return f"RunsApi(base_url={self.base_url!r}, connection_id={self.connection_id!r})"

    def _secrets(self) -> tuple[Secret, ...]:
        return (self._api_key,)

    def _request(
        self, kind: RequestKind, method: str, path: str, body: bytes | None, retry: bool
    ) -> Request:
        url = f"{self.base_url}/api/v1/{path}"
        headers = {"x-api-key": self._api_key.reveal()}
        if body is not None:
            headers["Content-Type"] = "application/json"
        return self.request(kind, method, url, headers, body, retry_after_send=retry)

    # -- trigger -----------------------------------------------------------------

    def trigger_request(self, workflow_id: str, payload: Any, context: TriggerContext) -> Request:
        options = context.options
        path = f"workflows/{path_segment(workflow_id, 'workflow id')}/run"
        data: dict[str, Any] = {"input": {} if payload is None else payload}
        connection = options.connection_id or self.connection_id
        if connection is not None:
            data["connectionId"] = connection
        key = options.idempotency_key
        if key is not None:
            if not isinstance(key, str) or not key.strip():
                raise InvalidInputError("idempotency_key must be a non-empty string or None")
            data["idempotencyKey"] = key
        # With a key the platform returns the existing run, so a resend is safe.
        return self._request("trigger", "POST", path, json_body(data), retry=key is not None)

    def parse_trigger(
        self, workflow_id: str, response: Response, context: TriggerContext
    ) -> Triggered:
        record = self._data(response, f"trigger of {workflow_id!r}")
        run_id = answer_id(record.get("runId", record.get("id")), "data.runId", required=False)
        if run_id is None:
            raise ProtocolError(
                f"the Runs API accepted the trigger of {workflow_id!r} but its answer has no "
                "data.runId, so the run cannot be followed; check base_url"
            )
        extras: dict[str, str] = {}
        version = record.get("workflowVersion")
        if isinstance(version, (int, str)) and not isinstance(version, bool):
            extras["workflow_version"] = answer_id(version, "data.workflowVersion") or ""
        execution = Execution(
            provider=self.kind,
            workflow_id=workflow_id,
            execution_id=run_id,
            extras=extras,
            triggered_at=context.now,
        )
        # The trigger answer has no output: even a finished run (an idempotent
        # replay) is read through one poll.
        return Triggered(execution=execution)

    # -- status ------------------------------------------------------------------

    def status_request(self, execution: Execution) -> Request:
        path = f"runs/{path_segment(execution.execution_id, 'run id')}"
        return self._request("status", "GET", path, None, retry=True)

    def parse_status(self, execution: Execution, response: Response, now: datetime) -> Snapshot:
        record = self._data(response, f"status of run {excerpt(execution.execution_id, 60)}")
        check_same_execution(execution, record.get("id"), "Runs API's run answer")
        raw = record.get("status")
        status = map_status(self.kind, raw, _STATUSES)
        error = None
        failure = record.get("error")
        if status is Status.FAILED or isinstance(failure, dict):
            error = self._error_info(failure)
        retry_after = None
        if not status.is_terminal:
            remaining, reset = rate_limit_hint(response, now)
            if remaining == 0 and reset is not None:
                retry_after = reset  # the read budget is spent: poll when it refills
        return Snapshot(
            status=status,
            raw_status=str(raw),
            steps=self._steps(record.get("steps")),
            observed_at=now,
            result=record.get("output") if status is Status.SUCCEEDED else None,
            error=error,
            started_at=parse_time(record.get("startedAt")),
            finished_at=parse_time(record.get("completedAt")),
            retry_after=retry_after,
        )

    def _steps(self, steps: Any) -> tuple[Step, ...]:
        return tuple(
            Step(
                id=step["id"],
                name=step["name"] if isinstance(step.get("name"), str) else None,
                status=map_status(self.kind, step.get("status"), _STATUSES),
                raw_status=str(step.get("status")),
            )
            for step in (steps if isinstance(steps, list) else ())
            if isinstance(step, dict) and isinstance(step.get("id"), str)
        )

    def _error_info(self, failure: Any) -> ErrorInfo:
        failure = failure if isinstance(failure, dict) else {}
        message, code = failure.get("message"), failure.get("code")
        return ErrorInfo(
            message=message if isinstance(message, str) and message else "Unknown error",
            code=code if isinstance(code, str) else None,
            details=failure or None,
        )

    # -- controls ----------------------------------------------------------------

    def rate_limit_hint(self, response: Response, now: datetime) -> tuple[int | None, float | None]:
        return rate_limit_hint(response, now)

    def control_request(self, execution: Execution, control: Control, data: Any) -> Request:
        if control == "cancel":
            raise UnsupportedOperation(
                "the Runs API documents no path to cancel a run, so none is guessed; nothing "
                "was sent. Cancel the run from the platform's dashboard"
            )
        raise self.unsupported(control)

    # -- answers and errors ------------------------------------------------------

    def _data(self, response: Response, what: str) -> dict[str, Any]:
        """The ``data`` object of a successful answer, or the mapped exception."""
        if not 200 <= response.status < 300:
            raise self._error(response, what)
        body = as_object(self._json(response), "the Runs API's answer")
        if body.get("success") is False or (
            isinstance(body.get("error"), dict) and "data" not in body
        ):
            raise self._error(response, what)
        return as_object(body.get("data", body), "the Runs API's 'data'")

    def _error(self, response: Response, what: str) -> APIError:
        try:
            body = self._json(response)
        except ProtocolError:
            body = None
        failure = body.get("error") if isinstance(body, dict) else None
        if isinstance(failure, str):
            failure = {"message": failure}
        failure = failure if isinstance(failure, dict) else {}
        code, message = failure.get("code"), failure.get("message")
        code = excerpt(code, 60) if isinstance(code, str) else None
        message = excerpt(message) if isinstance(message, str) else f"HTTP {response.status}"
        status = response.status
        said = f"(HTTP {status} {code}: {message})" if code else f"(HTTP {status}: {message})"
        entry = code if code in _BY_CODE else "UNAUTHORIZED" if status in (401, 403) else ""
        cls, hint = _BY_CODE.get(entry or "", (None, "if it persists, check base_url"))
        scope = "'runs:read'" if what.startswith("status") else "'workflows:execute'"
        return error_for_status(
            response,
            f"the Runs API refused the {what} {said}; {hint.format(scope=scope)}",
            code=code,
            details=failure.get("details"),
            cls=cls,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RunsApi:
        """The provider configured by the environment (``env``, or ``os.environ``).

        The variables are those ``workflow-trigger --help`` lists; a missing one is an
        ``InvalidInputError`` naming it.
        """
        e = Env(env)
        base = e.need("RUNS_API_BASE_URL", "the Runs API base URL")
        key = e.need("RUNS_API_KEY", "the Runs API key")
        return cls(base, key, connection_id=e.get("RUNS_API_CONNECTION_ID"))
