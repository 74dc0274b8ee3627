"""workflow_trigger.fastapi under a real uvicorn server, with real sockets that hang up."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anyio
import pytest
from _support import FAST
from _uvicorn import TrackedApp, serve
from fastapi import APIRouter, BackgroundTasks, FastAPI, Request
from fastapi.routing import APIRoute

import workflow_trigger as wt
from workflow_trigger.fastapi import (
    CancelOnDisconnect,
    CancelOnDisconnectRoute,
    WorkflowClient,
    get_client,
    lifespan,
)
from workflow_trigger.testing import Emulator, Scenario

#: "app": the middleware; "router": the route class ("none", neither, is the control)
MODES = ("app", "router")


def make_app(provider: Callable[[], wt.Provider], mode: str, seen: list[Any]) -> FastAPI:
    app = FastAPI(lifespan=lifespan(provider, poll=FAST))
    if mode == "app":
        app.add_middleware(CancelOnDisconnect)
    router = APIRouter(route_class=CancelOnDisconnectRoute if mode == "router" else APIRoute)

    @router.post("/run/{workflow}")
    async def run(workflow: str, client: WorkflowClient, cancel_remote: bool = False) -> Any:
        outcome = await client.run(workflow, {}, timeout=30, cancel_remote_on_exit=cancel_remote)
        return {"status": outcome.status}

    @router.get("/wait/{token}")
    async def wait(token: str, client: WorkflowClient) -> Any:
        seen.append(client)
        outcome = await client.wait(wt.Execution.from_token(token), timeout=30)
        return {"status": outcome.status, "result": outcome.result}

    @router.get("/status/{token}")
    async def status(token: str, client: WorkflowClient, background: BackgroundTasks) -> Any:
        execution = wt.Execution.from_token(token)

        async def after() -> None:  # runs once the response is sent: it must not be cancelled
            seen.append(await client.status(execution))

        background.add_task(after)
        return {"status": (await client.status(execution)).status}

    app.include_router(router)
    return app


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def hang_up_while_polling(
    url: str, method: str, path: str, emulator: Emulator, app: TrackedApp, query: str = ""
) -> float:
    """Call ``path``, hang up once the emulator saw a run polled twice; seconds until the
    handler returned."""

    async def call() -> None:
        # Its own session: cancelling this task closes its connection, as curl going away does.
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, url + path + query) as response,
        ):
            await response.read()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(call)
        with anyio.fail_after(10):
            await emulator.wait_until(lambda: emulator.poll_requests >= 2)
        tasks.cancel_scope.cancel()
    hung_up = time.monotonic()
    with anyio.fail_after(10):
        await app.wait_finished(path)
    return time.monotonic() - hung_up


def codika(emulator: Emulator) -> Callable[[], wt.Provider]:
    env = {
        "CODIKA_API_KEY": emulator.codika_api_key,
        "CODIKA_PROCESS_INSTANCE_ID": emulator.codika_instance_id,
        "CODIKA_BASE_URL": emulator.base_url,
    }
    return lambda: wt.Codika.from_env(env)


async def test_one_client_for_the_app_handed_to_every_handler_and_closed_on_shutdown(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    emulator.scenario("wf", Scenario(result={"n": 1}))
    seen: list[Any] = []
    app = make_app(codika(emulator), "app", seen)
    async with serve(TrackedApp(app)) as url:
        async with wt.AsyncClient(codika(emulator)(), poll=FAST) as mine:
            tokens = [(await mine.trigger("wf")).token() for _ in range(3)]
        for token in tokens:
            async with http.get(f"{url}/wait/{token}") as response:
                assert response.status == 200
                assert await response.json() == {"status": "succeeded", "result": {"n": 1}}
        client = get_client_of(app)
    assert len(seen) == 3 and all(c is client for c in seen)
    with pytest.raises(wt.UnsupportedOperation, match="closed"):
        await client.status(wt.Execution.from_token(tokens[0]))  # shutdown closed it


def get_client_of(app: FastAPI) -> wt.AsyncClient:
    """What the dependency hands a handler of ``app``."""
    return get_client(Request({"type": "http", "app": app}))


@pytest.mark.parametrize("mode", MODES)
async def test_hanging_up_stops_the_handlers_polls_within_a_second(
    mode: str, emulator: Emulator
) -> None:
    emulator.scenario("slow", Scenario(duration=60))
    app = TrackedApp(make_app(codika(emulator), mode, []))
    async with serve(app) as url:
        async with wt.AsyncClient(codika(emulator)(), poll=FAST) as mine:
            token = (await mine.trigger("slow")).token()
        execution_id = wt.Execution.from_token(token).execution_id
        took = await hang_up_while_polling(url, "GET", f"/wait/{token}", emulator, app)
        assert took < 1.0
        polls = emulator.polls(execution_id)
        await anyio.sleep(FAST.interval * 10)  # a window in which a leaked poller would poll
        assert emulator.polls(execution_id) == polls
    assert not emulator.executions[0].finished  # only the wait stopped: the run goes on


async def test_without_it_a_plain_handler_polls_on_for_nobody(emulator: Emulator) -> None:
    """The control: what the integration fixes (so the tests above can fail)."""
    emulator.scenario("slow", Scenario(duration=60))
    app = TrackedApp(make_app(codika(emulator), "none", []))
    async with serve(app) as url:
        async with wt.AsyncClient(codika(emulator)(), poll=FAST) as mine:
            execution = await mine.trigger("slow")
        path = f"/wait/{execution.token()}"

        async def call() -> None:
            async with aiohttp.ClientSession() as session, session.get(url + path) as r:
                await r.read()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(call)
            with anyio.fail_after(10):
                await emulator.wait_for_polls(execution.execution_id, 2)
            tasks.cancel_scope.cancel()
        polls = emulator.polls(execution.execution_id)
        with anyio.fail_after(10):
            await emulator.wait_for_polls(execution.execution_id, polls + 5)
        assert path not in app.finished
        emulator.executions[0].advance(60)  # let the handler end, so the server can stop
        with anyio.fail_after(10):
            await app.wait_finished(path)


@pytest.mark.parametrize("mode", MODES)
async def test_hanging_up_on_run_cancels_the_remote_run_when_asked(
    mode: str, emulator: Emulator
) -> None:
    emulator.scenario("slow", Scenario(duration=60))
    env = {
        "AWAITSTEP_API_KEY": emulator.awaitstep_api_key,
        "AWAITSTEP_CONNECTION_ID": emulator.awaitstep_connection_id,
        "AWAITSTEP_BASE_URL": emulator.base_url,
    }
    app = TrackedApp(make_app(lambda: wt.AwaitStep.from_env(env), mode, []))
    async with serve(app) as url:
        path = "/run/slow"
        took = await hang_up_while_polling(url, "POST", path, emulator, app, "?cancel_remote=true")
        assert took < 1.0
    (run,) = emulator.executions
    assert run.state == "terminated"
    assert emulator.operation_requests("control") == 1


@pytest.mark.parametrize("mode", MODES)
async def test_a_normal_response_and_its_background_task_are_not_cancelled(
    mode: str, emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    emulator.scenario("wf", Scenario(duration=60))
    seen: list[Any] = []
    app = TrackedApp(make_app(codika(emulator), mode, seen))
    async with serve(app) as url:
        async with wt.AsyncClient(codika(emulator)(), poll=FAST) as mine:
            token = (await mine.trigger("wf")).token()
        path = f"/status/{token}"
        async with http.get(url + path) as response:
            assert (response.status, await response.json()) == (200, {"status": "pending"})
        with anyio.fail_after(10):
            await app.wait_finished(path)
    assert len(seen) == 1 and isinstance(seen[0], wt.Snapshot)  # the background task ran


async def test_a_request_body_still_reaches_the_handler(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    app = FastAPI(lifespan=lifespan(codika(emulator), poll=FAST))
    app.add_middleware(CancelOnDisconnect)

    @app.post("/echo")
    async def echo(body: dict[str, Any]) -> Any:
        return body

    big = {"text": "x" * 300_000}  # several receive messages
    async with serve(TrackedApp(app)) as url, http.post(url + "/echo", json=big) as response:
        assert response.status == 200 and await response.json() == big


def test_an_app_without_the_lifespan_is_told_what_to_do() -> None:
    with pytest.raises(wt.UnsupportedOperation, match="lifespan"):
        get_client_of(FastAPI())


async def test_the_core_never_imports_fastapi() -> None:
    code = (
        "import sys, workflow_trigger, workflow_trigger.cli, workflow_trigger.testing\n"
        "assert 'fastapi' not in sys.modules and 'starlette' not in sys.modules, 'imported'\n"
    )
    done = await anyio.run_process([sys.executable, "-c", code], check=False)
    assert done.returncode == 0, done.stderr.decode()
