"""The emulator's platform-neutral machinery, exercised through the Codika routes:
faults, counters, seeded durations, waits and the server lifecycle."""

from __future__ import annotations

import email.utils
import json
import sys
import time
from typing import TYPE_CHECKING

import aiohttp
import anyio
import pytest

from workflow_trigger.testing import Emulator, Fault, Scenario, serve

if TYPE_CHECKING:
    from conftest import CodikaHTTP


# -- faults --------------------------------------------------------------------


async def test_server_error_on_poll(emulator: Emulator, codika: CodikaHTTP) -> None:
    emulator.add_fault(Fault.server_error(count=2, status=503, on="poll"))
    execution_id = await codika.start("main-workflow")  # triggers are unaffected
    for _ in range(2):
        answer = await codika.poll(execution_id)
        assert answer.status == 503
        assert answer.json == {
            "success": False,
            "error": "Service Unavailable",
            "code": "SERVICE_UNAVAILABLE",
        }
    assert (await codika.poll(execution_id)).status == 200
    assert emulator.polls(execution_id) == 3
    assert [r.fault for r in emulator.request_log] == [None, "server_error", "server_error", None]
    assert emulator.faults_remaining == 0


async def test_faults_apply_before_authentication(codika: CodikaHTTP) -> None:
    codika.emu.add_fault(Fault.server_error())
    assert (await codika.trigger("main-workflow", headers={})).status == 500


async def test_rate_limited_seconds(emulator: Emulator, codika: CodikaHTTP) -> None:
    emulator.add_fault(Fault.rate_limited(count=1, retry_after=0.2, on="poll"))
    emulator.add_fault(Fault.rate_limited(count=1, retry_after=3, on="poll"))
    emulator.add_fault(Fault.rate_limited(count=1, retry_after=None, on="poll"))
    execution_id = await codika.start("main-workflow")
    answers = [await codika.poll(execution_id) for _ in range(3)]
    assert [a.status for a in answers] == [429, 429, 429]
    assert answers[0].json["code"] == "RATE_LIMITED"
    assert answers[0].headers["Retry-After"] == "0.2"
    assert answers[1].headers["Retry-After"] == "3"
    assert "Retry-After" not in answers[2].headers


async def test_rate_limited_http_date(emulator: Emulator, codika: CodikaHTTP) -> None:
    emulator.add_fault(Fault.rate_limited(retry_after=2, retry_after_date=True, on="trigger"))
    before = time.time()
    answer = await codika.trigger("main-workflow")
    assert answer.status == 429
    retry_at = email.utils.parsedate_to_datetime(answer.headers["Retry-After"]).timestamp()
    assert before + 2 <= retry_at <= time.time() + 3
    assert emulator.executions == []


async def test_malformed_body(emulator: Emulator, codika: CodikaHTTP) -> None:
    emulator.add_fault(Fault.malformed(count=1, on="poll"))
    execution_id = await codika.start("main-workflow")
    answer = await codika.poll(execution_id)
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.body)
    # A malformed answer did not show the terminal status: the run is still in flight.
    assert emulator.in_flight == 1
    assert (await codika.poll(execution_id)).json["execution"]["status"] == "success"
    assert emulator.in_flight == 0


async def test_slow(emulator: Emulator, codika: CodikaHTTP) -> None:
    emulator.add_fault(Fault.slow(count=1, delay=0.1, on="poll"))
    execution_id = await codika.start("main-workflow")
    started = time.monotonic()
    assert (await codika.poll(execution_id)).status == 200
    assert time.monotonic() - started >= 0.1
    assert emulator.request_log[-1].fault == "slow"


async def test_drop_trigger(emulator: Emulator, codika: CodikaHTTP) -> None:
    emulator.add_fault(Fault.drop(count=1, on="trigger"))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await codika.trigger("main-workflow", {"payload": {"a": 1}})
    assert emulator.trigger_requests == 1
    assert emulator.triggers("main-workflow") == 0
    assert emulator.executions == []
    assert emulator.request_log[0].status is None
    assert emulator.request_log[0].fault == "drop"
    assert (await codika.trigger("main-workflow")).status == 200


async def test_fault_restricted_to_a_workflow(emulator: Emulator, codika: CodikaHTTP) -> None:
    emulator.add_fault(Fault.server_error(count=1, workflow="target"))
    other = await codika.start("other")
    assert (await codika.poll(other)).status == 200
    assert (await codika.trigger("target")).status == 500
    assert (await codika.trigger("target")).status == 200


async def test_fault_on_poll_of_one_workflow(emulator: Emulator, codika: CodikaHTTP) -> None:
    emulator.add_fault(Fault.server_error(count=1, workflow="target", on="poll"))
    other, target = await codika.start("other"), await codika.start("target")
    assert (await codika.poll(other)).status == 200
    assert (await codika.poll(target)).status == 500
    assert (await codika.poll(target)).status == 200


async def test_faults_are_consumed_in_order(emulator: Emulator, codika: CodikaHTTP) -> None:
    emulator.add_fault(Fault.server_error(status=502, on="trigger"))
    emulator.add_fault(Fault.server_error(status=504))
    statuses = [(await codika.trigger("w")).status for _ in range(3)]
    assert statuses == [502, 504, 200]
    emulator.add_fault(Fault.server_error())
    emulator.clear_faults()
    assert emulator.faults_remaining == 0


# -- counters ------------------------------------------------------------------


async def test_counters_are_exact(emulator: Emulator, codika: CodikaHTTP) -> None:
    emulator.scenario("long", Scenario(duration=60))
    first = await codika.start("main-workflow")
    second = await codika.start("main-workflow")
    running = await codika.start("long")
    assert (await codika.trigger("main-workflow", headers={})).status == 401
    for execution_id in (first, first, second, running):
        await codika.poll(execution_id)
    async with codika.session.get(emulator.base_url + "/nowhere") as response:
        assert response.status == 404

    assert emulator.requests == 9
    assert emulator.trigger_requests == 4
    assert emulator.poll_requests == 4
    assert emulator.triggers("main-workflow") == 2
    assert emulator.triggers("long") == 1
    assert emulator.triggers("never") == 0
    assert (emulator.polls(first), emulator.polls(second), emulator.polls(running)) == (2, 1, 1)
    assert [r.status for r in emulator.request_log] == [200, 200, 200, 401, 200, 200, 200, 200, 404]
    assert emulator.request_log[0].started is emulator.executions[0]
    assert [e.workflow_id for e in emulator.executions] == ["main-workflow"] * 2 + ["long"]

    emulator.reset_counters()
    assert (emulator.requests, emulator.trigger_requests, emulator.poll_requests) == (0, 0, 0)
    assert emulator.triggers("main-workflow") == 0 and emulator.polls(first) == 0
    assert emulator.request_log == []
    assert len(emulator.executions) == 3  # runs survive a reset
    assert emulator.max_in_flight == emulator.in_flight == 1  # "long" is still running


async def test_max_in_flight_counts_until_a_poll_shows_the_end(
    emulator: Emulator, codika: CodikaHTTP
) -> None:
    ids = [await codika.start("w") for _ in range(3)]
    assert (emulator.in_flight, emulator.max_in_flight) == (3, 3)
    await codika.poll(ids[0])
    await codika.poll(ids[0])  # seeing the end twice counts once
    assert (emulator.in_flight, emulator.max_in_flight) == (2, 3)
    ids.append(await codika.start("w"))
    for execution_id in ids:
        await codika.poll(execution_id)
    assert (emulator.in_flight, emulator.max_in_flight) == (0, 3)


async def test_wait_for_polls_and_triggers(emulator: Emulator, codika: CodikaHTTP) -> None:
    execution_id = await codika.start("w")
    seen: list[str] = []

    async def waiter() -> None:
        await emulator.wait_for_polls(execution_id, 2)
        seen.append("polls")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await codika.poll(execution_id)
            assert seen == []
            await codika.poll(execution_id)
        assert seen == ["polls"]
        await emulator.wait_for_triggers("w", 1)  # already true: returns at once
        await emulator.wait_for_requests(3)


# -- seeding -------------------------------------------------------------------


async def _durations(seed: int) -> list[float]:
    async with Emulator(seed=seed) as emu, aiohttp.ClientSession() as session:
        emu.scenario("ranged", Scenario(duration=(10.0, 20.0)))
        url = f"{emu.base_url}/webhook/{emu.codika_instance_id}/ranged"
        for _ in range(5):
            async with session.post(url, headers={"X-API-Key": emu.codika_api_key}) as response:
                assert response.status == 200
        return [e.duration for e in emu.executions]


async def test_seeded_duration_ranges_are_deterministic() -> None:
    first, again, other = await _durations(0), await _durations(0), await _durations(1)
    assert first == again
    assert first != other
    assert all(10.0 <= d <= 20.0 for d in first)
    assert len(set(first)) == 5


# -- lifecycle -----------------------------------------------------------------


async def test_lifecycle_and_options() -> None:
    emu = Emulator(codika_instance_id="pi_custom", codika_api_key="ck_custom")
    with pytest.raises(RuntimeError):
        emu.base_url  # noqa: B018 - not running yet
    await emu.start()
    try:
        assert emu.running
        assert emu.base_url.startswith("http://127.0.0.1:") and emu.port != 0
        assert (emu.codika_instance_id, emu.codika_api_key) == ("pi_custom", "ck_custom")
        assert emu.codika_org_key == "cko_test_org"
        assert emu.codika_signing_secret == "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        with pytest.raises(RuntimeError):
            await emu.start()
    finally:
        await emu.close()
    assert not emu.running
    await emu.close()  # idempotent


async def test_serve_runs_until_cancelled() -> None:
    ready: list[Emulator] = []
    started = anyio.Event()

    def on_ready(emu: Emulator) -> None:
        ready.append(emu)
        started.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: serve("127.0.0.1", 0, on_ready=on_ready))
            await started.wait()
            emu = ready[0]
            async with aiohttp.ClientSession() as session:
                url = f"{emu.base_url}/status/{emu.codika_instance_id}/x"
                async with session.get(url, params={"api_key": emu.codika_api_key}) as response:
                    assert response.status == 404
            tg.cancel_scope.cancel()
    assert not ready[0].running


async def test_refused_url_refuses_connections(emulator: Emulator) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(emulator.refused_url + "/status/pi_test/x")
    assert emulator.requests == 0


async def test_standalone_process_prints_its_url() -> None:
    command = [sys.executable, "-m", "workflow_trigger.testing", "--port", "0"]
    async with await anyio.open_process(command) as process:
        try:
            assert process.stdout is not None
            with anyio.fail_after(10):
                output = b""
                async for chunk in process.stdout:
                    output += chunk
                    if b"/results)" in output:  # the end of the banner
                        break
            base_url, *banner = output.decode().splitlines()
            assert base_url.startswith("http://127.0.0.1:")
            for platform in ("Codika:", "Runs API:", "AwaitStep:", "Pinkfish:"):
                assert any(line.startswith(platform) for line in banner)
            assert sum(line.strip().startswith("curl ") for line in banner) == 4
            async with aiohttp.ClientSession() as session:
                url = f"{base_url}/webhook/pi_test/main-workflow"
                async with session.post(url, headers={"X-API-Key": "ck_test_key"}) as response:
                    assert response.status == 200
        finally:
            process.terminate()
