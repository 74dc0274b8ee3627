"""The exception classes that need no model; ``errors`` re-exports them (see its tree).

The two that carry models, ``PollTimeout`` and ``WorkflowFailed``, live in ``models``
beside what they carry, so that neither module imports the other both ways.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIError",
    "AuthenticationError",
    "InvalidInputError",
    "JournalInUse",
    "NotFoundError",
    "PayloadTooLarge",
    "ProtocolError",
    "RateLimitError",
    "ResultTypeError",
    "ServerError",
    "TransportError",
    "UnsupportedOperation",
    "WorkflowTriggerError",
]


class WorkflowTriggerError(Exception):
    """Base class of every exception this SDK raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class TransportError(WorkflowTriggerError):
    """The request could not be completed: connection, DNS, TLS or a per-request timeout."""


class APIError(WorkflowTriggerError):
    """The platform answered with an error.

    ``status_code`` is the HTTP status (None when the SDK refused the input
    itself), ``code`` the platform's error code, ``details`` whatever detail
    the platform sent (a list of field errors, for instance).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.details = details


class AuthenticationError(APIError):
    """The platform refused the credential (401) or its scope (403)."""


class NotFoundError(APIError):
    """The workflow, instance or execution does not exist on the platform (404)."""


class InvalidInputError(APIError):
    """The input was refused: by the platform (400/422) or by the SDK before sending."""


class PayloadTooLarge(InvalidInputError):
    """The payload is over the platform's documented size limit; nothing was sent."""


class JournalInUse(InvalidInputError):
    """Another batch (in this process or another) has the journal open; nothing was triggered.

    ``path`` is the journal's. Wait for that batch to end, or give this one another file.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class RateLimitError(APIError):
    """The platform rate-limited the request (429); ``retry_after`` is its hint in seconds."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = 429,
        code: str | None = None,
        details: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, code=code, details=details)
        self.retry_after = retry_after


class ServerError(APIError):
    """The platform failed (5xx) and retries, where allowed, did not help."""


class ProtocolError(WorkflowTriggerError):
    """A response broke the platform's documented shape (not JSON, no id, missing header)."""


class ResultTypeError(WorkflowTriggerError):
    """The workflow's result does not fit the requested ``result_type``.

    ``fields`` lists each offending field path with what was wrong with it.
    """

    def __init__(self, message: str, *, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


class UnsupportedOperation(WorkflowTriggerError):
    """The platform (or this way of calling the SDK) does not support the operation."""
