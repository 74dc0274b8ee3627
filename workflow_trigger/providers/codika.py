"""Codika: ``POST webhook/{processInstanceId}/{workflowId}``, then ``GET status/...``.

The protocol, from Codika's "Triggering Workflows" page and its fuller docs:

- the trigger wraps the input as ``{"payload": ...}`` and answers
  ``{"success": true, "executionId": ...}`` (``id`` in some versions);
- the status answers ``{"execution": {"status", "resultData", "errorDetails"}}``
  with ``pending`` / ``success`` / ``failed`` (and ``error``, a failure too);
- errors are ``{"success": false, "error": "<message>", "code": "<code>"}``,
  412 meaning the process instance is inactive;
- right after a trigger the status may be a 404 while the execution
  registers: inside ``registering_grace`` seconds that counts as pending;
- credentials: an instance key (``X-API-Key`` header or ``api_key`` query
  parameter), or an organisation key (``X-Process-Manager-Key``); triggers may
  instead be signed as Standard Webhooks with a ``whsec_`` secret.
- no idempotency key: a trigger that may have reached the server is never
  sent again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode

from .._secrets import Secret, excerpt
from ..errors import APIError, AuthenticationError, InvalidInputError, ProtocolError
from ..models import ErrorInfo, Execution, Snapshot, Status
from ..policies import PollPolicy
from ._env import Env
from .base import (
    ProviderBase,
    Request,
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

__all__ = ["Codika", "sign_standard_webhook"]

_STATUSES = {
    "pending": Status.PENDING,
    "running": Status.RUNNING,
    "success": Status.SUCCEEDED,
    "failed": Status.FAILED,
    "error": Status.FAILED,
}


def sign_standard_webhook(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value (``v1,<base64>``) of the Standard Webhooks spec."""
    key = secret.removeprefix("whsec_")
    try:
        raw_key = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(
            "signing_secret must be the 'whsec_...' secret as the platform shows it "
            "(base64 after the prefix)"
        ) from exc
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(raw_key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class Codika(ProviderBase):
    """The Codika platform.

    ``api_key`` is an instance key (``ck_...``), sent in ``X-API-Key`` or, with
    ``auth="query"``, as the ``api_key`` query parameter; ``org_key`` is an
    organisation key (``cko_...``) sent in ``X-Process-Manager-Key`` instead.
    With ``signing_secret`` (``whsec_...``) triggers are signed as Standard
    Webhooks; polls still use the key.
    """

    kind: ClassVar[str] = "codika"
    secret_query_keys: ClassVar[tuple[str, ...]] = ("api_key",)
    default_rate_limit: float | None = None

    def __init__(
        self,
        process_instance_id: str,
        api_key: str | None = None,
        *,
        base_url: str = "https://api.codika.io",
        auth: Literal["header", "query"] = "header",
        org_key: str | None = None,
        signing_secret: str | None = None,
        registering_grace: float = 10.0,
        poll: PollPolicy | None = None,
    ) -> None:
        path_segment(process_instance_id, "process_instance_id")
        if (api_key is None) == (org_key is None):
            raise InvalidInputError(
                "Codika needs exactly one of api_key= (an instance key, 'ck_...') or "
                "org_key= (an organisation key, 'cko_...'): status polls use it"
            )
        for name, value in (("api_key", api_key), ("org_key", org_key)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidInputError(f"{name} must be a non-empty string")
        if auth not in ("header", "query"):
            raise InvalidInputError(f"auth must be 'header' or 'query', got {auth!r}")
        if auth == "query" and api_key is None:
            raise InvalidInputError("auth='query' sends the instance key: give api_key=")
        if not isinstance(registering_grace, (int, float)) or not registering_grace >= 0:
            raise InvalidInputError("registering_grace must be a number of seconds >= 0")
        self.process_instance_id = process_instance_id
        self.base_url = check_base_url(base_url)
        self.auth = auth
        self._api_key = Secret(api_key) if api_key is not None else None
        self._org_key = Secret(org_key) if org_key is not None else None
        self._signing_secret = Secret(signing_secret) if signing_secret is not None else None
        if signing_secret is not None:
            sign_standard_webhook(signing_secret, "check", 0, b"")  # fail now, not per trigger
        self.registering_grace = float(registering_grace)
        self.default_poll = poll or PollPolicy(interval=1.5, timeout=120.0)

    def __repr__(self) -> str:
        signed = ", signed" if self._signing_secret else ""
        return (
            f"Codika(process_instance_id={self.process_instance_id!r}, "
            f"base_url={self.base_url!r}, credential={self._credential_name()}{signed})"
        )

    def _secrets(self) -> tuple[Secret, ...]:
        found = [self._api_key, self._org_key, self._signing_secret]
        if self._signing_secret is not None:  # the key itself, without its prefix
            found.append(Secret(self._signing_secret.reveal().removeprefix("whsec_")))
        return tuple(s for s in found if s is not None)

    def _credential_name(self) -> str:
        if self._org_key is not None:
            return "the organisation key (X-Process-Manager-Key header)"
        if self.auth == "query":
            return "the instance key (api_key query parameter)"
        return "the instance key (X-API-Key header)"

    def _request(
        self,
        kind: Any,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        *,
        with_key: bool = True,
    ) -> Request:
        url = f"{self.base_url}/{path}"
        if not with_key:
            pass
        elif self.auth == "query" and self._api_key is not None:
            url += "?" + urlencode({"api_key": self._api_key.reveal()})
        elif self._org_key is not None:
            headers["X-Process-Manager-Key"] = self._org_key.reveal()
        elif self._api_key is not None:
            headers["X-API-Key"] = self._api_key.reveal()
        return self.request(kind, method, url, headers, body)

    # -- trigger -----------------------------------------------------------------

    def trigger_request(self, workflow_id: str, payload: Any, context: TriggerContext) -> Request:
        options = context.options
        if options.idempotency_key is not None:
            raise InvalidInputError(
                "Codika has no idempotency keys: a retried trigger always starts a new "
                "execution. Leave idempotency_key unset."
            )
        if options.connection_id is not None:
            raise InvalidInputError("Codika has no connections: leave connection_id unset")
        path = f"webhook/{path_segment(self.process_instance_id, 'process_instance_id')}/"
        path += path_segment(workflow_id, "workflow id")
        body = json_body({"payload": {} if payload is None else payload})
        headers = {"Content-Type": "application/json"}
        if self._signing_secret is not None:
            timestamp = int(context.now.timestamp())
            headers["webhook-id"] = context.message_id
            headers["webhook-timestamp"] = str(timestamp)
            headers["webhook-signature"] = sign_standard_webhook(
                self._signing_secret.reveal(), context.message_id, timestamp, body
            )
            # The signature authenticates the trigger; no key rides along with it.
            return self._request("trigger", "POST", path, body, headers, with_key=False)
        return self._request("trigger", "POST", path, body, headers)

    def parse_trigger(
        self, workflow_id: str, response: Response, context: TriggerContext
    ) -> Triggered:
        if not 200 <= response.status < 300:
            credential = (
                "the Standard Webhooks signature (webhook-signature header)"
                if self._signing_secret is not None
                else self._credential_name()
            )
            raise self._error(response, f"trigger of {workflow_id!r}", credential)
        data = as_object(self._json(response), "Codika's trigger response")
        if data.get("success") is False:
            raise self._error(response, f"trigger of {workflow_id!r}", self._credential_name())
        execution_id = answer_id(
            data.get("executionId", data.get("id")), "executionId", required=False
        )
        if execution_id is None:
            raise ProtocolError(
                f"Codika accepted the trigger of {workflow_id!r} but its answer has no "
                "executionId (nor id), so the run cannot be followed; check base_url"
            )
        execution = Execution(
            provider=self.kind,
            workflow_id=workflow_id,
            execution_id=execution_id,
            extras={"process_instance_id": self.process_instance_id},
            triggered_at=context.now,
        )
        return Triggered(execution=execution)

    # -- status ------------------------------------------------------------------

    def status_request(self, execution: Execution) -> Request:
        instance = execution.extras.get("process_instance_id", self.process_instance_id)
        path = f"status/{path_segment(instance, 'process_instance_id')}/"
        path += path_segment(execution.execution_id, "execution id")
        return self._request("status", "GET", path, None, {})

    def parse_status(self, execution: Execution, response: Response, now: datetime) -> Snapshot:
        if response.status == 404 and (
            (now - execution.triggered_at).total_seconds() < self.registering_grace
        ):
            return Snapshot(status=Status.PENDING, raw_status="registering", observed_at=now)
        what = f"status of execution {excerpt(execution.execution_id, 60)}"
        if not 200 <= response.status < 300:
            raise self._error(response, what, self._credential_name())
        data = as_object(self._json(response), "Codika's status response")
        record = data.get("execution", data)
        record = as_object(record, "Codika's status 'execution'")
        answered = record.get("executionId", data.get("executionId"))
        check_same_execution(execution, answered, "Codika status answer")
        raw = record.get("status")
        status = map_status(self.kind, raw, _STATUSES)
        result = record.get("resultData") if status is Status.SUCCEEDED else None
        error = None
        if status is Status.FAILED:
            details = record.get("errorDetails")
            details = details if isinstance(details, dict) else {}
            message = details.get("message")
            code = details.get("code")
            error = ErrorInfo(
                message=message if isinstance(message, str) and message else "Unknown error",
                code=code if isinstance(code, str) else None,
                details=details or None,
            )
        return Snapshot(
            status=status,
            raw_status=str(raw),
            observed_at=now,
            result=result,
            error=error,
        )

    # -- errors ------------------------------------------------------------------

    def _error(self, response: Response, what: str, credential: str) -> APIError:
        message: Any = None
        code: Any = None
        try:
            body = self._json(response)
        except ProtocolError:
            body = None
        if isinstance(body, dict):
            message, code = body.get("error"), body.get("code")
        message = excerpt(message) if isinstance(message, str) else f"HTTP {response.status}"
        code = excerpt(code, 60) if isinstance(code, str) else None
        if response.status in (401, 403):
            return AuthenticationError(
                f"Codika refused {credential} for the {what} (HTTP {response.status}: "
                f"{message}); check that the credential is current and has access to "
                f"process instance {self.process_instance_id!r}",
                status_code=response.status,
                code=code,
            )
        if response.status == 412:
            return APIError(
                f"Codika process instance {self.process_instance_id!r} is inactive "
                f"(HTTP 412: {message}); activate it in the Codika dashboard, then retry",
                status_code=412,
                code=code,
            )
        return error_for_status(
            response, f"Codika answered HTTP {response.status} to the {what}: {message}", code=code
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Codika:
        """The provider configured by the environment (``env``, or ``os.environ``).

        The variables are those ``workflow-trigger --help`` lists; a missing one is an
        ``InvalidInputError`` naming it.
        """
        e = Env(env)
        instance = e.need("CODIKA_PROCESS_INSTANCE_ID", "the Codika process instance id")
        org_key = e.get("CODIKA_ORG_KEY")
        api_key = e.get("CODIKA_API_KEY")
        if api_key is None and org_key is None:
            e.need("CODIKA_API_KEY", "the Codika instance key (or CODIKA_ORG_KEY)")
        return cls(
            instance,
            api_key=api_key,
            org_key=org_key if api_key is None else None,
            signing_secret=e.get("CODIKA_SIGNING_SECRET"),
            **e.url("CODIKA_BASE_URL"),
        )
