"""The SDK's value types: what a run is, what one poll saw, how a run ended.

All are frozen, slotted attrs classes with keyword-only fields. Parsing lives
in named constructors (``Execution.from_token``), never in ``__init__``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import sys
import weakref
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from . import _errors
from ._errors import InvalidInputError, WorkflowTriggerError

__all__ = [
    "Artifact",
    "ErrorInfo",
    "Execution",
    "Outcome",
    "PollTimeout",
    "Snapshot",
    "Status",
    "Step",
    "WorkflowFailed",
]

T = TypeVar("T")

_TOKEN_PREFIX = "wt1."


class PollTimeout(WorkflowTriggerError):
    """Our own deadline passed before the execution ended.

    The execution may still be running remotely: ``execution`` lets a later
    ``wait`` (or another process, through ``execution.token()``) go on, and
    ``snapshot`` is the last status seen (None if no poll answered).
    """

    def __init__(
        self, message: str, *, execution: Execution, snapshot: Snapshot | None = None
    ) -> None:
        super().__init__(message)
        self.execution = execution
        self.snapshot = snapshot


class WorkflowFailed(WorkflowTriggerError):
    """Raised by ``Outcome.unwrap()`` when the execution did not succeed."""

    def __init__(self, message: str, *, outcome: Outcome[Any]) -> None:
        super().__init__(message)
        self.outcome = outcome


class Status(str, enum.Enum):
    """Where an execution stands, the same for every platform.

    The platform's own word is kept beside it (``raw_status``). A ``str`` enum:
    ``Status.SUCCEEDED == "succeeded"``, and ``str()`` / f-strings give the value.
    """

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return str(self.value)

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT, Status.CANCELLED})


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise InvalidInputError("datetimes in workflow_trigger models must be timezone-aware")
    return value.astimezone(timezone.utc)


def _interned(text: str) -> str:
    """A platform's status word, one object however many snapshots keep it (the last
    snapshot of every run in flight is kept); a long or odd one is left as it is."""
    return sys.intern(text) if type(text) is str and len(text) <= 40 else text


def parse_iso_datetime(text: str) -> datetime:
    """An ISO 8601 timestamp, ``Z`` accepted, one without an offset read as UTC;
    ``ValueError`` when it is not one."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class FrozenStrMap(dict):  # type: ignore[type-arg]
    """``Execution.extras``: a dict that refuses to change, so that every execution
    with the same ids (all of one Codika instance's, say) shares one instead of each
    holding a copy (a dict of one entry is 184 bytes; 100,000 runs in flight)."""

    __slots__ = ("__weakref__",)

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise TypeError(
            "Execution.extras cannot be changed: make a new Execution with "
            "attrs.evolve(execution, extras={...})"
        )

    __setitem__ = __delitem__ = __ior__ = _refuse  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_frozen_str_map, (dict(self),))


#: every distinct extras in use, once (entries go when no execution holds them)
_SHARED_EXTRAS: weakref.WeakValueDictionary[tuple[tuple[str, str], ...], FrozenStrMap] = (
    weakref.WeakValueDictionary()
)


def _frozen_str_map(value: Mapping[str, str]) -> Mapping[str, str]:
    if type(value) is FrozenStrMap:
        return value
    items = tuple(value.items())
    try:
        shared = _SHARED_EXTRAS.get(items)
    except TypeError:  # an unhashable value: Execution's own checks say what is wrong
        return FrozenStrMap(value)
    if shared is None:
        shared = _SHARED_EXTRAS[items] = FrozenStrMap(value)
    return shared


@attrs.frozen(kw_only=True)
class Execution:
    """The handle of one triggered run.

    ``provider`` is the platform kind (``"codika"``...), ``extras`` the
    platform's other ids (Codika process instance id, Pinkfish automation id,
    AwaitStep instance id). ``token()`` turns it into a string another process
    can resume waiting on; it holds no secret and no base URL.
    """

    provider: str
    workflow_id: str
    execution_id: str
    extras: Mapping[str, str] = attrs.field(
        factory=dict, converter=_frozen_str_map, hash=False, repr=True
    )
    triggered_at: datetime = attrs.field(converter=_utc)

    def token(self) -> str:
        """A compact, versioned, URL-safe string that ``Execution.from_token`` reads back."""
        body = {
            "p": self.provider,
            "w": self.workflow_id,
            "e": self.execution_id,
            "t": self.triggered_at.isoformat(),
        }
        if self.extras:
            body["x"] = dict(self.extras)  # type: ignore[assignment]
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        return _TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def from_token(cls, token: str) -> Execution:
        """The ``Execution`` a ``token()`` string describes.

        Raises ``InvalidInputError`` for anything that is not a token this SDK wrote.
        """
        if not isinstance(token, str) or not token.startswith(_TOKEN_PREFIX):
            raise InvalidInputError(
                "not a workflow_trigger execution token (they start with 'wt1.'): "
                "pass the string that Execution.token() returned"
            )
        encoded = token[len(_TOKEN_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            body = json.loads(raw)
            extras = body.get("x", {})
            fields = (body["p"], body["w"], body["e"], body["t"])
            if not all(isinstance(f, str) and f for f in fields) or not (
                isinstance(extras, dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in extras.items())
            ):
                raise ValueError("wrong field types")
            triggered_at = datetime.fromisoformat(body["t"])
            return cls(
                provider=body["p"],
                workflow_id=body["w"],
                execution_id=body["e"],
                extras=extras,
                triggered_at=triggered_at,
            )
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            raise InvalidInputError(
                "the execution token is corrupt or truncated: pass the exact string that "
                "Execution.token() returned"
            ) from exc


@attrs.frozen(kw_only=True)
class Step:
    """One step of a multi-step run, where the platform reports them."""

    id: str
    name: str | None = None
    status: Status
    raw_status: str


@attrs.frozen(kw_only=True)
class ErrorInfo:
    """Why a run failed, as the platform said it."""

    message: str
    code: str | None = None
    details: Any = None


@attrs.frozen(kw_only=True)
class Artifact:
    """A file a run produced (Pinkfish result files)."""

    name: str
    url: str = attrs.field(repr=False)
    mime_type: str | None = None
    size: int | None = None


@attrs.frozen(kw_only=True)
class Snapshot:
    """One observation of an execution.

    ``result``, ``error`` and the artifacts are the platform's data, present
    once the run has ended; ``retry_after`` is the server's hint for the next poll.
    """

    status: Status
    raw_status: str = attrs.field(converter=_interned)
    steps: tuple[Step, ...] = ()
    observed_at: datetime = attrs.field(converter=_utc)
    result: Any = attrs.field(default=None, repr=False)
    error: ErrorInfo | None = None
    artifacts: tuple[Artifact, ...] = ()
    designated_output: Artifact | None = None
    #: when the platform says the run started / ended, where it says (Runs API)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    retry_after: float | None = attrs.field(default=None, repr=False)


@attrs.frozen(kw_only=True)
class Outcome(Generic[T]):
    """How one execution ended.

    A remote failure is data here (``status=FAILED``, ``error`` set), not an
    exception; ``unwrap()`` turns it into one when that is what you want. In
    ``run_many``, ``index`` and ``key`` name the item, and ``exception`` holds
    what ended the item locally (a refused trigger, ``PollTimeout``...).
    """

    execution: Execution | None
    status: Status | None
    result: T | None = None
    error: ErrorInfo | None = None
    artifacts: tuple[Artifact, ...] = ()
    designated_output: Artifact | None = None
    polls: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    raw_status: str | None = None
    index: int | None = None
    key: Any = None
    exception: BaseException | None = attrs.field(default=None, eq=False)
    possibly_duplicated: bool = False
    #: the result as the platform sent it, before ``result_type`` structured it
    raw_result: Any = attrs.field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.exception is None and self.status is Status.SUCCEEDED

    def unwrap(self) -> T:
        """The result, or raise: the local exception, else ``WorkflowFailed``."""
        if self.exception is not None:
            raise self.exception
        if self.status is not Status.SUCCEEDED:
            what = self.status.value if self.status else "unknown"
            detail = f": {self.error.message}" if self.error else ""
            ex = self.execution
            name = f" {ex.workflow_id!r} (execution {ex.execution_id})" if ex else ""
            raise WorkflowFailed(f"workflow{name} ended {what}{detail}", outcome=self)
        return self.result  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """The outcome as JSON values: what the CLI prints and the journal stores.

        ``result`` is the result as the platform sent it (``raw_result``), the
        execution is its ``token``, times are ISO 8601 strings, ``exception`` is
        ``{"type", "message"}`` or None. ``Outcome.from_dict`` reads it back.
        """
        data: dict[str, Any] = _WIRE.unstructure(self, Outcome)
        return data

    def to_json(self) -> str:
        """``to_dict()`` as one line of JSON (a key that is not JSON is written as its ``str``)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, default=str)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outcome[Any]:
        """The outcome a ``to_dict()`` describes; ``result`` is then the raw result.

        An exception comes back as the SDK's class of that name, with its message
        only. Raises ``InvalidInputError`` for anything ``to_dict`` did not write.
        """
        try:
            outcome: Outcome[Any] = _WIRE.structure(data, Outcome)
        except (cattrs.BaseValidationError, InvalidInputError, TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"not an outcome that Outcome.to_dict() wrote ({exc}): pass its dict unchanged"
            ) from exc
        return outcome


# -- the wire form: one converter for the journal's rows and the CLI's JSON -------------------

_FIRST = ("index", "key")  # the fields a reader looks for first, written first


def _exception_to_wire(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)}


def _exception_from_wire(data: Mapping[str, str], execution: Execution | None) -> BaseException:
    name, message = data["type"], data["message"]
    if name == "PollTimeout" and execution is not None:
        return PollTimeout(message, execution=execution)
    kind = getattr(_errors, name, None)  # a class that needs no model
    if isinstance(kind, type) and issubclass(kind, WorkflowTriggerError):
        return kind(message)
    return WorkflowTriggerError(f"{name}: {message}")


def _make_wire_converter() -> cattrs.Converter:
    converter = cattrs.Converter()
    converter.register_unstructure_hook(datetime, datetime.isoformat)
    converter.register_structure_hook(datetime, lambda value, _: parse_iso_datetime(value))
    converter.register_unstructure_hook(Execution, Execution.token)
    converter.register_structure_hook(Execution, lambda value, _: Execution.from_token(value))
    converter.register_unstructure_hook_func(
        lambda kind: isinstance(kind, type) and issubclass(kind, BaseException),
        _exception_to_wire,
    )
    token, result, omit = override(rename="token"), override(rename="result"), override(omit=True)
    fields = make_dict_unstructure_fn(
        Outcome, converter, execution=token, raw_result=result, result=omit
    )

    def unstructure(outcome: Outcome[Any]) -> dict[str, Any]:
        data = fields(outcome)
        if outcome.raw_result is None and outcome.result is not None:  # built by hand
            data["result"] = converter.unstructure(outcome.result)
        return {**{name: data.pop(name) for name in _FIRST}, **data}

    read = make_dict_structure_fn(
        Outcome[Any], converter, execution=token, raw_result=result, result=omit, exception=omit
    )

    def structure(data: Mapping[str, Any], _: type) -> Outcome[Any]:
        outcome = read(data, Outcome[Any])
        exception = data.get("exception")
        return attrs.evolve(
            outcome,
            result=outcome.raw_result,
            exception=_exception_from_wire(exception, outcome.execution) if exception else None,
        )

    converter.register_unstructure_hook(Outcome, unstructure)
    converter.register_structure_hook(Outcome, structure)
    return converter


_WIRE = _make_wire_converter()
