"""What the emulator records of each request it receives (``Emulator.request_log``)."""

from __future__ import annotations

import time
from collections.abc import Mapping

import attrs
from multidict import CIMultiDictProxy

from ._execution import Execution
from ._model import FaultKind, Operation

__all__ = ["RequestRecord"]


@attrs.define
class RequestRecord:
    """One HTTP request as the emulator received it, and how it answered.

    ``status`` is ``None`` when the connection was dropped without an answer.
    ``body`` is filled for requests whose body the routes read (triggers).
    """

    method: str
    path: str
    query: Mapping[str, str]
    headers: CIMultiDictProxy[str]
    received_at: float = attrs.field(factory=time.monotonic)
    platform: str | None = None
    operation: Operation | None = None
    workflow_id: str | None = None
    execution_id: str | None = None
    body: bytes | None = None
    fault: FaultKind | None = None
    status: int | None = None
    #: Set when this request started an execution.
    started: Execution | None = None
    #: Set when an idempotency key made this trigger return an existing execution.
    replayed: Execution | None = None
