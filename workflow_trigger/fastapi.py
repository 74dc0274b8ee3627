"""FastAPI integration (``pip install "workflow-trigger[fastapi]"``).

    from workflow_trigger.fastapi import CancelOnDisconnect, WorkflowClient, lifespan

    app = FastAPI(lifespan=lifespan(wt.Codika.from_env))
    app.add_middleware(CancelOnDisconnect)       # or APIRouter(route_class=CancelOnDisconnectRoute)

    @app.get("/runs/{token}/result")
    async def result(token: str, client: WorkflowClient) -> dict[str, Any]:
        outcome = await client.wait(wt.Execution.from_token(token))
        ...

How it works. :func:`lifespan` opens one :class:`~workflow_trigger.AsyncClient`
when the app starts and closes it on shutdown; it sits on ``app.state`` and the
:data:`WorkflowClient` dependency hands it to handlers, so every request shares
one connection pool and one concurrency limit.

Starlette does not cancel a handler whose HTTP client went away: it only puts
``http.disconnect`` on the ASGI receive channel, which a handler busy polling
never reads. :class:`CancelOnDisconnect` (for a whole app, as middleware) and
:class:`CancelOnDisconnectRoute` (for the routes of one router) read that
channel for the handler, passing every message on, and cancel the handler the
moment the disconnect arrives: its ``run`` / ``wait`` stop polling at once and,
with ``cancel_remote_on_exit=True``, cancel the run on the platform. Once the
response has been sent nothing is cancelled, so background tasks still run.
Only ``async def`` handlers can be cancelled this way (a sync one runs in a
thread).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .client import AsyncClient
from .errors import UnsupportedOperation
from .providers import Provider

__all__ = [
    "STATE_KEY",
    "CancelOnDisconnect",
    "CancelOnDisconnectRoute",
    "WorkflowClient",
    "cancel_on_disconnect",
    "get_client",
    "lifespan",
    "open_client",
]

#: the attribute of ``app.state`` that holds the app's client
STATE_KEY = "workflow_trigger_client"

ProviderSource = Provider | Callable[[], Provider]


@asynccontextmanager
async def open_client(
    app: FastAPI, provider: ProviderSource, **options: Any
) -> AsyncIterator[AsyncClient]:
    """Open the app's client for the body, on ``app.state``: for use inside your own lifespan.

    ``provider`` is a provider, or a function returning one (``wt.Codika.from_env``), called
    when the app starts, so that the environment is read then and not at import.
    """
    built = provider() if callable(provider) and not isinstance(provider, Provider) else provider
    async with AsyncClient(built, **options) as client:
        setattr(app.state, STATE_KEY, client)
        try:
            yield client
        finally:
            delattr(app.state, STATE_KEY)


def lifespan(
    provider: ProviderSource, **options: Any
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A lifespan for ``FastAPI(lifespan=...)`` that opens one client for the app.

    ``options`` are :class:`~workflow_trigger.AsyncClient`'s (``poll=``,
    ``max_concurrency=``...).
    """

    @asynccontextmanager
    async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_client(app, provider, **options):
            yield

    return app_lifespan


def get_client(request: Request) -> AsyncClient:
    """The app's client (a dependency; :data:`WorkflowClient` is the annotated form)."""
    client = getattr(request.app.state, STATE_KEY, None)
    if not isinstance(client, AsyncClient):
        raise UnsupportedOperation(
            "no workflow_trigger client on this app: create it with "
            "FastAPI(lifespan=workflow_trigger.fastapi.lifespan(provider)) or open_client()"
        )
    return client


#: a handler parameter annotated with this receives the app's client
WorkflowClient = Annotated[AsyncClient, Depends(get_client)]


async def cancel_on_disconnect(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Call the ASGI ``app``, cancelled as soon as the HTTP client disconnects.

    The app's receive channel is read here and passed on (the request body one
    message at a time, so an upload still meets backpressure); the disconnect
    cancels the app unless its response has been sent.
    """
    if scope["type"] != "http":
        await app(scope, receive, send)
        return
    # Buffer 1: a body message waits here until the app takes it; a GET's lone
    # body message never blocks the watch for the disconnect behind it.
    forward, messages = anyio.create_memory_object_stream[Message](1)
    responded = False

    async def proxied_receive() -> Message:
        try:
            return await messages.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return {"type": "http.disconnect"}

    async def proxied_send(message: Message) -> None:
        nonlocal responded
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            responded = True  # before sending: the server may report the disconnect at once
        await send(message)

    async def watch(app_scope: anyio.CancelScope) -> None:
        async with forward:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    if not responded:
                        app_scope.cancel()
                    return
                await forward.send(message)

    with messages:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watch, tasks.cancel_scope)
            await app(scope, proxied_receive, proxied_send)
            tasks.cancel_scope.cancel()


class CancelOnDisconnect:
    """ASGI middleware: every HTTP handler of the app is cancelled when its client leaves.

    ``app.add_middleware(CancelOnDisconnect)``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await cancel_on_disconnect(self.app, scope, receive, send)


class CancelOnDisconnectRoute(APIRoute):
    """A route class: the router's handlers are cancelled when their client leaves.

    ``APIRouter(route_class=CancelOnDisconnectRoute)``, or
    ``router.add_api_route(..., route_class_override=CancelOnDisconnectRoute)`` for one route.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await cancel_on_disconnect(super().handle, scope, receive, send)
