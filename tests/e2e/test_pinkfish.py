"""Pinkfish end to end: wt.AsyncClient (and wt.Client) against the emulator over loopback."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from _support import FAST, FAST_RETRY
from aiohttp import web

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, Fault, Scenario

from ._platforms import body_of, logged, pinkfish_for

AUTOMATION = "d1a2b3c4e5f6g7h8i9j0"
#: a key with characters that are percent-encoded in a URL path, to redact in both forms
KEY = "pf_live_s3cr3t+key/=="
KEY_IN_PATH = "pf_live_s3cr3t%2Bkey%2F%3D%3D"

POEM = "Roses are red,\nviolets are blue.\n"
FILES = {"poem.txt": POEM, "data.json": b'{"lines": 2}'}


@pytest.fixture
async def client(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> AsyncIterator[wt.AsyncClient]:
    emulator.pinkfish_automation_ids["trg_poem"] = AUTOMATION
    async with make_client(pinkfish_for(emulator)) as c:
        yield c


def _results(outcome: wt.Outcome[Any]) -> list[dict[str, Any]]:
    assert isinstance(outcome.result, dict)
    results = outcome.result["results"]
    assert isinstance(results, list)
    return results


# -- trigger ------------------------------------------------------------------------------


async def test_trigger_sends_the_key_header_and_reads_the_ids_from_headers(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    payload = {"user_request": "summarise this"}
    ex = await client.trigger("trg_poem", payload)
    run = emulator.executions[0]
    assert ex.provider == "pinkfish" and ex.workflow_id == "trg_poem"
    assert ex.execution_id == run.id and ex.extras["automation_id"] == AUTOMATION
    (trigger,) = emulator.request_log
    assert (trigger.method, trigger.path, trigger.status) == ("POST", "/ext/triggers/trg_poem", 200)
    assert trigger.headers["X-API-KEY"] == emulator.pinkfish_api_key
    assert trigger.headers["x-api-wait"] == "false"
    assert body_of(trigger) == payload == run.payload  # the payload itself, not wrapped
    resumed = wt.Execution.from_token(ex.token())
    assert resumed.extras["automation_id"] == AUTOMATION
    snap = await client.status(resumed)
    assert snap.status is wt.Status.SUCCEEDED
    assert logged(emulator, "poll")[0].path == (
        f"/ext/webhook/{emulator.pinkfish_api_key}/runs/{AUTOMATION}/{run.id}/status"
    )


async def test_an_answer_without_the_id_headers_is_a_protocol_error(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.add_fault(Fault.malformed(on="trigger", platform="pinkfish"))
    with pytest.raises(wt.ProtocolError, match="X-Pf-Run-Id"):
        await client.run("trg_poem")
    assert emulator.requests == 1 and emulator.executions == []


async def test_a_route_that_omits_the_id_headers_is_a_protocol_error(
    make_client: Callable[..., wt.AsyncClient],
) -> None:
    """A proxy in front of Pinkfish that drops the X-Pf-* headers: nothing to follow."""
    received: list[str] = []

    async def accept(request: web.Request) -> web.Response:
        received.append(request.path)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/ext/triggers/{trigger}", accept)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        provider = wt.Pinkfish("pf_key", base_url=f"http://127.0.0.1:{port}")
        async with make_client(provider) as client:
            with pytest.raises(wt.ProtocolError, match="X-Pf-Automation-Id"):
                await client.trigger("trg_poem")
    finally:
        await runner.cleanup()
    assert received == ["/ext/triggers/trg_poem"]


async def test_a_trigger_is_never_resent_once_sent(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.add_fault(Fault.server_error(status=503, on="trigger", platform="pinkfish"))
    with pytest.raises(wt.ServerError):
        await client.run("trg_poem")
    emulator.add_fault(Fault.drop(on="trigger", platform="pinkfish"))
    with pytest.raises(wt.TransportError):
        await client.run("trg_poem")
    emulator.add_fault(Fault.rate_limited(retry_after=0.01, on="trigger", platform="pinkfish"))
    assert (await client.run("trg_poem")).ok  # a 429 started nothing: retried
    assert emulator.trigger_requests == 4 and emulator.triggers("trg_poem") == 1


async def test_options_pinkfish_lacks_are_refused_without_a_request(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    for options in ({"idempotency_key": "k"}, {"connection_id": "conn"}):
        with pytest.raises(wt.InvalidInputError, match="neither idempotency keys"):
            await client.trigger("trg_poem", {}, **options)
    emulator.scenario("trg_poem", Scenario(duration=30.0))
    ex = await client.trigger("trg_poem")
    for control in (client.cancel, client.pause, client.resume):
        with pytest.raises(wt.UnsupportedOperation):
            await control(ex)
    assert emulator.requests == 1


# -- status, steps, results -----------------------------------------------------------------


async def test_statuses_map_including_timeout(client: wt.AsyncClient, emulator: Emulator) -> None:
    emulator.scenario("trg_poem", Scenario(duration=30.0, queued=10.0))
    ex = await client.trigger("trg_poem")
    run = emulator.executions[0]
    snap = await client.status(ex)
    assert (snap.status, snap.raw_status) == (wt.Status.PENDING, "PENDING")
    run.advance(10.0)
    snap = await client.status(ex)
    assert (snap.status, snap.raw_status) == (wt.Status.RUNNING, "RUNNING")
    run.advance(20.0)
    assert (await client.wait(ex)).status is wt.Status.SUCCEEDED

    emulator.scenario("slow", Scenario(status="timeout"))
    timed_out = await client.run("slow")
    assert timed_out.status is wt.Status.TIMED_OUT and timed_out.raw_status == "TIMEOUT"
    assert timed_out.error is not None and timed_out.error.code == "TIMEOUT"
    assert not timed_out.ok and timed_out.result is None

    emulator.scenario("broken", Scenario(status="failed"))
    failed = await client.run("broken")
    assert failed.status is wt.Status.FAILED and failed.raw_status == "FAILED"
    assert failed.error is not None and failed.error.code == "FAILED"
    assert emulator.operation_requests("result") == 1  # results only for the COMPLETE run


async def test_watch_reports_each_step(client: wt.AsyncClient, emulator: Emulator) -> None:
    emulator.scenario(
        "trg_poem", Scenario(duration=30.0, queued=0.0, steps=("Research", "Write", "Review"))
    )
    ex = await client.trigger("trg_poem")
    run = emulator.executions[0]
    seen: list[tuple[str, tuple[tuple[str, str | None, str], ...]]] = []
    with anyio.fail_after(5):
        async for snap in client.watch(ex):
            seen.append((snap.raw_status, tuple((s.id, s.name, s.raw_status) for s in snap.steps)))
            run.advance(10.0)
    assert seen == [
        (
            "RUNNING",
            (("1", "Research", "RUNNING"), ("2", "Write", "PENDING"), ("3", "Review", "PENDING")),
        ),
        (
            "RUNNING",
            (("1", "Research", "COMPLETE"), ("2", "Write", "RUNNING"), ("3", "Review", "PENDING")),
        ),
        (
            "RUNNING",
            (("1", "Research", "COMPLETE"), ("2", "Write", "COMPLETE"), ("3", "Review", "RUNNING")),
        ),
        (
            "COMPLETE",
            (
                ("1", "Research", "COMPLETE"),
                ("2", "Write", "COMPLETE"),
                ("3", "Review", "COMPLETE"),
            ),
        ),
    ]
    assert [s.status for s in (await client.status(ex)).steps] == [wt.Status.SUCCEEDED] * 3


async def test_results_are_fetched_once_with_artifacts_and_the_designated_output(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario(
        "trg_poem",
        Scenario(duration=30.0, steps=("Research", "Write"), files=FILES, designated="poem.txt"),
    )
    ex = await client.trigger("trg_poem")
    emulator.executions[0].advance(30.0)
    outcome = await client.wait(ex)
    assert outcome.ok and outcome.raw_status == "COMPLETE"
    assert emulator.operation_requests("result") == 1
    (fetch,) = logged(emulator, "result")
    assert fetch.path == (
        f"/ext/webhook/{emulator.pinkfish_api_key}/runs/{AUTOMATION}/{ex.execution_id}/results"
    )
    results = _results(outcome)
    assert [r["stepIndex"] for r in results] == [1, 2]
    assert outcome.result["automationId"] == AUTOMATION  # type: ignore[index]
    by_name = {a.name: a for a in outcome.artifacts}
    assert sorted(by_name) == ["data.json", "poem.txt"]
    assert by_name["poem.txt"].mime_type == "text/plain"
    assert by_name["poem.txt"].size == len(POEM.encode())
    assert by_name["data.json"].mime_type == "application/json"
    designated = outcome.designated_output
    assert designated is not None and designated.name == "poem.txt"
    assert designated.url == by_name["poem.txt"].url and designated.size == len(POEM)


async def test_downloads_as_bytes_and_to_a_file(
    client: wt.AsyncClient, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.scenario("trg_poem", Scenario(files=FILES, designated="poem.txt"))
    outcome = await client.run("trg_poem")
    data = {a.name: await client.download(a) for a in outcome.artifacts}
    assert data == {"poem.txt": POEM.encode(), "data.json": b'{"lines": 2}'}
    assert outcome.designated_output is not None
    target = tmp_path / "poem.txt"
    written = await client.download(outcome.designated_output, to=target)
    assert written == target and target.read_text() == POEM
    assert written == await client.download(outcome.designated_output, to=str(target))
    downloads = logged(emulator, "download")
    assert len(downloads) == 4 and all(r.status == 200 for r in downloads)
    # the files live elsewhere: no credential rides along
    assert all("X-API-KEY" not in r.headers for r in downloads)
    assert all(emulator.pinkfish_api_key not in r.path for r in downloads)


async def test_a_download_over_max_bytes_is_a_protocol_error(
    client: wt.AsyncClient, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.scenario("trg_poem", Scenario(files=FILES, designated="poem.txt"))
    outcome = await client.run("trg_poem")
    poem = outcome.designated_output
    assert poem is not None
    with pytest.raises(wt.ProtocolError, match="max_bytes"):
        await client.download(poem, max_bytes=len(POEM) - 1)
    with pytest.raises(wt.ProtocolError, match="over the cap of 10"):
        await client.download(poem, to=tmp_path / "poem.txt", max_bytes=10)
    assert await client.download(poem, max_bytes=len(POEM)) == POEM.encode()
    assert len(logged(emulator, "download")) == 3  # a capped body is not retried


async def test_an_expired_file_is_not_found(client: wt.AsyncClient, emulator: Emulator) -> None:
    emulator.scenario("trg_poem", Scenario(files=FILES))
    outcome = await client.run("trg_poem")
    gone = wt.Artifact(name="gone.txt", url=outcome.artifacts[0].url.rsplit("/", 1)[0] + "/gone")
    with pytest.raises(wt.NotFoundError, match="may have expired"):
        await client.download(gone)


@attrs.frozen
class StepResult:
    """Pinkfish's own field names: the default converter maps names one to one."""

    stepIndex: int
    exitCode: int


@attrs.frozen
class PinkfishRun:
    id: str
    automationId: str
    results: list[StepResult]


@pytest.mark.parametrize("wait", ["async", "sync"])
async def test_result_type_structures_the_results_in_both_modes(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator, wait: str
) -> None:
    emulator.scenario("trg_poem", Scenario(steps=("Research", "Write"), result="poem"))
    async with make_client(pinkfish_for(emulator, wait=wait)) as client:
        outcome = await client.run("trg_poem", result_type=PinkfishRun)
    run = emulator.executions[0]
    assert outcome.result == PinkfishRun(
        id=run.id,
        automationId=emulator.pinkfish_automation_id("trg_poem"),
        results=[StepResult(stepIndex=1, exitCode=0), StepResult(stepIndex=2, exitCode=0)],
    )
    assert isinstance(outcome.raw_result, dict)


# -- secrets --------------------------------------------------------------------------------


async def test_the_key_in_the_url_path_never_shows(
    make_client: Callable[..., wt.AsyncClient],
    emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator.pinkfish_api_key = KEY
    emulator.scenario("trg_poem", Scenario(files=FILES, designated="poem.txt"))
    emulator.add_fault(Fault.server_error(status=503, on="poll", platform="pinkfish"))
    emulator.add_fault(Fault.rate_limited(retry_after=0.01, on="result", platform="pinkfish"))
    events: list[wt.Event] = []
    provider = pinkfish_for(emulator)
    caplog.set_level(logging.DEBUG, logger="workflow_trigger")
    async with make_client(provider, on_event=events.append) as client:
        outcome = await client.run("trg_poem")
        assert outcome.ok
        assert logged(emulator, "poll")[-1].path.startswith(f"/ext/webhook/{KEY}/runs/")
        ex = outcome.execution
        assert ex is not None

        # exceptions: a poll whose connection drops every time, a refused key
        # (aiohttp itself resends a GET once when a kept-alive connection drops)
        emulator.add_fault(Fault.drop(count=100, on="poll", platform="pinkfish"))
        with pytest.raises(wt.TransportError) as dropped:
            await client.status(ex)
        emulator.clear_faults()
        emulator.pinkfish_api_key = "pf_another_key"
        with pytest.raises(wt.AuthenticationError, match="URL path") as refused:
            await client.status(ex)
        with pytest.raises(wt.PollTimeout) as timeout:
            emulator.pinkfish_api_key = KEY
            emulator.scenario("long", Scenario(duration=30.0))
            await client.run("long", timeout=0.1)

    shown = [
        caplog.text,
        *(str(e) for e in events),
        *(repr(e) for e in events),
        repr(provider),
        repr(client),
        repr(ex),
        repr(outcome),
        json.dumps(outcome.result),
        base64.urlsafe_b64decode(ex.token()[4:] + "==").decode(),
    ]
    for error in (dropped.value, refused.value, timeout.value):
        shown += [str(error), repr(error), repr(error.args)]
    for text in shown:
        assert KEY not in text and KEY_IN_PATH not in text, text
    requests = [r for r in caplog.records if r.levelno == logging.DEBUG and " -> " in r.message]
    assert len(requests) >= 5 and any("503" in r.message for r in requests)
    webhook_urls = [r.message for r in requests if "/ext/webhook/" in r.message]
    assert webhook_urls and all("/ext/webhook/***/runs/" in m for m in webhook_urls)
    assert "/ext/webhook/***/runs/" in str(dropped.value)
    retries = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert any("/ext/webhook/***/runs/" in m and "/status" in m for m in retries)
    assert any("/results" in m for m in retries)
    assert any(isinstance(e, wt.RetryEvent) and "/ext/webhook/***/" in e.url for e in events)


# -- defaults -----------------------------------------------------------------------------------


async def test_the_default_poll_interval_is_three_seconds(emulator: Emulator) -> None:
    provider = pinkfish_for(emulator)
    assert provider.default_poll.interval == 3.0
    assert wt.Pinkfish("pf_key").default_poll.interval == 3.0
    assert wt.Pinkfish("pf_key").base_url == "https://triggers.app.pinkfish.ai"
    async with wt.AsyncClient(provider) as client:
        assert client.poll_policy.interval == 3.0 and client.rate_limit is None
    async with wt.AsyncClient(provider, poll=FAST) as client:
        assert client.poll_policy is FAST  # a client's policy replaces the default whole


# -- synchronous mode and the webhook trigger -----------------------------------------------------


async def test_sync_mode_is_one_request_returning_the_finished_run(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    emulator.scenario("trg_poem", Scenario(steps=("Research", "Write"), result={"poem": POEM}))
    async with make_client(pinkfish_for(emulator, wait="sync")) as client:
        outcome = await client.run("trg_poem", {"user_request": "a poem"})
    assert outcome.ok and outcome.polls == 0
    assert emulator.requests == 1
    (trigger,) = emulator.request_log
    assert trigger.headers["x-api-wait"] == "true"
    assert trigger.headers["X-API-KEY"] == emulator.pinkfish_api_key
    results = _results(outcome)
    assert results[-1]["result"] == {"resultType": "json", "result": {"poem": POEM}}
    assert [r["stepIndex"] for r in results] == [1, 2]
    assert outcome.execution is not None
    assert outcome.execution.execution_id == emulator.executions[0].id
    assert outcome.execution.extras["automation_id"] == emulator.pinkfish_automation_id("trg_poem")


async def test_sync_mode_reports_a_failed_run_in_one_request(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    emulator.scenario("trg_poem", Scenario(status="failed", error={"message": "no muse"}))
    async with make_client(pinkfish_for(emulator, wait="sync")) as client:
        outcome = await client.run("trg_poem")
    assert outcome.status is wt.Status.FAILED and outcome.error is not None
    assert emulator.requests == 1


async def test_sync_mode_outlasts_the_request_timeout(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    emulator.scenario("trg_poem", Scenario(duration=0.3, result="late"))  # held 0.3 s
    provider = pinkfish_for(emulator, wait="sync")
    async with make_client(provider, request_timeout=0.1) as client:
        outcome = await client.run("trg_poem")
    assert outcome.ok and emulator.requests == 1


async def test_sync_mode_polls_on_after_the_platform_answers_timeout(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    emulator.pinkfish_sync_limit = 0.01
    emulator.scenario(
        "trg_poem", Scenario(duration=30.0, files=FILES, designated="poem.txt", result="done")
    )
    async with make_client(pinkfish_for(emulator, wait="sync")) as client:
        outcome: list[wt.Outcome[Any]] = []

        async def run() -> None:
            outcome.append(await client.run("trg_poem"))

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await emulator.wait_until(lambda: emulator.poll_requests >= 1)
                emulator.executions[0].advance(30.0)
    (done,) = outcome
    trigger = logged(emulator, "trigger")
    assert len(trigger) == 1 and trigger[0].status == 200
    assert done.ok and done.polls >= 1
    assert emulator.operation_requests("result") == 1
    assert [r["stepIndex"] for r in _results(done)] == [1]
    assert done.designated_output is not None and done.designated_output.name == "poem.txt"
    assert done.execution is not None and done.execution.execution_id == emulator.executions[0].id


@pytest.mark.parametrize("wait", ["async", "sync"])
async def test_the_webhook_trigger_puts_the_key_in_the_path(
    make_client: Callable[..., wt.AsyncClient],
    emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
    wait: str,
) -> None:
    emulator.pinkfish_api_key = KEY
    emulator.scenario("trg_poem", Scenario(result={"n": 1}))
    caplog.set_level(logging.DEBUG, logger="workflow_trigger")
    async with make_client(pinkfish_for(emulator, trigger="webhook", wait=wait)) as client:
        outcome = await client.run("trg_poem", {"a": 1})
    assert outcome.ok and isinstance(_results(outcome), list)
    trigger = logged(emulator, "trigger")[0]
    assert trigger.path == f"/ext/webhook/{KEY}/triggers/trg_poem"
    assert "X-API-KEY" not in trigger.headers
    assert trigger.headers["x-api-wait"] == ("true" if wait == "sync" else "false")
    assert "/ext/webhook/***/triggers/trg_poem" in caplog.text
    assert KEY not in caplog.text and KEY_IN_PATH not in caplog.text


async def test_the_webhook_trigger_with_a_wrong_key_names_the_path_key(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    async with make_client(pinkfish_for(emulator, trigger="webhook", api_key=KEY)) as client:
        with pytest.raises(wt.AuthenticationError, match="URL path") as info:
            await client.trigger("trg_poem")
    assert info.value.status_code == 401
    assert KEY not in str(info.value) and KEY_IN_PATH not in str(info.value)


# -- batches and the blocking client ---------------------------------------------------------------


async def test_run_many_fetches_each_run_results_once(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("trg_poem", Scenario(duration=(0.0, 0.05), files={"out.txt": "x"}))
    outcomes = [o async for o in client.run_many("trg_poem", [{"i": i} for i in range(12)])]
    assert sorted(o.index for o in outcomes if o.index is not None) == list(range(12))
    assert all(o.ok and [a.name for a in o.artifacts] == ["out.txt"] for o in outcomes)
    assert emulator.triggers("trg_poem") == 12
    assert emulator.operation_requests("result") == 12


@pytest.fixture
def blocking(threaded_emulator: Emulator) -> Iterator[tuple[wt.Client, Emulator]]:
    with wt.Client(pinkfish_for(threaded_emulator), poll=FAST, retry=FAST_RETRY) as client:
        yield client, threaded_emulator


def test_the_blocking_client_runs_and_downloads(
    blocking: tuple[wt.Client, Emulator], tmp_path: Path
) -> None:
    client, emu = blocking
    emu.scenario("trg_poem", Scenario(files=FILES, designated="poem.txt"))
    outcome = client.run("trg_poem", {"user_request": "a poem"})
    assert outcome.ok and isinstance(_results(outcome), list)
    assert outcome.designated_output is not None
    assert client.download(outcome.designated_output) == POEM.encode()
    path = client.download(outcome.designated_output, to=tmp_path / "poem.txt")
    assert path.read_text() == POEM
    outcomes = list(client.run_many("trg_poem", [{}, {}]))
    assert len(outcomes) == 2 and all(o.ok for o in outcomes)
    assert emu.triggers("trg_poem") == 3 and emu.operation_requests("result") == 3
