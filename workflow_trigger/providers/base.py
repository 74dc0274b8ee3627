"""The Provider protocol: one platform's wire format, with no I/O.

A provider turns the SDK's intents into ``Request`` values and the platform's
answers (``Response`` values) into models. It never opens a socket, reads a
clock, draws a random number or sleeps: the client passes in what it needs
(the current time, a message id for a signature). That keeps each provider
testable with plain dicts, and lets the client own retries, deadlines and
cancellation in one place.

The client drives a provider like this::

    req = provider.trigger_request(workflow_id, payload, context)
    triggered = provider.parse_trigger(workflow_id, response, context)
    req = provider.status_request(execution)                 # repeatedly
    snap = provider.parse_status(execution, response, now)   # until terminal
    req = provider.result_request(execution, snap)           # optional: None for most
    snap = provider.parse_result(execution, snap, response)
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable
from urllib.parse import quote, urlsplit

import attrs

from .._secrets import Redactor, Secret, _map_strings, excerpt
from ..errors import (
    APIError,
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLarge,
    ProtocolError,
    RateLimitError,
    ServerError,
    UnsupportedOperation,
)
from ..models import Artifact, Execution, Snapshot, Status, parse_iso_datetime
from ..policies import PollPolicy, parse_retry_after

logger = logging.getLogger("workflow_trigger")

__all__ = [
    "MAX_ID_LENGTH",
    "Control",
    "NotJSON",
    "Provider",
    "ProviderBase",
    "Request",
    "RequestKind",
    "Response",
    "TriggerContext",
    "TriggerOptions",
    "Triggered",
    "answer_id",
    "as_object",
    "check_base_url",
    "check_same_execution",
    "error_for_status",
    "finite_number",
    "json_body",
    "map_status",
    "path_segment",
]

RequestKind = Literal["trigger", "status", "result", "control", "download"]
Control = Literal["cancel", "pause", "resume", "event"]

#: the longest id (execution, run, automation, instance...) accepted from a platform
#: or put in a URL path; a longer one is refused where it is read
MAX_ID_LENGTH = 256

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_IN_AN_ID = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class NotJSON(ProtocolError):
    """The body is not JSON at all (as opposed to JSON that cannot be used)."""


def parse_json(body: bytes, status: int, redact: Callable[[str], str] = str) -> Any:
    """``body`` parsed as strict UTF-8 JSON, or ``ProtocolError`` saying what was wrong:
    not JSON, not UTF-8, nested past what can be parsed, or text holding a lone
    surrogate (``"\\ud800"``), which could never be sent on in a URL or a journal."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except RecursionError:
        raise ProtocolError(
            f"the answer (HTTP {status}) is JSON nested too deep to read "
            f"({len(body):,} bytes); the server is broken or hostile: check base_url"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        snippet = redact(excerpt(body[:80].decode("utf-8", "replace"), 80))
        what = "UTF-8 " if isinstance(exc, UnicodeDecodeError) else ""
        raise NotJSON(
            f"expected a {what}JSON body (HTTP {status}) but got {snippet!r}: "
            "is base_url pointing at the platform's API root?"
        ) from exc
    if _SURROGATE_ESCAPE.search(body):
        _map_strings(doc, _refuse_surrogates)
    return doc


def _refuse_surrogates(text: str) -> str:
    if _SURROGATE.search(text):
        raise ProtocolError(
            "the answer holds text that is not valid Unicode (a lone surrogate escape "
            "such as \\ud800); the server is broken: check base_url"
        )
    return text


@attrs.frozen(kw_only=True)
class Request:
    """One HTTP request, fully described.

    ``retry_after_send`` says whether the request may be sent again after it
    may have reached the server (GETs; triggers only where the platform honours
    an idempotency key). ``redacted_url`` is the form safe to log.
    """

    kind: RequestKind
    method: str
    url: str = attrs.field(repr=False)
    redacted_url: str
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    body: bytes | None = attrs.field(default=None, repr=False)
    retry_after_send: bool = False
    #: seconds this request may take when it is longer than the client's per-request
    #: timeout by design (Pinkfish's synchronous trigger holds the answer up to 60 s)
    timeout: float | None = None


@attrs.frozen(kw_only=True)
class Response:
    """One HTTP response; ``headers`` has lower-case names."""

    status: int
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: bytes = b""
    #: masks secrets in text taken from the body (a page may echo the URL it was asked)
    redact: Callable[[str], str] = attrs.field(default=str, eq=False, repr=False)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        """The body parsed as JSON (see ``parse_json``), or ``ProtocolError``."""
        return parse_json(self.body, self.status, self.redact)


@attrs.frozen(kw_only=True)
class TriggerOptions:
    idempotency_key: str | None = None
    connection_id: str | None = None


@attrs.frozen(kw_only=True)
class TriggerContext:
    """What the client supplies so providers stay pure: the time, a fresh message id,
    and the trigger's options (so the answer can be read in their light)."""

    now: datetime
    message_id: str
    options: TriggerOptions = TriggerOptions()


@attrs.frozen(kw_only=True)
class Triggered:
    """A trigger's answer: the handle, and a first snapshot when the reply carried one
    (a terminal snapshot means the run already ended and no poll is needed)."""

    execution: Execution
    snapshot: Snapshot | None = None


@runtime_checkable
class Provider(Protocol):
    """What the client needs of a platform. ``ProviderBase`` implements the common parts."""

    kind: ClassVar[str]
    #: True when a trigger sent again with the same idempotency key cannot start a second run
    honours_idempotency_key: ClassVar[bool]
    #: True when ``rate_limit_hint`` may find something (saves the work on every response)
    reports_rate_limits: ClassVar[bool]
    #: whether a triggered run can be polled (False: the trigger's reply is the result)
    pollable: ClassVar[bool]
    #: the controls ``control_request`` builds a request for (the others raise
    #: ``UnsupportedOperation``); the client refuses ``cancel_remote_on_exit`` without cancel
    controls: ClassVar[frozenset[Control]]
    default_poll: PollPolicy
    default_rate_limit: float | None

    def trigger_request(
        self,
        workflow_id: str,
        payload: Any,
        context: TriggerContext,
    ) -> Request: ...

    def parse_trigger(
        self, workflow_id: str, response: Response, context: TriggerContext
    ) -> Triggered: ...

    def status_request(self, execution: Execution) -> Request: ...

    def parse_status(self, execution: Execution, response: Response, now: datetime) -> Snapshot: ...

    def result_request(self, execution: Execution, snapshot: Snapshot) -> Request | None: ...

    def parse_result(
        self, execution: Execution, snapshot: Snapshot, response: Response
    ) -> Snapshot: ...

    def control_request(self, execution: Execution, control: Control, data: Any) -> Request: ...

    def download_request(self, artifact: Artifact) -> Request: ...

    def rate_limit_hint(
        self, response: Response, now: datetime
    ) -> tuple[int | None, float | None]: ...

    def parse_control(self, execution: Execution, response: Response) -> None: ...

    def redact(self, url: str) -> str: ...


class ProviderBase:
    """Shared defaults: no result request, no controls, redaction of own secrets."""

    kind: ClassVar[str] = "base"
    honours_idempotency_key: ClassVar[bool] = False
    reports_rate_limits: ClassVar[bool] = False
    pollable: ClassVar[bool] = True
    default_poll: PollPolicy = PollPolicy()
    default_rate_limit: float | None = None
    controls: ClassVar[frozenset[Control]] = frozenset()
    #: query parameters whose values are masked wherever a URL is shown
    secret_query_keys: ClassVar[tuple[str, ...]] = ()

    def _secrets(self) -> tuple[Secret, ...]:
        return ()

    def __getstate__(self) -> dict[str, Any]:
        """A provider pickled (for a worker process) without what it derived and cached:
        the caches hold revealed secrets and are rebuilt on first use."""
        return {k: v for k, v in self.__dict__.items() if k not in _CACHES}

    def _redactor(self) -> Redactor:
        found: Redactor | None = self.__dict__.get("_redactor_cache")
        if found is None:
            found = Redactor(self._secrets(), self.secret_query_keys)
            self.__dict__["_redactor_cache"] = found
        return found

    def _shared(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        """``headers`` as one read-only mapping shared by every request that sends the
        same (a status request is kept by each run in flight; its headers are a key)."""
        cache: dict[tuple[tuple[str, str], ...], Mapping[str, str]] = self.__dict__.setdefault(
            "_headers_cache", {}
        )
        items = tuple(headers.items())
        found = cache.get(items)
        if found is None:
            found = MappingProxyType(dict(headers))
            if len(cache) < 32:
                cache[items] = found
        return found

    def redact(self, text: str) -> str:
        """``text`` (a URL, a message, a header a server sent) with every secret masked."""
        return self._redactor().text(text)

    def _json(self, response: Response) -> Any:
        """The body of ``response`` as JSON (see ``parse_json``), every secret in it masked:
        the one place where what a server sent becomes data the SDK keeps."""
        doc = parse_json(response.body, response.status, self.redact)
        return self._redactor().document(doc, response.body)

    def _embedded_json(self, text: str) -> Any:
        """A JSON document sent as a string inside an answer (AwaitStep's ``output``),
        parsed and masked as a body is; the text itself when it is not JSON."""
        body = text.encode("utf-8", "surrogatepass")
        try:
            doc = parse_json(body, 200)
        except NotJSON:
            return text
        return self._redactor().document(doc, body)

    def _header(self, response: Response, name: str) -> str | None:
        """A header the SDK keeps (an id, a request id), its secrets masked."""
        value = response.header(name)
        return self.redact(value) if value else value

    def request(
        self,
        kind: RequestKind,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None = None,
        *,
        retry_after_send: bool | None = None,
    ) -> Request:
        """A ``Request`` with its URL redacted for display; only GETs may be resent after
        they may have reached the server, unless ``retry_after_send`` says otherwise."""
        if body is None and method == "GET":
            headers = self._shared(headers)
        return Request(
            kind=kind,
            method=method,
            url=url,
            redacted_url=self.redact(url),
            headers=headers,
            body=body,
            retry_after_send=method == "GET" if retry_after_send is None else retry_after_send,
        )

    def result_request(self, execution: Execution, snapshot: Snapshot) -> Request | None:
        return None

    def parse_result(
        self, execution: Execution, snapshot: Snapshot, response: Response
    ) -> Snapshot:
        return snapshot

    def control_request(self, execution: Execution, control: Control, data: Any) -> Request:
        raise self.unsupported(control)

    def unsupported(self, control: Control) -> UnsupportedOperation:
        """The error for a control this platform lacks (not in ``controls``)."""
        supported = ", ".join(sorted(self.controls)) or "none"
        return UnsupportedOperation(
            f"{type(self).__name__} has no documented {control!r} operation (it supports: "
            f"{supported}); nothing was sent to the platform"
        )

    def parse_control(self, execution: Execution, response: Response) -> None:
        raise UnsupportedOperation(f"{type(self).__name__} has no control operations")

    def download_request(self, artifact: Artifact) -> Request:
        raise UnsupportedOperation(f"{type(self).__name__} runs produce no files to download")

    def rate_limit_hint(self, response: Response, now: datetime) -> tuple[int | None, float | None]:
        """``(requests left, seconds until the window resets)`` where the platform says."""
        return None, None


#: what a provider derives from its settings once, and keeps in its ``__dict__``
_CACHES = frozenset({"_redactor_cache", "_headers_cache"})

#: what may not be in an id we send: control characters, lone surrogates (one search)
_NOT_SENDABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
#: a path segment of unreserved characters only (RFC 3986), which ``quote`` leaves as it is
_PLAIN_SEGMENT = re.compile(f"[A-Za-z0-9._~-]{{1,{MAX_ID_LENGTH}}}")


def path_segment(value: Any, what: str) -> str:
    """``value`` percent-encoded as one URL path segment, or ``InvalidInputError``.

    Every character outside the unreserved set is encoded, so ``/``, ``?`` and
    ``#`` cannot reach another endpoint; ``.`` and ``..`` are refused outright
    because URL normalisation would turn them into a walk up the path, and so is
    text that is not valid Unicode or longer than ``MAX_ID_LENGTH``.
    """
    if isinstance(value, str) and _PLAIN_SEGMENT.fullmatch(value) and value not in {".", ".."}:
        return value  # the common case (every id a platform gives): nothing to encode
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{what} must be a non-empty string, got {excerpt(repr(value))}")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInputError(
            f"{what} is {len(value):,} characters long, over the {MAX_ID_LENGTH} an id may "
            f"have ({excerpt(value, 40)!r}); pass the id the platform gave"
        )
    if value in {".", ".."} or _NOT_SENDABLE.search(value):
        raise InvalidInputError(
            f"{what} {value!r} is not a valid identifier: it may not be '.' or '..' "
            "or contain control characters or lone surrogates"
        )
    return quote(value, safe="")


def answer_id(value: Any, what: str, *, required: bool = True) -> str | None:
    """An id read from an answer (a JSON field or a header), or ``ProtocolError``.

    The id goes into later URLs, tokens and journals, so it is checked here, where the
    answer is read: a non-empty string (an int is taken as its digits) of at most
    ``MAX_ID_LENGTH`` characters, without control characters or lone surrogates.
    ``None`` when absent and not ``required``.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is None or value == "":
        if not required:
            return None
        raise ProtocolError(
            f"the answer has no {what}, so the run cannot be followed; check base_url"
        )
    if not isinstance(value, str):
        raise ProtocolError(
            f"the answer's {what} should be a string, got {type(value).__name__}; check base_url"
        )
    if len(value) > MAX_ID_LENGTH:
        raise ProtocolError(
            f"the answer's {what} is {len(value):,} characters long, over the "
            f"{MAX_ID_LENGTH} an id may have ({excerpt(value, 40)!r}); the server is broken"
        )
    bad = _NOT_IN_AN_ID.search(value)
    if bad is not None:
        raise ProtocolError(
            f"the answer's {what} {excerpt(ascii(value), 60)} holds {bad.group()!a}, "
            "which no id may hold (a control character, or text that is not valid Unicode); "
            "the server is broken: check base_url"
        )
    return value


def check_same_execution(execution: Execution, answered: Any, what: str, *also: str) -> None:
    """``ProtocolError`` unless the answer's id (``answered``; None: not reported) names
    ``execution`` (its id, or one of ``also``): an answer about another run must never
    be taken for this one's."""
    if answered is None or answered == "":
        return
    if isinstance(answered, int) and not isinstance(answered, bool):
        answered = str(answered)
    if answered == execution.execution_id or answered in also:
        return
    shown = excerpt(answered, 60) if isinstance(answered, str) else type(answered).__name__
    raise ProtocolError(
        f"the {what} names execution {shown!r}, not {excerpt(execution.execution_id, 60)!r} "
        "that was asked for; its status and result were not used. The server (or a cache "
        "or proxy in front of it) is mixing up answers: check base_url"
    )


def json_body(data: Any, what: str = "payload", limit: int | None = None) -> bytes:
    """``data`` serialised as compact JSON, or ``InvalidInputError`` / ``PayloadTooLarge``."""
    try:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(
            f"the {what} must be JSON-serialisable (dicts, lists, str, finite numbers, "
            f"bool, None): {exc}"
        ) from exc
    try:
        body = text.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate, say "\ud800"
        raise InvalidInputError(
            f"the {what} holds text that is not valid Unicode ({exc.reason} at position "
            f"{exc.start}): encode it properly before sending"
        ) from exc
    if limit is not None and len(body) > limit:
        raise PayloadTooLarge(
            f"the {what} is {len(body):,} bytes serialised, over the platform's limit of "
            f"{limit:,} bytes; nothing was sent. Send a reference (a URL or an id) instead."
        )
    return body


_ERROR_CLASSES: tuple[tuple[Callable[[int], bool], type[APIError]], ...] = (
    (lambda s: s in (401, 403), AuthenticationError),
    (lambda s: s == 404, NotFoundError),
    (lambda s: s == 429, RateLimitError),
    (lambda s: s in (400, 409, 413, 422), InvalidInputError),
    (lambda s: s >= 500, ServerError),
)


def error_for_status(
    response: Response,
    message: str,
    *,
    code: str | None = None,
    details: Any = None,
    cls: type[APIError] | None = None,
) -> APIError:
    """The exception for an error response: the one place statuses map to classes."""
    if cls is None:
        cls = next((c for test, c in _ERROR_CLASSES if test(response.status)), APIError)
    if issubclass(cls, RateLimitError):
        retry_after = parse_retry_after(response.header("retry-after"))
        return cls(
            message,
            status_code=response.status,
            code=code,
            details=details,
            retry_after=retry_after,
        )
    return cls(message, status_code=response.status, code=code, details=details)


def finite_number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def check_base_url(base_url: Any) -> str:
    """``base_url`` without its trailing slash, or ``InvalidInputError``."""
    try:
        parts = urlsplit(base_url) if isinstance(base_url, str) else None
        port_ok = parts is not None and (parts.port is None or parts.port > 0)
    except ValueError:
        parts, port_ok = None, False
    if parts is None or not port_ok or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(
            f"base_url must be an absolute http(s) URL with a host, like "
            f"'https://api.example.com', got {base_url!r}"
        )
    if parts.query or parts.fragment:
        raise InvalidInputError("base_url must not carry a query string or a fragment")
    if parts.username is not None or parts.password is not None:
        raise InvalidInputError(
            "base_url must not carry a user name or password (they would show in every "
            "logged URL): give credentials through the provider's key arguments"
        )
    return str(base_url).rstrip("/")


_unknown_seen: set[tuple[str, str]] = set()


def map_status(kind: str, raw: Any, table: Mapping[str, Status]) -> Status:
    """The ``Status`` for a platform's raw value; an unknown value is non-terminal,
    logged once per (platform, value) so a new platform state never crashes a wait."""
    if not isinstance(raw, str):
        raise ProtocolError(
            f"{kind} answered a status without a status value (got {type(raw).__name__}): "
            "is base_url pointing at the platform's API root?"
        )
    status = table.get(raw)
    if status is not None:
        return status
    if (kind, str(raw)) not in _unknown_seen:
        _unknown_seen.add((kind, str(raw)))
        logger.warning("%s reported an unknown status %r; treating it as still running", kind, raw)
    return Status.RUNNING


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 timestamp as an aware UTC datetime; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_iso_datetime(value).astimezone(timezone.utc)
    except ValueError:
        return None


def as_object(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ProtocolError(f"{what} should be a JSON object, got {type(data).__name__}")
    return data
