"""The exceptions raised by workflow_trigger.

A remote workflow that fails is *data* (an ``Outcome`` with ``status=FAILED``),
not an exception. Exceptions are for what stops the SDK itself: our own
deadline, a refused credential, exhausted retries, a response that breaks the
platform's documented shape, bad input.

    WorkflowTriggerError
    ├── TransportError            connection, DNS, TLS, per-request timeout
    ├── APIError                  the platform answered with an error status
    │   ├── AuthenticationError   401 / 403
    │   ├── NotFoundError         404
    │   ├── InvalidInputError     400 / 422, or refused by the SDK before sending
    │   │   ├── PayloadTooLarge   over the platform's documented size limit
    │   │   └── JournalInUse      another batch has the journal open (``path``)
    │   ├── RateLimitError        429 (``retry_after``)
    │   └── ServerError           5xx
    ├── ProtocolError             a response that breaks the documented shape
    ├── ResultTypeError           a result that does not fit ``result_type``
    ├── PollTimeout               our own deadline passed (``execution``, ``snapshot``)
    ├── WorkflowFailed            from ``Outcome.unwrap()`` (``outcome``)
    └── UnsupportedOperation      the platform has no such operation

Every message says what was wrong and what to do next, and never holds a secret.
"""

from __future__ import annotations

from ._errors import (
    APIError,
    AuthenticationError,
    InvalidInputError,
    JournalInUse,
    NotFoundError,
    PayloadTooLarge,
    ProtocolError,
    RateLimitError,
    ResultTypeError,
    ServerError,
    TransportError,
    UnsupportedOperation,
    WorkflowTriggerError,
)
from .models import PollTimeout, WorkflowFailed

__all__ = [
    "APIError",
    "AuthenticationError",
    "InvalidInputError",
    "JournalInUse",
    "NotFoundError",
    "PayloadTooLarge",
    "PollTimeout",
    "ProtocolError",
    "RateLimitError",
    "ResultTypeError",
    "ServerError",
    "TransportError",
    "UnsupportedOperation",
    "WorkflowFailed",
    "WorkflowTriggerError",
]
