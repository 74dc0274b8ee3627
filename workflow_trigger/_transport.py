"""Sending one request: aiohttp, the retry of that one request, rate limit, body cap.

This is the only module that touches aiohttp's request API, and the one place
its exceptions become ours (``TransportError``, chained with ``from``). The
transport knows nothing of workflows: it sends a ``Request``, retries it under
the ``RetryPolicy`` where that is safe, and hands back a ``Response`` (error
statuses included: the provider decides what they mean).

Every byte of a body counts against the cap, decoded bytes included: see
``_bodies``. A server's wait hint (``Retry-After``, a spent rate-limit window)
is honoured up to ``RetryPolicy.max_retry_after``; a longer one ends the
request at once (``RateLimitError`` / ``ServerError`` carrying the hint).

When a retry is safe:
- the connection failed before the request was written (refused, DNS,
  connect timeout): always, even for a trigger;
- a 429: the platform refused the request without acting on it, so always;
- a 5xx, a reset or a read timeout after the request went out: only when
  ``request.retry_after_send`` (status polls, and triggers whose platform
  honours the idempotency key that was sent).
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import ipaddress
import logging
import math
import random
import ssl
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import aiohttp
import anyio
import attrs
import yarl

from ._bodies import ACCEPT_ENCODING, UndecodableBody, decoder_for
from ._secrets import excerpt
from ._slots import Slots
from .errors import InvalidInputError, ProtocolError, RateLimitError, ServerError, TransportError
from .events import Event, RateLimitEvent, RequestEvent, RetryEvent
from .options import ClientOptions
from .policies import RetryPolicy, parse_retry_after
from .providers.base import Provider, Request, Response

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

logger = logging.getLogger("workflow_trigger")

_RETRY_STATUSES = frozenset({500, 502, 503, 504})
_CHUNK = 64 * 1024
_BIG_BODY = 1024 * 1024


def loop_time() -> float:
    """The event loop's clock (``loop_time()`` without its backend lookup, which
    on the hot path of thousands of polls adds up: aiohttp runs on asyncio only)."""
    return asyncio.get_running_loop().time()


class RateLimiter:
    """Spaces requests to ``rate`` per second, allowing a burst of ``burst``.

    A generic cell-rate algorithm: each request reserves the next slot on a
    virtual schedule, and waits only if that slot is in the future. One
    limiter is shared by every task of a client.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.interval = 1.0 / rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._tat = 0.0

    async def acquire(self) -> float:
        """Take the next slot; the seconds waited for it."""
        now = loop_time()
        tat = max(self._tat, now)
        wait = tat - now - (self.burst - 1) * self.interval
        self._tat = tat + self.interval
        if wait > 0:
            await anyio.sleep(wait)
            return wait
        return 0.0


def _payload(body: bytes | None) -> bytes | io.BytesIO | None:
    # aiohttp warns (ResourceWarning) when handed more than 1 MiB as bytes; a stream
    # of the same bytes, made afresh for each try, is sent the same way without one.
    return io.BytesIO(body) if body is not None and len(body) > _BIG_BODY else body


class Origin(Protocol):
    """Whom a request is for (a scheduler's job): its number and the caller's context."""

    @property
    def id(self) -> int: ...

    @property
    def context(self) -> contextvars.Context | None: ...


class DeadlineReached(Exception):
    """The caller's deadline passed before the request got its answer.

    Internal: the scheduler bounds each request by its job's deadline this way
    (aiohttp's own timeout, no cancel scope per request) and turns this into
    ``PollTimeout`` or a ``TransportError`` saying what was left undone.
    """


class _NotSent(Exception):
    """The connection failed before a byte of the request was written."""

    def __init__(self, error: TransportError) -> None:
        super().__init__(str(error))
        self.error = error


@attrs.frozen(kw_only=True)
class TransportOptions:
    """How a client's transport behaves; built once by the client."""

    retry: RetryPolicy
    timeout: aiohttp.ClientTimeout
    max_body: int
    ssl: ssl.SSLContext | bool = True
    allow_insecure_http: bool = False

    @classmethod
    def of(cls, options: ClientOptions) -> TransportOptions:
        """The transport's part of a client's options."""
        return cls(
            retry=options.retry,
            timeout=aiohttp.ClientTimeout(
                total=options.request_timeout, sock_connect=options.connect_timeout
            ),
            max_body=options.max_body,
            ssl=options.ssl,
            allow_insecure_http=options.allow_insecure_http,
        )


class Transport:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        provider: Provider,
        options: TransportOptions,
        *,
        limiter: RateLimiter | None,
        connections: Slots,
        rng: random.Random,
        emit: Callable[[Event], None] | None,
    ) -> None:
        self.session = session
        self.provider = provider
        self.options = options
        self.retry = options.retry
        self.timeout = options.timeout
        self.max_body = options.max_body
        self.limiter = limiter
        self.connections = connections
        self.rng = rng
        self.emit = emit
        #: per request kind, the loop time before which none may start: the platform said
        #: that window is spent (the Runs API keeps separate windows for runs and reads)
        self.hold_until: dict[str, float] = {}
        self.requests_sent = 0
        self._checked_hosts: set[str] = set()

    async def send(
        self,
        request: Request,
        *,
        max_body: int | None = None,
        to: str | None = None,
        deadline: float | None = None,
        origin: Origin | None = None,
    ) -> Response:
        """Send ``request``, retrying it where safe; the final response, whatever its status.

        ``max_body`` overrides the body cap; with ``to``, a 2xx body is streamed into
        that file (rewritten on each try) instead of memory. With ``deadline`` (loop
        time), no try starts or waits past it and a try in flight is cut short at
        it: ``DeadlineReached``. Events are reported in the context of ``origin``
        (the job the request is for: its number and the caller's contextvars).
        """
        attempts = self.retry.attempts
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                response = await self._send_once(
                    request, max_body or self.max_body, to, deadline, origin, attempt + 1
                )
            except _NotSent as exc:
                failure: TransportError | None = exc.error
                retryable = True
            except TransportError as exc:
                failure, retryable = exc, request.retry_after_send
            else:
                failure = None
                status = response.status
                retryable = status == 429 or (
                    status in _RETRY_STATUSES and request.retry_after_send
                )
                if not retryable:
                    return response
                retry_after = parse_retry_after(response.header("retry-after"))
                if retry_after is not None and retry_after > self.retry.max_retry_after:
                    raise self._wait_too_long(request, response.status, retry_after, "Retry-After")
            if failure is not None and deadline is not None and self._past(deadline):
                raise DeadlineReached  # the try was cut short by the deadline
            if not retryable or attempt == attempts - 1:
                if failure is not None:
                    raise failure
                return response
            delay = self.retry.delay(attempt, self.rng, retry_after)
            if deadline is not None and self._past(deadline - delay):
                raise DeadlineReached  # the retry could not start before the deadline
            reason = str(failure) if failure else f"HTTP {response.status}"
            if self.emit is not None:
                event = RetryEvent(
                    provider=self.provider.kind,
                    kind=request.kind,
                    method=request.method,
                    url=request.redacted_url,
                    attempt=attempt + 2,
                    delay=delay,
                    reason=reason,
                    job=origin.id if origin is not None else None,
                )
                self._report(event, origin)
            logger.warning(
                "retrying %s %s in %.2fs (attempt %d of %d): %s",
                request.method,
                request.redacted_url,
                delay,
                attempt + 2,
                attempts,
                reason,
            )
            await anyio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _report(self, event: Event, origin: Origin | None) -> None:
        assert self.emit is not None
        context = origin.context if origin is not None else None
        if context is not None:
            context.run(self.emit, event)
        else:
            self.emit(event)

    def _waited(self, request: Request, delay: float, origin: Origin | None) -> None:
        if self.emit is not None and delay > 0:
            job = origin.id if origin is not None else None
            event = RateLimitEvent(
                provider=self.provider.kind, kind=request.kind, delay=delay, job=job
            )
            self._report(event, origin)

    def _wait_too_long(
        self, request: Request, status: int | None, seconds: float, what: str
    ) -> RateLimitError | ServerError:
        said = f"answered HTTP {status}" if status is not None else "was held back"
        message = (
            f"{request.method} {_shown(request)} {said}: the platform asks to wait "
            f"{seconds:,.0f} s ({what}), over RetryPolicy.max_retry_after="
            f"{self.retry.max_retry_after:g} s, so it was not retried. Try again later, or "
            "raise max_retry_after if such waits are expected"
        )
        if status is not None and status >= 500:
            return ServerError(message, status_code=status)
        return RateLimitError(message, status_code=status, retry_after=seconds)

    @staticmethod
    def _past(deadline: float) -> bool:
        return loop_time() >= deadline

    async def _send_once(
        self,
        request: Request,
        max_body: int,
        to: str | None,
        deadline: float | None,
        origin: Origin | None,
        attempt: int,
    ) -> Response:
        self._check_scheme(request)
        hold = self.hold_until.get(request.kind, 0.0)
        now = loop_time()
        if hold > now:
            if hold - now > self.retry.max_retry_after:
                raise self._wait_too_long(request, None, hold - now, "X-RateLimit-Reset")
            if deadline is not None and hold >= deadline:
                raise DeadlineReached  # the platform's window opens too late
            self._waited(request, hold - now, origin)
            await anyio.sleep_until(hold)
        if self.limiter is not None:
            self._waited(request, await self.limiter.acquire(), origin)
        connections = self.connections
        if not connections.take_nowait():
            await connections.take()
        try:
            if deadline is not None and self._past(deadline):
                raise DeadlineReached
            return await self._exchange(request, max_body, to, deadline, origin, attempt)
        finally:
            connections.give()

    def _check_scheme(self, request: Request) -> None:
        """Refuse to send credentials in clear text beyond this machine."""
        if self.options.allow_insecure_http or request.kind == "download":
            return
        if not request.url.startswith("http://"):
            return
        authority = request.url[7:].partition("/")[0]
        if authority in self._checked_hosts:
            return
        host = urlsplit(request.url).hostname or ""
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise InvalidInputError(
                f"refusing to send credentials over plain http:// to {excerpt(host, 80)!r}: "
                "use https://, "
                "or pass allow_insecure_http=True to the client if this network is trusted"
            )
        self._checked_hosts.add(authority)

    async def _exchange(
        self,
        request: Request,
        max_body: int,
        to: str | None,
        deadline: float | None,
        origin: Origin | None,
        attempt: int,
    ) -> Response:
        self.requests_sent += 1
        started = time.perf_counter()
        try:
            return await self._exchange_once(
                request, max_body, to, started, deadline, origin, attempt
            )
        except (TransportError, _NotSent) as exc:
            self._emit_request(request, None, started, origin, attempt, str(exc))
            raise

    def _emit_request(
        self,
        request: Request,
        status: int | None,
        started: float,
        origin: Origin | None,
        attempt: int,
        error: str | None = None,
    ) -> None:
        elapsed = time.perf_counter() - started
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s -> %s in %.3fs",
                request.method,
                request.redacted_url,
                status if status is not None else error,
                elapsed,
            )
        if self.emit is not None:
            event = RequestEvent(
                provider=self.provider.kind,
                kind=request.kind,
                method=request.method,
                url=request.redacted_url,
                status=status,
                elapsed=elapsed,
                error=error,
                attempt=attempt,
                job=origin.id if origin is not None else None,
            )
            self._report(event, origin)

    async def _exchange_once(
        self,
        request: Request,
        max_body: int,
        to: str | None,
        started: float,
        deadline: float | None,
        origin: Origin | None,
        attempt: int,
    ) -> Response:
        # aiohttp's exceptions carry the full URL, which may hold a key (Pinkfish puts
        # it in the path): ours are raised outside the except blocks, so none is
        # chained to them, and say what happened with the URL redacted.
        failure: TransportError | None = None
        not_sent = False
        try:
            async with self.session.request(
                request.method,
                yarl.URL(request.url, encoded=True),
                headers={"Accept-Encoding": ACCEPT_ENCODING, **request.headers},
                data=_payload(request.body),
                allow_redirects=False,
                timeout=self._timeout_for(request, deadline),
                ssl=self.options.ssl,
                # the body is decoded here, counted against the cap (see _bodies)
                auto_decompress=False,
            ) as resp:
                if to is not None and 200 <= resp.status < 300:
                    body = b""
                    await self._read_to_file(request, resp, max_body, to)
                else:
                    body = await self._read_body(request, resp, max_body)
                headers = resp.headers  # case-insensitive already: no copy
                status = resp.status
        except (aiohttp.ClientSSLError, aiohttp.ClientConnectorCertificateError) as exc:
            failure = self._error(request, exc)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            failure, not_sent = self._error(request, exc), True
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = self._error(request, exc)
        if failure is not None:
            raise _NotSent(failure) if not_sent else failure
        self._emit_request(request, status, started, origin, attempt)
        response = Response(status=status, headers=headers, body=body, redact=self.provider.redact)
        remaining, reset = (
            self.provider.rate_limit_hint(response, datetime.now(timezone.utc))
            if self.provider.reports_rate_limits
            else (None, None)
        )
        if remaining == 0 and reset:
            until = loop_time() + reset
            self.hold_until[request.kind] = max(self.hold_until.get(request.kind, 0.0), until)
        if 300 <= status < 400:
            raise ProtocolError(
                f"{request.method} {_shown(request)} answered a redirect (HTTP {status}); "
                "redirects are not followed so credentials never reach another host: "
                "set base_url to the final address"
            )
        return response

    async def _read_to_file(
        self, request: Request, resp: aiohttp.ClientResponse, cap: int, to: str
    ) -> None:
        """Stream the body into ``to`` through a file beside it, so that a failed or
        capped download never leaves ``to`` truncated (or clobbers what was there)."""
        part = anyio.Path(f"{to}.part")
        try:
            async with await anyio.open_file(part, "wb") as file:
                await self._read_body(request, resp, cap, file.write)
            await part.replace(to)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await part.unlink(missing_ok=True)
            raise

    def _timeout_for(self, request: Request, deadline: float | None) -> aiohttp.ClientTimeout:
        timeout = self.timeout
        total = timeout.total or math.inf
        if request.timeout is not None and request.timeout > total:
            total = request.timeout
        if deadline is not None:
            total = min(total, max(deadline - loop_time(), 0.001))
        if total == (timeout.total or math.inf):
            return timeout
        return aiohttp.ClientTimeout(total=total, sock_connect=timeout.sock_connect)

    async def _read_body(
        self,
        request: Request,
        resp: aiohttp.ClientResponse,
        cap: int,
        sink: Callable[[bytes], Awaitable[object]] | None = None,
    ) -> bytes:
        """The body, decoded, read no further than ``cap`` bytes (or handed piece by
        piece to ``sink``); its wire bytes and its decoded bytes both count."""
        length = resp.content_length
        if length is not None and length > cap:
            raise self._too_large(request, length, cap)
        encoding = resp.headers.get("Content-Encoding")
        if length is not None and not encoding and sink is None:
            # the usual answer: plain, its length declared and within the cap; the
            # parser reads no further than that length, so one read is bounded
            return await resp.read()  # its errors are the caller's, as in the loop below
        try:
            decoder = decoder_for(encoding)
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_chunked(_CHUNK):
                for piece in decoder.feed(chunk):
                    size += len(piece)
                    if size > cap:
                        raise self._too_large(request, size, cap, decoded=True)
                    if sink is not None:
                        await sink(piece)
                    else:
                        chunks.append(piece)
            for _ in decoder.end():
                pass  # pragma: no cover - decoders hold nothing back
        except UndecodableBody as exc:
            raise ProtocolError(
                f"{request.method} {_shown(request)} answered a body that cannot be read: "
                f"{exc}; check base_url (a proxy in front of the platform?)"
            ) from None
        return b"".join(chunks)

    def _too_large(
        self, request: Request, size: int, cap: int, *, decoded: bool = False
    ) -> ProtocolError:
        what = " once decompressed" if decoded else ""
        return ProtocolError(
            f"{request.method} {_shown(request)} answered a body of at least {size:,} "
            f"bytes{what}, over the cap of {cap:,}; raise max_body= (max_bytes= for "
            "downloads) if this is expected"
        )

    def _error(self, request: Request, exc: BaseException | None) -> TransportError:
        if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
            what = "timed out"
        elif isinstance(exc, aiohttp.ClientConnectorError):
            what = f"could not connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
        elif isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
            what = "lost the connection before the answer was complete"
        else:
            what = f"failed ({type(exc).__name__})"
        return TransportError(
            f"{request.method} {_shown(request)} {what}; check the network and base_url"
        )


def _shown(request: Request) -> str:
    """The request's redacted URL, cut short for a message (an id may be huge)."""
    return excerpt(request.redacted_url, 200)
