"""Pinkfish: ``POST /ext/triggers/{id}``, then ``GET /ext/webhook/{apiKey}/runs/.../status``.

The protocol, from the "Async Polling" page and the platform notes:

- the trigger sends the payload itself as the body, with ``X-API-KEY`` (or,
  in the webhook variant, the key in the path: ``/ext/webhook/{apiKey}/
  triggers/{id}``, no header) and ``x-api-wait: false``; the ids come back in
  the ``X-Pf-Run-Id`` and ``X-Pf-Automation-Id`` headers, the body is empty;
- with ``x-api-wait: true`` the request is held up to 60 s and answers the
  finished run object (``id``, ``automationId``, ``results``, ``started``), or
  ``{"status": "timeout", "message"}`` when the run takes longer: then polling
  goes on as in the async mode;
- status and results are always under ``/ext/webhook/{apiKey}/runs/
  {automationId}/{runId}/`` (``status``, then ``results`` once COMPLETE), so
  the key is in the URL path: every shown URL and message masks it;
- statuses PENDING / RUNNING / COMPLETE / FAILED / TIMEOUT; ``stepStatus`` and
  ``stepInfo`` (``name``, ``executionOrder``) report each step;
- the results document lists each step's files in ``resultUrls`` (name ->
  ``url``, ``mimeType``, ``size``) and may name a ``designatedOutput``; the
  files live on another host, fetched without credentials;
- errors are ``{"error": "<code>", "message": "<text>"}`` (400, 401);
- no idempotency key: a trigger that may have reached the server is never
  sent again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

import attrs

from .._secrets import REDACTED, Secret, excerpt
from ..errors import APIError, AuthenticationError, InvalidInputError, ProtocolError
from ..models import Artifact, ErrorInfo, Execution, Snapshot, Status, Step
from ..policies import PollPolicy
from ._env import Env
from .base import (
    NotJSON,
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
    finite_number,
    json_body,
    map_status,
    path_segment,
)

__all__ = ["Pinkfish"]

_STATUSES = {
    "PENDING": Status.PENDING,
    "RUNNING": Status.RUNNING,
    "COMPLETE": Status.SUCCEEDED,
    "FAILED": Status.FAILED,
    "TIMEOUT": Status.TIMED_OUT,
}


#: how long Pinkfish holds a synchronous trigger before answering "timeout"
_SYNC_HOLD = 60.0


def _artifact(name: Any, info: Any) -> Artifact | None:
    if not isinstance(info, dict) or not isinstance(info.get("url"), str):
        return None
    url, mime, size = info["url"], info.get("mimeType"), info.get("size")
    if not isinstance(name, str) or not name:
        name = urlsplit(url).path.rsplit("/", 1)[-1] or "output"
    return Artifact(
        name=name,
        url=url,
        mime_type=mime if isinstance(mime, str) else None,
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
    )


def _artifacts(results: list[Any]) -> tuple[Artifact, ...]:
    found = []
    for entry in results:
        urls = entry.get("resultUrls") if isinstance(entry, dict) else None
        for name, info in urls.items() if isinstance(urls, dict) else ():
            artifact = _artifact(name, info)
            if artifact is not None:
                found.append(artifact)
    return tuple(found)


def _step_order(key: str, info: dict[str, Any]) -> tuple[float, float, str]:
    order = finite_number(info.get("executionOrder"))
    numeric = float(key) if key.isascii() and key.isdigit() else math.inf
    return (order if order is not None else math.inf, numeric, key)


class Pinkfish(ProviderBase):
    """Pinkfish automations, started through their API (or webhook) trigger.

    ``wait="sync"`` asks Pinkfish to hold the trigger until the run ends (up to
    60 s; the trigger request is allowed that long whatever ``request_timeout``); a run that takes
    longer is polled as usual. ``trigger="webhook"`` puts the key in the path
    instead of the ``X-API-KEY`` header.
    """

    kind: ClassVar[str] = "pinkfish"

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = "https://triggers.app.pinkfish.ai",
        wait: Literal["async", "sync"] = "async",
        trigger: Literal["api", "webhook"] = "api",
        poll: PollPolicy | None = None,
    ) -> None:
        if not isinstance(api_key, str) or not api_key.strip() or not api_key.isprintable():
            raise InvalidInputError(
                "api_key must be a non-empty string without control characters "
                "(a trailing newline from a file?)"
            )
        if wait not in ("async", "sync"):
            raise InvalidInputError(f"wait must be 'async' or 'sync', got {wait!r}")
        if trigger not in ("api", "webhook"):
            raise InvalidInputError(f"trigger must be 'api' or 'webhook', got {trigger!r}")
        self.base_url = check_base_url(base_url)
        self.wait = wait
        self.trigger = trigger
        self._api_key = Secret(api_key)
        # The key rides in URL paths percent-encoded: mask that form too.
        self._key_segment = Secret(path_segment(api_key, "api_key"))
        # The document's examples poll every 3 s ("every 2-5 seconds").
        self.default_poll = poll or PollPolicy(interval=3.0, timeout=120.0)

    def __repr__(self) -> str:
        return f"Pinkfish(base_url={self.base_url!r}, wait={self.wait!r}, trigger={self.trigger!r})"

    def _secrets(self) -> tuple[Secret, ...]:
        return (self._api_key, self._key_segment)

    def _request(
        self, kind: RequestKind, method: str, url: str, headers: dict[str, str], body: Any = None
    ) -> Request:
        return self.request(kind, method, url, headers, body)

    def _run_url(self, execution: Execution, leaf: str) -> str:
        automation = execution.extras.get("automation_id")
        if automation is None:
            raise InvalidInputError(
                f"execution {execution.execution_id} has no automation_id: pass the Execution "
                "that Pinkfish's trigger returned (or its token)"
            )
        run = path_segment(execution.execution_id, "run id")
        return (
            f"{self.base_url}/ext/webhook/{self._key_segment.reveal()}/runs/"
            f"{path_segment(automation, 'automation id')}/{run}/{leaf}"
        )

    # -- trigger -----------------------------------------------------------------

    def trigger_request(self, workflow_id: str, payload: Any, context: TriggerContext) -> Request:
        options = context.options
        if options.idempotency_key is not None or options.connection_id is not None:
            raise InvalidInputError(
                "Pinkfish has neither idempotency keys nor connections: a retried trigger "
                "always starts a new run. Leave idempotency_key and connection_id unset."
            )
        trigger = path_segment(workflow_id, "trigger id")
        headers = {
            "Content-Type": "application/json",
            "x-api-wait": "true" if self.wait == "sync" else "false",
        }
        if self.trigger == "api":
            url = f"{self.base_url}/ext/triggers/{trigger}"
            headers["X-API-KEY"] = self._api_key.reveal()
        else:
            url = f"{self.base_url}/ext/webhook/{self._key_segment.reveal()}/triggers/{trigger}"
        body = json_body({} if payload is None else payload)
        request = self._request("trigger", "POST", url, headers, body)
        if self.wait == "sync":  # Pinkfish holds the answer up to 60 s: allow for it
            request = attrs.evolve(request, timeout=_SYNC_HOLD + 15.0)
        return request

    def parse_trigger(
        self, workflow_id: str, response: Response, context: TriggerContext
    ) -> Triggered:
        what = f"trigger of {workflow_id!r}"
        if not 200 <= response.status < 300:
            raise self._error(response, what, trigger=True)
        run = self._sync_run(response)
        run_id = answer_id(
            response.header("x-pf-run-id") or run.get("id"), "run id (X-Pf-Run-Id)", required=False
        )
        automation_id = answer_id(
            response.header("x-pf-automation-id") or run.get("automationId"),
            "automation id (X-Pf-Automation-Id)",
            required=False,
        )
        if not run_id or not automation_id:
            raise ProtocolError(
                f"Pinkfish accepted the {what} but its answer lacks the X-Pf-Run-Id or "
                "X-Pf-Automation-Id header, so the run cannot be followed; check base_url"
            )
        execution = Execution(
            provider=self.kind,
            workflow_id=workflow_id,
            execution_id=run_id,
            extras={"automation_id": automation_id},
            triggered_at=context.now,
        )
        raw = run.get("status", "COMPLETE" if isinstance(run.get("results"), list) else None)
        if raw is None or raw == "timeout":  # no run object, or the 60 s hold expired: poll
            return Triggered(execution=execution)
        snapshot = self._snapshot(run, raw, context.now)
        return Triggered(
            execution=execution, snapshot=snapshot if snapshot.status.is_terminal else None
        )

    def _sync_run(self, response: Response) -> dict[str, Any]:
        """The run object a sync trigger answers with; ``{}`` in async mode or if unreadable."""
        if self.wait != "sync" or not response.body.strip():
            return {}
        try:
            body = self._json(response)
        except NotJSON:
            return {}
        return body if isinstance(body, dict) else {}

    # -- status and results --------------------------------------------------------

    def status_request(self, execution: Execution) -> Request:
        return self._request("status", "GET", self._run_url(execution, "status"), {})

    def parse_status(self, execution: Execution, response: Response, now: datetime) -> Snapshot:
        if not 200 <= response.status < 300:
            raise self._error(response, f"status of run {excerpt(execution.execution_id, 60)}")
        doc = as_object(self._json(response), "Pinkfish's status answer")
        self._check_run(execution, doc, "Pinkfish status answer")
        return self._snapshot(doc, doc.get("status"), now)

    @staticmethod
    def _check_run(execution: Execution, doc: dict[str, Any], what: str) -> None:
        check_same_execution(execution, doc.get("runId", doc.get("id")), what)
        automation = execution.extras.get("automation_id")
        answered = doc.get("automationId")
        if automation and answered not in (None, "", automation):
            raise ProtocolError(
                f"the {what} is about automation {excerpt(str(answered), 60)!r}, not "
                f"{automation!r} that run {excerpt(execution.execution_id, 60)} belongs to; "
                "its status and result were not used: check base_url"
            )

    def _status(self, raw: Any) -> Status:
        return map_status(self.kind, raw.upper() if isinstance(raw, str) else raw, _STATUSES)

    def _snapshot(self, doc: dict[str, Any], raw: Any, now: datetime) -> Snapshot:
        status = self._status(raw)
        snapshot = Snapshot(
            status=status, raw_status=str(raw), steps=self._steps(doc), observed_at=now
        )
        if status in (Status.FAILED, Status.TIMED_OUT):
            said = doc.get("message", doc.get("error"))
            message = said if isinstance(said, str) and said else None
            error = ErrorInfo(
                message=message or f"the Pinkfish run ended {raw}; its step results tell why",
                code=str(raw),
            )
            return attrs.evolve(snapshot, error=error)
        if status is Status.SUCCEEDED and isinstance(doc.get("results"), list):
            return self._with_results(snapshot, doc)  # sync mode: no results request
        return snapshot

    def _steps(self, doc: dict[str, Any]) -> tuple[Step, ...]:
        statuses, infos = doc.get("stepStatus"), doc.get("stepInfo")
        statuses = statuses if isinstance(statuses, dict) else {}
        infos = infos if isinstance(infos, dict) else {}
        steps = []
        for key in {*statuses, *infos}:
            info = infos[key] if isinstance(infos.get(key), dict) else {}
            raw, name = statuses.get(key, info.get("status")), info.get("name")
            step = Step(
                id=key,
                name=name if isinstance(name, str) else None,
                status=self._status(raw),
                raw_status=str(raw),
            )
            steps.append((_step_order(key, info), step))
        return tuple(step for _, step in sorted(steps, key=lambda pair: pair[0]))

    def result_request(self, execution: Execution, snapshot: Snapshot) -> Request | None:
        if snapshot.status is not Status.SUCCEEDED or snapshot.result is not None:
            return None
        return self._request("result", "GET", self._run_url(execution, "results"), {})

    def parse_result(
        self, execution: Execution, snapshot: Snapshot, response: Response
    ) -> Snapshot:
        if not 200 <= response.status < 300:
            raise self._error(response, f"results of run {excerpt(execution.execution_id, 60)}")
        doc = as_object(self._json(response), "Pinkfish's results document")
        self._check_run(execution, doc, "Pinkfish results document")
        if not isinstance(doc.get("results"), list):
            raise ProtocolError(
                f"Pinkfish's results document for run {execution.execution_id} has no "
                "'results' list; check base_url"
            )
        return self._with_results(snapshot, doc)

    def _with_results(self, snapshot: Snapshot, doc: dict[str, Any]) -> Snapshot:
        designated = doc.get("designatedOutput")
        name = designated.get("fileName") if isinstance(designated, dict) else None
        return attrs.evolve(
            snapshot,
            result=doc,
            artifacts=_artifacts(doc["results"]),
            designated_output=_artifact(name, designated),
        )

    def download_request(self, artifact: Artifact) -> Request:
        """A GET of a result file. The file host is not Pinkfish's API, so no
        credential rides along; the URL's query (a signature) is masked when shown."""
        parts = urlsplit(artifact.url) if isinstance(artifact, Artifact) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidInputError("download needs an Artifact with an http(s) url")
        shown = urlunsplit(parts._replace(query=REDACTED if parts.query else "", fragment=""))
        return Request(
            kind="download",
            method="GET",
            url=artifact.url,
            redacted_url=self.redact(shown),
            retry_after_send=True,
        )

    # -- errors ------------------------------------------------------------------

    def _error(self, response: Response, what: str, *, trigger: bool = False) -> APIError:
        try:
            body = self._json(response)
        except ProtocolError:
            body = None
        body = body if isinstance(body, dict) else {}
        code, text = _text(body.get("error")), _text(body.get("message"))
        code = excerpt(code, 60) if code else None
        text = excerpt(text) if text else None
        said = f"HTTP {response.status} {code}" if code else f"HTTP {response.status}"
        said += f": {text or code or 'no message'}"
        if response.status in (401, 403):
            where = (
                "the API key in the X-API-KEY header"
                if trigger and self.trigger == "api"
                else "the API key in the URL path (/ext/webhook/<key>/...)"
            )
            return AuthenticationError(
                self.redact(
                    f"Pinkfish refused {where} for the {what} ({said}); check that the key "
                    "is current and belongs to the trigger's account"
                ),
                status_code=response.status,
                code=code,
            )
        message = self.redact(f"Pinkfish answered the {what} with {said}")
        return error_for_status(response, message, code=code)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Pinkfish:
        """The provider configured by the environment (``env``, or ``os.environ``).

        The variables are those ``workflow-trigger --help`` lists; a missing one is an
        ``InvalidInputError`` naming it.
        """
        e = Env(env)
        key = e.need("PINKFISH_API_KEY", "the Pinkfish API key")
        wait = e.get("PINKFISH_WAIT") or "async"
        if wait not in ("async", "sync"):
            raise InvalidInputError("PINKFISH_WAIT must be 'async' or 'sync'")
        return cls(key, wait=wait, **e.url("PINKFISH_BASE_URL"))  # type: ignore[arg-type]


def _text(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value else None
