"""The emulator's platform-neutral pieces added for the multi-platform server: the run
clock, the new Scenario and Fault options, Codika's view of the new outcomes, and the
standalone banner."""

from __future__ import annotations

import json
import shlex
import time
from typing import TYPE_CHECKING

import aiohttp
import pytest

from workflow_trigger.testing import OUTCOMES, Emulator, Fault, Scenario
from workflow_trigger.testing._clock import RunClock

if TYPE_CHECKING:
    from conftest import CodikaHTTP


# -- the run clock -----------------------------------------------------------------


def test_run_clock_pause_advance_and_reached_at() -> None:
    started = time.monotonic() - 10  # a run started ten seconds ago
    clock = RunClock(started)
    assert 10 <= clock.now() < 11
    assert clock.reached_at(4) == pytest.approx(started + 4)
    assert clock.reached_at(100) is None
    clock.pause()
    frozen = clock.now()
    assert clock.now() == frozen and not clock.going
    clock.advance(5)  # moves the run time even while paused
    assert clock.now() == frozen + 5
    assert clock.reached_at(frozen + 2) == clock.last_change  # reached by the jump
    clock.resume()
    assert clock.going and clock.now() >= frozen + 5
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_run_clock_gate_holds_until_lifted() -> None:
    clock = RunClock(time.monotonic() - 10, limit=3)
    assert clock.gated and clock.now() == 3
    clock.advance(100)
    assert clock.now() == 3
    assert clock.reached_at(4) is None
    clock.lift()
    assert not clock.gated and 3 <= clock.now() < 4  # continues from the gate
    assert clock.reached_at(3) is not None


# -- scenario and fault options ----------------------------------------------------


def test_new_scenario_fields() -> None:
    assert "timeout" in OUTCOMES
    scenario = Scenario(steps=["a", "b"], required_inputs=("x",), files={"t.txt": "hé"})
    assert scenario.steps == ("a", "b") and scenario.required_inputs == ("x",)
    assert scenario.files == {"t.txt": "hé".encode()}
    assert Scenario().steps == () and Scenario().queued is None
    with pytest.raises(TypeError):
        Scenario(steps="abc")
    with pytest.raises(ValueError):
        Scenario(queued=-1)


def test_faults_take_the_new_operations_and_a_platform() -> None:
    for operation in ("result", "control", "download"):
        assert Fault.server_error(on=operation).on == operation
    assert Fault.rate_limited(platform="pinkfish").platform == "pinkfish"
    assert Fault.malformed(platform="awaitstep").matches("awaitstep", "poll", None)
    assert not Fault.slow(platform="awaitstep").matches("codika", "poll", None)
    assert Fault.drop(platform="runs_api").platform == "runs_api"
    with pytest.raises(ValueError):
        Fault("drop", on="upload")  # type: ignore[arg-type]


# -- Codika and the new outcomes ------------------------------------------------------


async def test_codika_reports_timeout_and_terminated_as_failed(
    emulator: Emulator, codika: CodikaHTTP
) -> None:
    emulator.scenario("slowpoke", Scenario(status="timeout"))
    emulator.scenario("long", Scenario(duration=60))
    execution = (await codika.poll(await codika.start("slowpoke"))).json["execution"]
    assert execution["status"] == "failed"
    assert execution["errorDetails"] == {
        "message": "Workflow execution timed out",
        "type": "timeout",
    }
    long_id = await codika.start("long")
    emulator.executions[1].terminate()
    execution = (await codika.poll(long_id)).json["execution"]
    assert execution["status"] == "failed" and emulator.in_flight == 0


async def test_a_paused_run_stays_pending_on_codika(emulator: Emulator, codika: CodikaHTTP) -> None:
    emulator.scenario("wf", Scenario(duration=10, result=1))
    execution_id = await codika.start("wf")
    execution = emulator.executions[0]
    execution.pause()
    assert (await codika.poll(execution_id)).json["execution"]["status"] == "pending"
    execution.resume()
    execution.advance(10)
    assert (await codika.poll(execution_id)).json["execution"]["resultData"] == 1


# -- the standalone banner -----------------------------------------------------------


async def test_describe_lists_credentials_and_working_curl_lines(emulator: Emulator) -> None:
    text = emulator.describe()
    for value in (
        emulator.base_url,
        emulator.codika_api_key,
        emulator.runs_api_api_key,
        emulator.awaitstep_api_key,
        emulator.awaitstep_connection_id,
        emulator.pinkfish_api_key,
        emulator.pinkfish_automation_id("main-workflow"),
    ):
        assert value in text
    curls = [line.strip() for line in text.splitlines() if line.strip().startswith("curl")]
    assert len(curls) == 4
    async with aiohttp.ClientSession() as session:
        for line in curls:
            words = shlex.split(line)
            url = next(word for word in words if word.startswith("http"))
            headers = dict(
                words[i + 1].split(": ", 1) for i, word in enumerate(words) if word == "-H"
            )
            body = words[words.index("-d") + 1]
            json.loads(body)
            async with session.post(url, data=body, headers=headers) as response:
                assert response.status in (200, 201), line
    assert emulator.trigger_requests == 4 and len(emulator.executions) == 4
    assert {e.platform for e in emulator.executions} == {
        "codika",
        "runs_api",
        "awaitstep",
        "pinkfish",
    }


def test_one_request_sees_one_instant_of_every_run_clock() -> None:
    import time

    from workflow_trigger.testing._clock import RunClock, catch_up, one_instant

    clock = RunClock(time.monotonic())
    with one_instant():
        first = clock.now()
        time.sleep(0.005)  # time passes, the answer being rendered does not see it
        assert clock.now() == first
        catch_up()  # a handler that waited on purpose sees the time it waited
        assert clock.now() > first
    assert clock.now() > first + 0.004
