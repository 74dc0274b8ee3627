"""ClientOptions: every option of a client, its default and its check, in one place.

``AsyncClient`` and ``Client`` both take these as keyword arguments
(``**options``, typed by ``ClientOptionsKwargs`` so that mypy and an IDE catch
a misspelt name) and build one frozen ``ClientOptions`` from them: the facade
repeats no option and no default. Every value is checked here, when the client
is made, so a wrong option fails before any request is sent.
"""

from __future__ import annotations

import difflib
import logging
import ssl as ssl_
from collections.abc import Callable
from typing import Any, TypedDict

import attrs
import cattrs

from .errors import InvalidInputError
from .events import Event
from .policies import PollPolicy, RetryPolicy, check_count, check_positive

logger = logging.getLogger("workflow_trigger")

__all__ = ["ClientOptions", "ClientOptionsKwargs"]

MiB = 1024 * 1024


def _instance_of(*kinds: type, what: str, allow_none: bool = True) -> Any:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and allow_none:
            return
        if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
            raise InvalidInputError(
                f"{attribute.name} must be {what}, got {type(value).__name__} {value!r:.80}"
            )

    return check


def _count(what: str = "an int") -> Any:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        check_count(attribute.name, value, what=what)

    return check


def _seconds(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    check_positive(attribute.name, value)


def _rate(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    check_positive(attribute.name, value, unit="requests per second", allow_none=True)


def _hook(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        raise InvalidInputError(
            f"{attribute.name} must be a function taking one event, or None; "
            f"got {type(value).__name__}"
        )


def _retry_or_default(value: RetryPolicy | None) -> RetryPolicy:
    return RetryPolicy() if value is None else value


@attrs.frozen(kw_only=True)
class ClientOptions:
    """How a client behaves; the defaults are the documented ones."""

    #: the poll schedule and the default deadline; None: the platform's
    poll: PollPolicy | None = attrs.field(
        default=None, validator=_instance_of(PollPolicy, what="a wt.PollPolicy(...) or None")
    )
    retry: RetryPolicy = attrs.field(
        factory=RetryPolicy,
        converter=_retry_or_default,
        validator=_instance_of(RetryPolicy, what="a wt.RetryPolicy(...) or None"),
    )
    max_concurrency: int = attrs.field(default=1000, validator=_count())
    #: requests per second for the whole client; None: the platform's
    rate_limit: float | None = attrs.field(default=None, validator=_rate)
    request_timeout: float = attrs.field(default=30.0, validator=_seconds)
    connect_timeout: float = attrs.field(default=10.0, validator=_seconds)
    max_connections: int = attrs.field(default=100, validator=_count())
    max_body: int = attrs.field(default=10 * MiB, validator=_count("a number of bytes"))
    converter: cattrs.Converter | None = attrs.field(
        default=None, validator=_instance_of(cattrs.Converter, what="a cattrs.Converter")
    )
    seed: int | None = attrs.field(default=None, validator=_instance_of(int, what="an int"))
    ssl: ssl_.SSLContext | bool = attrs.field(
        default=True,
        validator=_instance_of(
            ssl_.SSLContext, bool, what="True, False or an ssl.SSLContext", allow_none=False
        ),
    )
    allow_insecure_http: bool = attrs.field(
        default=False, validator=_instance_of(bool, what="True or False", allow_none=False)
    )
    on_event: Callable[[Event], object] | None = attrs.field(default=None, validator=_hook)

    @classmethod
    def build(cls, options: dict[str, Any]) -> ClientOptions:
        """``ClientOptions(**options)``, with a misspelt name refused by name."""
        known = attrs.fields_dict(cls)
        for name in options:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise InvalidInputError(f"unknown client option {name!r}{hint}")
        return cls(**options)

    def event_sink(self) -> Callable[[Event], None] | None:
        """``on_event`` as the client calls it: an exception of the hook is logged, never
        raised into a run (a metrics bug must never fail one); None without a hook."""
        hook = self.on_event
        if hook is None:
            return None

        def sink(event: Event) -> None:
            try:
                hook(event)
            except Exception:
                logger.exception("the on_event hook raised; the event was %s", type(event).__name__)

        return sink


class ClientOptionsKwargs(TypedDict, total=False):
    """The keyword arguments of ``AsyncClient`` and ``Client``: ``ClientOptions``' fields."""

    poll: PollPolicy | None
    retry: RetryPolicy | None
    max_concurrency: int
    rate_limit: float | None
    request_timeout: float
    connect_timeout: float
    max_connections: int
    max_body: int
    converter: cattrs.Converter | None
    seed: int | None
    ssl: ssl_.SSLContext | bool
    allow_insecure_http: bool
    on_event: Callable[[Event], object] | None
