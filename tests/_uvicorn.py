"""A real uvicorn server on a free loopback port, in the test's event loop."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["Server", "TrackedApp", "serve"]


class TrackedApp:
    """The app, plus which requests it has finished handling: an event to wait on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.finished: list[str] = []
        self._changed = anyio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                self.finished.append(scope["path"])
                self._changed.set()
                self._changed = anyio.Event()

    async def wait_finished(self, path: str) -> None:
        while path not in self.finished:
            await self._changed.wait()


class Server(uvicorn.Server):
    """uvicorn's server, with an event for "listening" instead of polling ``started``."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()


@asynccontextmanager
async def serve(app: TrackedApp) -> AsyncIterator[str]:
    """Serve ``app`` (lifespan on) until the body ends; yields its base URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        interface="asgi3",
        lifespan="on",
        ws="none",
        log_config=None,  # leave the test process's logging alone
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = Server(config)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve)
        with anyio.fail_after(10):
            await server.listening.wait()
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
