"""Small wire-format helpers shared by the platform route sets."""

from __future__ import annotations

import json
import mimetypes
import time
from collections import deque
from datetime import datetime
from typing import Any, Generic, TypeVar, cast, overload

__all__ = ["Setting", "SlidingWindow", "iso_ms", "iso_s", "json_type", "mime_type", "parse_json"]

_T = TypeVar("_T")
WINDOW = 60.0


def iso_ms(moment: datetime) -> str:
    """``2024-01-15T10:00:00.000Z``."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_s(moment: datetime) -> str:
    """``2026-05-14T19:16:47Z``."""
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_json(body: bytes, empty: Any) -> Any:
    """The JSON document in ``body`` (``empty`` if it is blank); ``ValueError`` if not JSON."""
    if not body.strip():
        return empty
    return json.loads(body)


def json_type(value: Any) -> str:
    """The JSON type name of a decoded value, as validation messages say it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def mime_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


class Setting(Generic[_T]):
    """An attribute of the emulator that reads and writes a field of a platform's config."""

    def __init__(self, config: str, field: str) -> None:
        self.config = config
        self.field = field

    @overload
    def __get__(self, obj: None, owner: type) -> Setting[_T]: ...
    @overload
    def __get__(self, obj: object, owner: type) -> _T: ...
    def __get__(self, obj: object | None, owner: type) -> Setting[_T] | _T:
        if obj is None:
            return self
        return cast(_T, getattr(getattr(obj, self.config), self.field))

    def __set__(self, obj: object, value: _T) -> None:
        setattr(getattr(obj, self.config), self.field, value)


class SlidingWindow:
    """Request times per key over the last minute, for a sliding-window rate limit."""

    def __init__(self) -> None:
        self._hits: dict[tuple[str, str], deque[float]] = {}

    def _times(self, key: tuple[str, str]) -> deque[float]:
        times = self._hits.setdefault(key, deque())
        now = time.monotonic()
        while times and times[0] <= now - WINDOW:
            times.popleft()
        return times

    def used(self, key: tuple[str, str]) -> int:
        return len(self._times(key))

    def hit(self, key: tuple[str, str]) -> None:
        self._times(key).append(time.monotonic())

    def frees_in(self, key: tuple[str, str]) -> float:
        """Seconds until the oldest request leaves the window (0 if it is empty)."""
        times = self._times(key)
        return max(0.0, times[0] + WINDOW - time.monotonic()) if times else 0.0
