"""AwaitStep functions (``kind: "script"``): one POST to the Worker's URL, the result in the reply.

Functions have no instance lifecycle: no run record, no instance id, no
pause/resume/terminate. The request body is the payload itself (parsed as
JSON and exposed to nodes as ``event.payload``); the reply is the graph's
``EXPORT_`` values. An unhandled error is a 500 ``{"message"}`` and there are
no retries: each request is a fresh invocation, so none is ever sent twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from .._secrets import Secret, excerpt
from ..errors import InvalidInputError, UnsupportedOperation
from ..models import ErrorInfo, Execution, Snapshot, Status
from ._env import Env
from .base import (
    NotJSON,
    ProviderBase,
    Request,
    Response,
    TriggerContext,
    Triggered,
    check_base_url,
    error_for_status,
    json_body,
)

__all__ = ["AwaitStepFunction"]

_NO_RECORD = (
    "an AwaitStep function has no run record to poll: its result is the reply to the "
    "trigger, so use client.run(...) rather than trigger() then wait()"
)


class AwaitStepFunction(ProviderBase):
    """An AwaitStep function: one POST to its Worker URL, the result in the reply.

    ``headers`` are sent with every call (say, a Cloudflare Access token); their
    values are treated as secrets. The workflow name given to ``run`` only
    labels the ``Execution``, whose id is the client's message id.
    """

    kind: ClassVar[str] = "awaitstep_function"
    pollable: ClassVar[bool] = False

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None) -> None:
        try:
            check_base_url(url)
        except InvalidInputError as exc:
            raise InvalidInputError(f"url is the function's Worker URL: {exc}") from exc
        headers = dict(headers or {})
        if not all(
            isinstance(k, str) and isinstance(v, str) and k.isprintable() and v.isprintable()
            for k, v in headers.items()
        ):
            raise InvalidInputError(
                "headers must map header names to string values without control characters"
            )
        self.url = url
        self._headers = {name: Secret(value) for name, value in headers.items()}

    def __repr__(self) -> str:
        return f"AwaitStepFunction(url={self.redact(self.url)!r}, headers={sorted(self._headers)})"

    def _secrets(self) -> tuple[Secret, ...]:
        # A value like "Bearer <token>" is masked whole, and its token alone too.
        values = {v.reveal() for v in self._headers.values()}
        values |= {v.split()[-1] for v in values if len(v.split()) > 1}
        return tuple(Secret(v) for v in sorted(values, key=len, reverse=True) if v)

    def trigger_request(self, workflow_id: str, payload: Any, context: TriggerContext) -> Request:
        options = context.options
        if not isinstance(workflow_id, str) or not workflow_id.strip():
            raise InvalidInputError(
                f"the function name must be a non-empty string, got {workflow_id!r}"
            )
        if options.idempotency_key is not None or options.connection_id is not None:
            raise InvalidInputError(
                "an AwaitStep function takes neither idempotency_key nor connection_id: "
                "each call is one independent POST"
            )
        headers = {"Content-Type": "application/json"}
        headers.update((name, secret.reveal()) for name, secret in self._headers.items())
        # no run record: a resend would be a second invocation (POSTs are never resent)
        return self.request(
            "trigger", "POST", self.url, headers, json_body({} if payload is None else payload)
        )

    def parse_trigger(
        self, workflow_id: str, response: Response, context: TriggerContext
    ) -> Triggered:
        execution = Execution(
            provider=self.kind,
            workflow_id=workflow_id,
            execution_id=context.message_id,
            triggered_at=context.now,
        )
        body: Any = None
        if response.body.strip():
            try:
                body = self._json(response)
            except NotJSON:  # a custom triggerCode may answer text
                body = self.redact(response.body.decode("utf-8", "replace"))
        raw, now = f"HTTP {response.status}", context.now
        if 200 <= response.status < 300:
            snap = Snapshot(status=Status.SUCCEEDED, raw_status=raw, observed_at=now, result=body)
        elif response.status == 500 and isinstance(body, dict) and "message" in body:
            message = body["message"]
            text = message if isinstance(message, str) and message else None
            error = ErrorInfo(message=text or "Unknown error", details=body)
            snap = Snapshot(status=Status.FAILED, raw_status=raw, observed_at=now, error=error)
        else:
            said = body.get("message", body.get("error")) if isinstance(body, dict) else body
            said = excerpt(said) if isinstance(said, str) and said else "no message"
            raise error_for_status(
                response,
                f"the function {workflow_id!r} answered HTTP {response.status} ({said}); "
                "check its URL and headers",
            )
        return Triggered(execution=execution, snapshot=snap)

    def status_request(self, execution: Execution) -> Request:
        raise UnsupportedOperation(_NO_RECORD)

    def parse_status(self, execution: Execution, response: Response, now: datetime) -> Snapshot:
        raise UnsupportedOperation(_NO_RECORD)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AwaitStepFunction:
        """The provider configured by the environment (``env``, or ``os.environ``).

        The variables are those ``workflow-trigger --help`` lists; a missing one is an
        ``InvalidInputError`` naming it.
        """
        return cls(Env(env).need("AWAITSTEP_FUNCTION_URL", "the function's URL"))
