"""Credentials that cannot leak by accident, and URL redaction.

A ``Secret`` prints as ``Secret('***')`` in every repr, str and f-string; the
value comes out only through ``reveal()``, which only request builders call.
URLs that go into a log line or an exception pass through ``redact_url``.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "***"


class Secret:
    """A credential whose repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret is not picklable: pass credentials explicitly")


def redact_url(url: str, secrets: Iterable[Secret] = (), query_keys: Iterable[str] = ()) -> str:
    """``url`` with every secret's value and every named query parameter masked."""
    for secret in secrets:
        value = secret.reveal()
        if value:
            url = url.replace(value, REDACTED)
    keys = {k.lower() for k in query_keys}
    if keys and "?" in url:
        parts = urlsplit(url)
        if parts.query:
            query = [
                (k, REDACTED if k.lower() in keys else v)
                for k, v in parse_qsl(parts.query, keep_blank_values=True)
            ]
            url = urlunsplit(parts._replace(query=urlencode(query, safe="*")))
    return url
