"""Credentials that cannot leak by accident, and their redaction.

A ``Secret`` prints as ``Secret('***')`` in every repr, str and f-string; the
value comes out only through ``reveal()``, which only request builders call.
A ``Redactor`` masks every secret (as sent: raw, percent- and form-encoded) and
every secret query parameter in a URL shown in a log line or an exception, and
in any text or document a server sent, so a secret the server echoed back is
masked too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, quote_plus

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


#: the longest excerpt of server-sent text an exception message quotes
EXCERPT = 120


def excerpt(text: str, limit: int = EXCERPT) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was, for a message."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


class Redactor:
    """Masks a client's secrets in any text or JSON document a server sent.

    A server may echo the request (its URL, its headers) into an error message, a
    step name or a result. Every string the SDK keeps from an answer goes through
    ``document`` (a parsed body) or ``text`` (a header, a plain-text body), which
    replace each secret as sent (raw, percent-encoded, form-encoded) and the value
    of every secret query parameter (``api_key=...``) with ``***``.
    """

    __slots__ = ("_needles", "_query", "_query_bytes", "_values")

    def __init__(self, secrets: Iterable[Secret] = (), query_keys: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            value = secret.reveal()
            if value:
                forms.update((value, quote(value, safe=""), quote_plus(value)))
        # longest first, so that a value containing another is masked whole
        self._values = tuple(sorted(forms, key=len, reverse=True))
        self._needles = tuple(v.encode("utf-8", "surrogatepass") for v in self._values)
        keys = "|".join(re.escape(k) for k in query_keys)
        self._query = re.compile(rf"(?i)\b({keys})=[^&\s#\"'<>]+") if keys else None
        #: the same parameter names, looked for in a body's bytes without decoding it
        self._query_bytes = re.compile(rf"(?i)\b({keys})=".encode()) if keys else None

    def text(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        if self._query is not None and "=" in text:
            text = self._query.sub(rf"\1={REDACTED}", text)
        return text

    def _may_hold_secret(self, body: bytes) -> bool:
        if b"\\u" in body or b"\\/" in body:  # JSON escapes could spell a secret
            return True
        for needle in self._needles:
            if needle in body:
                return True
        return self._query_bytes is not None and self._query_bytes.search(body) is not None

    def document(self, doc: Any, body: bytes) -> Any:
        """``doc`` (parsed from ``body``) with every string, keys included, masked.

        The walk is skipped when ``body`` cannot hold a secret, the usual case.
        """
        if not (self._values or self._query) or not self._may_hold_secret(body):
            return doc
        return _map_strings(doc, self.text)


def _map_strings(doc: Any, fn: Callable[[str], str]) -> Any:
    """``doc`` with ``fn`` applied to every string (keys too); iterative, so any depth."""
    if isinstance(doc, str):
        return fn(doc)
    if not isinstance(doc, (dict, list)):
        return doc
    root: list[Any] = [doc]
    # (source container, its copy, index into the parent copy) — built top-down
    todo: list[tuple[Any, list[Any] | dict[str, Any]]] = []

    def copy_of(value: Any) -> Any:
        if isinstance(value, dict):
            new: dict[str, Any] = {}
            todo.append((value, new))
            return new
        if isinstance(value, list):
            new_list: list[Any] = []
            todo.append((value, new_list))
            return new_list
        return fn(value) if isinstance(value, str) else value

    root[0] = copy_of(doc)
    while todo:
        source, target = todo.pop()
        if isinstance(target, dict):
            for key, value in source.items():
                target[fn(key) if isinstance(key, str) else key] = copy_of(value)
        else:
            target.extend(copy_of(value) for value in source)
    return root[0]
