"""The workflow-trigger command, run as a real subprocess against the emulator."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from workflow_trigger.testing import Emulator, Scenario

SCRIPT = shutil.which("workflow-trigger", path=str(Path(sys.executable).parent))
COMMAND = [SCRIPT] if SCRIPT else [sys.executable, "-m", "workflow_trigger.cli"]


def codika_env(emulator: Emulator, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODIKA_")}
    env.update(
        CODIKA_API_KEY=emulator.codika_api_key,
        CODIKA_PROCESS_INSTANCE_ID=emulator.codika_instance_id,
        CODIKA_BASE_URL=emulator.base_url,
        COLUMNS="120",
    )
    env.update(extra)
    return env


async def cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    result = await anyio.run_process([*COMMAND, *args], env=env, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_run_prints_the_result_as_json(emulator: Emulator) -> None:
    emulator.scenario("wf", Scenario(duration=0.05, result=lambda p: {"echo": p}))
    code, out, err = await cli(
        "run", "codika", "wf", "--payload", '{"a": 1}', "--interval", "0.02",
        env=codika_env(emulator),
    )  # fmt: skip
    assert code == 0, err
    outcome = json.loads(out)
    assert outcome["status"] == "succeeded" and outcome["result"] == {"echo": {"a": 1}}
    assert outcome["token"].startswith("wt1.")
    assert emulator.triggers("wf") == 1


async def test_run_reads_the_payload_from_a_file(emulator: Emulator, tmp_path: Path) -> None:
    emulator.scenario("wf", Scenario(result=lambda p: p))
    payload = tmp_path / "payload.json"
    payload.write_text('{"from": "file"}')
    code, out, _ = await cli(
        "run", "codika", "wf", "--payload-file", str(payload), "--interval", "0.02",
        env=codika_env(emulator),
    )  # fmt: skip
    assert code == 0 and json.loads(out)["result"] == {"from": "file"}


async def test_a_failed_workflow_exits_1_with_the_platforms_message(emulator: Emulator) -> None:
    emulator.scenario("bad", Scenario(status="failed", error={"message": "node exploded"}))
    code, out, err = await cli(
        "run", "codika", "bad", "--interval", "0.02", env=codika_env(emulator)
    )
    assert code == 1
    assert json.loads(out)["error"]["message"] == "node exploded"
    assert "node exploded" in err


async def test_a_refused_key_exits_3_without_showing_it(emulator: Emulator) -> None:
    env = codika_env(emulator, CODIKA_API_KEY="ck_leaked_if_shown")
    code, out, err = await cli("run", "codika", "wf", env=env)
    assert code == 3 and out == ""
    assert "refused" in err and "ck_leaked_if_shown" not in err


async def test_the_key_can_come_from_a_file(emulator: Emulator, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(emulator.codika_api_key + "\n")
    env = codika_env(emulator)
    del env["CODIKA_API_KEY"]
    code, _, err = await cli(
        "run", "codika", "wf", "--api-key-file", str(key_file), "--interval", "0.02", env=env
    )
    assert code == 0, err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("run", "codika", "wf"), "CODIKA_API_KEY"),
        (("run", "codika", "wf", "--payload", "{not json"), "not valid JSON"),
        (("wait", "not-a-token"), "token"),
    ],
)
async def test_bad_input_exits_2_saying_what_to_do(
    emulator: Emulator, args: tuple[str, ...], needle: str
) -> None:
    env = codika_env(emulator)
    if "CODIKA_API_KEY" in needle:
        del env["CODIKA_API_KEY"]
    code, _, err = await cli(*args, env=env)
    assert code == 2 and needle in err


async def test_status_wait_and_cancel_by_token(emulator: Emulator) -> None:
    emulator.scenario("wf", Scenario(duration=0.2, result={"done": True}))
    env = codika_env(emulator)
    code, out, _ = await cli("run", "codika", "wf", "--interval", "0.02", env=env)
    token = json.loads(out)["token"]
    code, out, _ = await cli("status", token, env=env)
    assert code == 0 and json.loads(out)["status"] == "succeeded"
    code, out, _ = await cli("wait", token, "--interval", "0.02", env=env)
    assert code == 0 and json.loads(out)["result"] == {"done": True}
    code, _, err = await cli("cancel", token, env=env)
    assert code == 3 and "cancel" in err  # Codika documents no cancel operation


@pytest.mark.parametrize(
    "command", ["demo", "run", "batch", "status", "wait", "cancel", "emulator"]
)
async def test_every_command_has_help_with_an_example(command: str) -> None:
    code, out, _ = await cli(command, "--help", env=dict(os.environ))
    assert code == 0 and "example:" in out


def write_payloads(path: Path, n: int) -> None:
    path.write_text("".join(json.dumps({"id": f"item-{i}", "n": i}) + "\n" for i in range(n)))


def read_outcomes(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_batch_writes_one_outcome_per_line_and_resumes_from_its_journal(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.scenario("wf", Scenario(duration=(0.0, 0.05), result=lambda p: p["n"]))
    inputs, outputs, journal = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "j.sqlite"
    write_payloads(inputs, 40)
    args = (
        "batch", "codika", "wf", "--input", str(inputs), "--output", str(outputs),
        "--concurrency", "10", "--journal", str(journal), "--key", "id", "--interval", "0.02",
    )  # fmt: skip
    code, _, err = await cli(*args, env=codika_env(emulator))
    assert code == 0, err
    outcomes = read_outcomes(outputs)
    assert sorted(o["key"] for o in outcomes) == sorted(f"item-{i}" for i in range(40))
    assert all(o["status"] == "succeeded" and o["result"] == o["index"] for o in outcomes)
    triggers = emulator.trigger_requests
    code, _, err = await cli(*args, env=codika_env(emulator))
    assert code == 0 and emulator.trigger_requests == triggers
    assert len(read_outcomes(outputs)) == 40  # rewritten from the journal, not appended
    assert "40 from the journal" in err and "0 triggered" in err


async def test_ctrl_c_stops_a_batch_cleanly_and_the_same_command_resumes(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.scenario("wf", Scenario(duration=(0.2, 0.6), result=lambda p: p["n"]))
    inputs, outputs, journal = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "j.sqlite"
    write_payloads(inputs, 60)
    args = (
        "batch", "codika", "wf", "--input", str(inputs), "--output", str(outputs),
        "--concurrency", "10", "--journal", str(journal), "--key", "id", "--interval", "0.02",
    )  # fmt: skip
    async with await anyio.open_process([*COMMAND, *args], env=codika_env(emulator)) as process:
        with anyio.fail_after(30):
            await emulator.wait_until(lambda: emulator.triggers("wf") >= 15)
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(30):
            assert await process.wait() == 130
    first = read_outcomes(outputs)
    assert len(first) < 60
    code, _, err = await cli(*args, env=codika_env(emulator))
    assert code == 0, err
    outcomes = read_outcomes(outputs)
    done = Counter(o["key"] for o in outcomes if o["status"] == "succeeded")
    assert set(done) == {f"item-{i}" for i in range(60)}
    runs = Counter(e.payload["id"] for e in emulator.executions)
    flagged = {o["key"] for o in outcomes if o["possibly_duplicated"]}
    assert all(n == 1 for key, n in runs.items() if key not in flagged)
