"""Scenario files (``workflow-trigger emulator --scenarios FILE``): parsing and its errors."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import anyio
import pytest
from _support import COMMAND, emulator_process

import workflow_trigger as wt
from workflow_trigger.testing import Scenario
from workflow_trigger.testing._scenario_file import load_scenarios, parse_scenarios


def test_every_field_in_json_terms() -> None:
    scenarios = parse_scenarios(
        json.dumps(
            {
                "a": {
                    "duration": [0.1, 0.5],
                    "status": "failed",
                    "error": {"message": "boom"},
                    "steps": ["one", "two"],
                    "register_delay": 0.2,
                    "queued": 0.05,
                    "wait_for_event": "go",
                    "required_inputs": ["x"],
                    "files": {"out.txt": "text"},
                    "designated_output": "out.txt",
                },
                "b": {"duration": 2, "result": {"n": 1}},
                "*": {},
            }
        )
    )
    assert scenarios["a"] == Scenario(
        duration=(0.1, 0.5),
        status="failed",
        error={"message": "boom"},
        steps=("one", "two"),
        register_delay=0.2,
        queued=0.05,
        wait_for_event="go",
        required_inputs=("x",),
        files={"out.txt": b"text"},
        designated="out.txt",
    )
    assert scenarios["b"] == Scenario(duration=2, result={"n": 1})
    assert scenarios["*"] == Scenario()


def test_the_shipped_example_file_loads() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "platform_clients.json"
    scenarios = load_scenarios(path)
    assert scenarios["trigger_poem"].designated == "retrieved-poem.txt"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"wf": 3}', "workflow 'wf': expected an object"),
        ('{"wf": {"duraton": 1}}', "unknown field 'duraton'"),
        ('{"wf": {"duration": -1}}', "duration must be"),
        ('{"wf": {"duration": [3, 1]}}', "duration must be"),
        ('{"wf": {"duration": "1"}}', "duration must be"),
        ('{"wf": {"status": "done"}}', "status must be one of success"),
        ('{"wf": {"steps": "one"}}', "steps must be a list"),
        ('{"wf": {"files": {"a": 1}}}', "files must be"),
        ('{"wf": {"designated_output": "x.txt"}}', "'x.txt' is not in files"),
    ],
)
def test_a_mistake_is_named(text: str, needle: str) -> None:
    with pytest.raises(wt.InvalidInputError, match="scenarios") as caught:
        parse_scenarios(text, "scenarios")
    assert needle in str(caught.value)


async def cli(*args: str) -> tuple[int, str, str]:
    done = await anyio.run_process([*COMMAND, *args], check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "cannot read --scenarios"),
        ('{"wf": {"duration": "soon"}}', "workflow 'wf': duration must be"),
        ("{oops", "is not valid JSON"),
    ],
)
async def test_a_bad_scenario_file_exits_2_with_a_message(
    tmp_path: Path, content: str | None, needle: str
) -> None:
    path = tmp_path / "scenarios.json"
    if content is not None:
        path.write_text(content)
    code, out, err = await cli("emulator", "--port", "0", "--scenarios", str(path))
    assert (code, out) == (2, "")
    assert needle in err and "Traceback" not in err


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[str]:
    path = tmp_path / "scenarios.json"
    path.write_text(
        json.dumps(
            {
                "broken": {"status": "failed", "error": {"message": "node exploded"}},
                "*": {"duration": 0, "result": {"from": "default"}},
            }
        )
    )
    async with emulator_process("--scenarios", str(path), "--runs-api-rate-limit", "50") as url:
        yield url


async def test_the_command_line_emulator_serves_the_files_scenarios(served: str) -> None:
    env = {
        **os.environ,
        "CODIKA_API_KEY": "ck_test_key",
        "CODIKA_PROCESS_INSTANCE_ID": "pi_test",
        "CODIKA_BASE_URL": served,
    }
    failed = await anyio.run_process(
        [*COMMAND, "run", "codika", "broken", "--interval", "0.02"], env=env, check=False
    )
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["error"]["message"] == "node exploded"
    other = await anyio.run_process(
        [*COMMAND, "run", "codika", "anything", "--interval", "0.02"], env=env, check=False
    )
    assert other.returncode == 0 and json.loads(other.stdout)["result"] == {"from": "default"}
    # --runs-api-rate-limit: enforced, so announced
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{served}/api/v1/workflows/wf/run",
            json={"input": {}},
            headers={"x-api-key": "wfk_test_key"},
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["X-RateLimit-Limit"] == "50"
