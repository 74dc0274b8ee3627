"""Loopback servers that misbehave in ways the emulator's own faults cannot.

``FaultProxy`` sits in front of an emulator and forwards every request to it,
unless an armed ``Tamper`` matches: then it answers an HTML page, an empty or
wrongly shaped 200, a body over any cap, a redirect to another host, or it
forwards the request (so the platform acts on it) and then loses or replaces
the answer. ``Blackhole`` is a listening socket whose accept queue is full, so
a connection to it never completes (a connect timeout, on loopback).
``RawServer`` answers every request with the same bytes, byte for byte: header
values that are not UTF-8, which no aiohttp.web response can carry.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any, Literal

import aiohttp
import anyio
import anyio.abc
import attrs
import brotli
import yarl
from aiohttp import web

__all__ = ["Blackhole", "FaultProxy", "RawServer", "Seen", "Tamper", "operation_of"]

Action = Literal[
    "html",  # answer ``status`` with an HTML error page; nothing reaches the emulator
    "echo",  # answer 200 text "Cannot GET <path?query>", as a sloppy server does
    "empty",  # answer 200 with no body (and ``headers``)
    "json",  # answer 200 with ``document`` as JSON (and ``headers``)
    "huge",  # answer 200 with ``size`` bytes, then hang until the proxy closes
    "redirect",  # answer ``status`` (3xx) with Location: ``location`` + the same path
    "replace",  # forward, then answer ``status`` instead of the emulator's answer
    "cut",  # forward, then send the emulator's headers and half its body, then close
    "reset",  # forward, then close the connection without an answer
    "raw",  # answer ``status`` with ``body`` (bytes, as they are) and ``headers``
    "gzip",  # forward, then answer the emulator's body gzip-compressed (Content-Encoding)
    "br",  # forward, then answer the emulator's body brotli-compressed (Content-Encoding)
    "headers",  # forward, then answer the emulator's answer with ``headers`` added
    "reroute",  # forward with ``old`` replaced by ``new`` in the path: another run's answer
]
On = Literal["trigger", "poll", "result", "any"]

HTML_PAGE = (
    b"<html><head><title>502 Bad Gateway</title></head><body>"
    b"<center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)
_HOP_BY_HOP = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "content-encoding",
    "date",
    "server",
}


#: the actions that forward, then answer the emulator's body compressed in their encoding
_COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {"gzip": gzip.compress, "br": brotli.compress}


def operation_of(method: str, path: str) -> On:
    """What a request does, from its method and path alone (good enough for the four
    platforms): a POST triggers, a GET of ``.../results`` fetches results, another GET polls."""
    if method == "POST":
        return "trigger"
    return "result" if path.rstrip("/").endswith("/results") else "poll"


@attrs.define
class Tamper:
    action: Action
    on: On = "any"
    count: int = 1
    status: int = 200
    document: Any = None
    size: int = 0
    declared: bool = False
    location: str = ""
    headers: dict[str, str] = attrs.field(factory=dict)
    body: bytes = b""
    old: str = ""
    new: str = ""


@attrs.frozen
class Seen:
    """A request the proxy received, and what it did with it."""

    method: str
    raw_path: str
    headers: Mapping[str, str]
    body: bytes
    action: str  # "forward" or the tamper's action


class FaultProxy:
    """A reverse proxy to ``target`` that misbehaves on demand (``add``)."""

    def __init__(self, target: str, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.target = target.rstrip("/")
        self.ssl_context = ssl_context
        self.seen: list[Seen] = []
        self._armed: list[Tamper] = []
        self._release = anyio.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    def add(self, action: Action, *, on: On = "any", count: int = 1, **options: Any) -> None:
        self._armed.append(Tamper(action, on, count, **options))

    @property
    def armed(self) -> int:
        return sum(t.count for t in self._armed)

    async def __aenter__(self) -> FaultProxy:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context).start()
        scheme = "https" if self.ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _take(self, request: web.Request) -> Tamper | None:
        operation = operation_of(request.method, request.path)
        for tamper in self._armed:
            if tamper.on in ("any", operation):
                tamper.count -= 1
                if tamper.count == 0:
                    self._armed.remove(tamper)
                return tamper
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        tamper = self._take(request)
        self.seen.append(
            Seen(
                request.method,
                request.raw_path,
                dict(request.headers),
                await request.read(),
                tamper.action if tamper else "forward",
            )
        )
        if tamper is None:
            status, headers, body = await self._forward(request)
            return web.Response(status=status, headers=headers, body=body)
        action = tamper.action
        if action == "html":
            return web.Response(status=tamper.status, body=HTML_PAGE, content_type="text/html")
        if action == "echo":
            text = f"Cannot {request.method} {request.raw_path}"
            return web.Response(status=200, text=text, content_type="text/html")
        if action == "empty":
            return web.Response(status=200, headers=tamper.headers)
        if action == "json":
            return web.json_response(tamper.document, headers=tamper.headers)
        if action == "huge":
            return await self._huge(request, tamper)
        if action == "redirect":
            location = tamper.location.rstrip("/") + request.raw_path
            return web.Response(status=tamper.status, headers={"Location": location})
        if action == "raw":
            headers = {"Content-Type": "application/json", **tamper.headers}
            return web.Response(status=tamper.status, headers=headers, body=tamper.body)
        if action == "reroute":
            path = request.raw_path.replace(tamper.old, tamper.new)
            status, headers, body = await self._forward(request, path)
            return web.Response(status=status, headers=headers, body=body)
        status, headers, body = await self._forward(request)
        if action in _COMPRESSORS:  # the action is the Content-Encoding
            headers["Content-Encoding"] = action
            return web.Response(status=status, headers=headers, body=_COMPRESSORS[action](body))
        if action == "headers":
            return web.Response(status=status, headers={**headers, **tamper.headers}, body=body)
        if action == "replace":
            return web.json_response({"error": "upstream failed"}, status=tamper.status)
        if action == "cut":
            response = web.StreamResponse(status=status, headers=headers)
            response.content_length = len(body) + 64
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
        return self._abort(request)

    async def _forward(
        self, request: web.Request, path: str | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(
            request.method,
            yarl.URL(self.target + (path or request.raw_path), encoded=True),
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as upstream:
            body = await upstream.read()
            kept = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            return upstream.status, kept, body

    async def _huge(self, request: web.Request, tamper: Tamper) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        if tamper.declared:
            response.content_length = tamper.size
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b" " * 65536
        sent = 0
        try:
            while sent < tamper.size:
                await response.write(chunk)
                sent += len(chunk)
            # A client that reads past its cap waits here until the test ends.
            await self._release.wait()
        except ConnectionError:
            pass
        return self._abort(request)

    @staticmethod
    def _abort(request: web.Request) -> web.Response:
        if request.transport is not None:
            request.transport.close()
        # Never sent: aiohttp sees the closed transport and discards it.
        return web.Response(status=500)


class Blackhole:
    """A loopback address where connecting hangs: a listener whose accept queue is full."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._fillers: list[socket.socket] = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            self._fillers.append(filler)

    def close(self) -> None:
        for sock in (*self._fillers, self._listener):
            sock.close()


class RawServer:
    """A loopback HTTP/1.1 server that answers every request with ``answer``, as bytes."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.requests = 0
        self.url = ""
        self._listener: Any = None
        self._group: Any = None

    async def __aenter__(self) -> RawServer:
        self._listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = self._listener.extra(anyio.abc.SocketAttribute.local_port)
        self.url = f"http://127.0.0.1:{port}"
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(self._listener.serve, self._answer)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._group.cancel_scope.cancel()
        await self._group.__aexit__(None, None, None)
        await self._listener.aclose()

    async def _answer(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            head = b""
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while b"\r\n\r\n" not in head:
                    head += await stream.receive()
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = head.partition(b"\r\n\r\n")[2]
                while len(body) < length:
                    body += await stream.receive()
                self.requests += 1
                await stream.send(self.answer)
