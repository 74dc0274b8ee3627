"""The transport's guard rails: clear-text credentials, redirects, body cap, events."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from _support import codika_for
from aiohttp import web

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, Fault, Scenario


async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def odd_server(emulator: Emulator) -> AsyncIterator[str]:
    """A server that redirects to the emulator, or answers bodies that are too large."""

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(emulator.base_url + request.path_qs)

    async def huge(request: web.Request) -> web.StreamResponse:
        if "chunked" in request.query:
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(64):
                await response.write(b"x" * 65536)
            await response.write_eof()
            return response
        return web.Response(body=b"x" * (2 * 1024 * 1024), content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/redirect/{tail:.*}", redirect)
    app.router.add_route("*", "/huge/{tail:.*}", huge)
    async for url in serve(app):
        yield url


async def test_credentials_never_go_in_clear_text_beyond_loopback() -> None:
    provider = wt.Codika("pi", api_key="ck_secret", base_url="http://workflows.example.com")
    async with wt.AsyncClient(provider) as client:
        with pytest.raises(wt.InvalidInputError, match="plain http") as info:
            await client.trigger("wf")
        assert client.requests_sent == 0
    assert "ck_secret" not in str(info.value)


@pytest.mark.parametrize("method", ["trigger", "status"])
async def test_redirects_are_not_followed_so_credentials_stay_home(
    make_client: Callable[..., wt.AsyncClient],
    emulator: Emulator,
    odd_server: str,
    method: str,
) -> None:
    provider = codika_for(emulator, base_url=f"{odd_server}/redirect")
    async with make_client(provider) as client:
        with pytest.raises(wt.ProtocolError, match="redirect"):
            if method == "trigger":
                await client.trigger("wf")
            else:
                ex = await make_execution(client, emulator)
                await client.status(ex)
    assert emulator.requests == (1 if method == "status" else 0)


async def make_execution(client: wt.AsyncClient, emulator: Emulator) -> wt.Execution:
    direct = codika_for(emulator)
    async with wt.AsyncClient(direct) as other:
        return await other.trigger("wf")


@pytest.mark.parametrize("query", ["", "?chunked=1"])
async def test_bodies_over_the_cap_are_refused_not_read(
    make_client: Callable[..., wt.AsyncClient],
    emulator: Emulator,
    odd_server: str,
    query: str,
) -> None:
    provider = codika_for(emulator, base_url=f"{odd_server}/huge")
    async with make_client(provider, max_body=1024 * 1024) as client:
        with pytest.raises(wt.ProtocolError, match="over the cap"):
            await client.trigger("wf" + query)


async def test_on_event_reports_requests_retries_and_outcomes(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    events: list[wt.Event] = []
    emulator.scenario("wf", Scenario(duration=0.03, result=1))
    emulator.add_fault(Fault.server_error(count=1, status=503, on="poll"))
    async with make_client(on_event=events.append) as client:
        outcome = await client.run("wf")
    requests = [e for e in events if isinstance(e, wt.RequestEvent)]
    retries = [e for e in events if isinstance(e, wt.RetryEvent)]
    ends = [e for e in events if isinstance(e, wt.OutcomeEvent)]
    assert len(requests) == emulator.requests
    assert requests[0].kind == "trigger"
    assert 503 in [e.status for e in requests]
    assert len(retries) == 1 and retries[0].attempt == 2 and retries[0].reason == "HTTP 503"
    assert len(ends) == 1 and ends[0].status is wt.Status.SUCCEEDED
    assert ends[0].polls == outcome.polls


async def test_a_failing_hook_never_fails_a_run(
    make_client: Callable[..., wt.AsyncClient],
    emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: Any) -> None:
        raise ValueError("metrics bug")

    async with make_client(on_event=broken) as client:
        assert (await client.run("wf")).ok
    assert any("on_event hook raised" in r.getMessage() for r in caplog.records)


async def test_logging_levels(
    make_client: Callable[..., wt.AsyncClient],
    emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="workflow_trigger")
    emulator.add_fault(Fault.server_error(count=1, status=502, on="poll"))
    async with make_client() as client:
        await client.run("wf")
    levels = {r.levelno for r in caplog.records}
    assert {logging.DEBUG, logging.INFO, logging.WARNING} <= levels
    assert any(
        r.levelno == logging.WARNING and "retrying GET" in r.getMessage() for r in caplog.records
    )
    assert any(
        r.levelno == logging.INFO and "ended success" in r.getMessage() for r in caplog.records
    )
