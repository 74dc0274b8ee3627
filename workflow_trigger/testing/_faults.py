"""Fault injection: the queue of armed faults and the response each kind produces.

A :class:`~._model.Fault` is armed for ``count`` requests. For each request the
core takes the first armed fault that matches (platform, operation, workflow),
decrements it, and asks :func:`fault_response` what to send. Error bodies come
from the platform's renderer, so a 503 looks like the platform's own 503.
"""

from __future__ import annotations

import email.utils
import http
import math
import time
from collections.abc import Callable

import anyio
import attrs
from aiohttp import web

from ._clock import catch_up
from ._model import Fault, Operation

__all__ = ["ErrorRenderer", "FaultQueue", "fault_response"]

#: Builds a platform's error response from (HTTP status, code, message).
ErrorRenderer = Callable[[int, str, str], web.Response]

# A truncated JSON document: what a proxy cutting a response short produces.
MALFORMED_BODY = b'{"success": true, "execution'


@attrs.define
class _Armed:
    fault: Fault
    remaining: int


class FaultQueue:
    """Armed faults, consumed first-added first."""

    def __init__(self) -> None:
        self._armed: list[_Armed] = []

    def add(self, fault: Fault) -> None:
        self._armed.append(_Armed(fault, fault.count))

    def clear(self) -> None:
        self._armed.clear()

    @property
    def remaining(self) -> int:
        return sum(armed.remaining for armed in self._armed)

    def take(self, platform: str, operation: Operation, workflow: str | None) -> Fault | None:
        for armed in self._armed:
            if armed.fault.matches(platform, operation, workflow):
                armed.remaining -= 1
                if armed.remaining == 0:
                    self._armed.remove(armed)
                return armed.fault
        return None


def retry_after_value(seconds: float, as_date: bool) -> str:
    """``Retry-After`` in seconds (``"0.2"``, ``"3"``) or as an HTTP date, rounded up."""
    if as_date:
        return email.utils.formatdate(math.ceil(time.time() + seconds), usegmt=True)
    if seconds == int(seconds):
        return str(int(seconds))
    return f"{seconds:.3f}".rstrip("0")


async def fault_response(
    fault: Fault, request: web.Request, render: ErrorRenderer
) -> web.StreamResponse | None:
    """The response ``fault`` makes for ``request``; ``None`` means answer normally."""
    if fault.kind == "slow":
        await anyio.sleep(fault.delay)
        catch_up()  # then answer as things are now
        return None
    if fault.kind == "drop":
        await request.read()
        if request.transport is not None:
            request.transport.close()
        # Never sent: aiohttp sees the closed transport and discards it.
        return web.Response(status=500)
    if fault.kind == "malformed":
        return web.Response(body=MALFORMED_BODY, content_type="application/json")
    if fault.kind == "rate_limited":
        response = render(429, "RATE_LIMITED", "Rate limit exceeded")
        if fault.retry_after is not None:
            response.headers["Retry-After"] = retry_after_value(
                fault.retry_after, fault.retry_after_date
            )
        return response
    phrase = http.HTTPStatus(fault.status).phrase
    return render(fault.status, phrase.upper().replace(" ", "_"), phrase)
