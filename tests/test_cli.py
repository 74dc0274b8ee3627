"""The workflow-trigger command, run as a real subprocess against the emulator."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from _support import COMMAND, codika_for

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, Scenario


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
    requests = emulator.requests
    code, _, err = await cli("cancel", token, env=env)
    # Codika documents no cancel operation: a usage error, and nothing is sent
    assert code == 2 and "cancel" in err and "Traceback" not in err
    assert emulator.requests == requests


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


# -- runs that end without an outcome ------------------------------------------------------


def assert_not_finished(out: str, err: str, emulator: Emulator) -> str:
    printed = json.loads(out)
    token: str = printed["token"]
    assert printed["finished"] is False and printed["workflow_id"] == "slow"
    assert wt.Execution.from_token(token).execution_id == emulator.executions[0].id
    assert f"workflow-trigger wait {token}" in err
    return token


async def test_a_run_past_its_timeout_prints_the_token_to_wait_on(emulator: Emulator) -> None:
    emulator.scenario("slow", Scenario(duration=60, result={"late": True}))
    env = codika_env(emulator)
    code, out, err = await cli(
        "run", "codika", "slow", "--timeout", "0.3", "--interval", "0.02", env=env
    )
    assert code == 3 and "Traceback" not in err
    token = assert_not_finished(out, err, emulator)
    emulator.executions[0].advance(60)
    code, out, _ = await cli("wait", token, "--interval", "0.02", env=env)
    assert code == 0 and json.loads(out)["result"] == {"late": True}
    assert emulator.triggers("slow") == 1


async def test_ctrl_c_during_a_run_prints_the_token_and_exits_130(emulator: Emulator) -> None:
    emulator.scenario("slow", Scenario(duration=60))
    args = ["run", "codika", "slow", "--interval", "0.02"]
    async with await anyio.open_process([*COMMAND, *args], env=codika_env(emulator)) as process:
        with anyio.fail_after(30):
            await emulator.wait_until(lambda: emulator.poll_requests >= 2)
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(30):
            assert await process.wait() == 130
        assert process.stdout is not None and process.stderr is not None
        out = (await process.stdout.receive()).decode()
        err = b""
        async for chunk in process.stderr:
            err += chunk
    assert "Traceback" not in err.decode()
    assert_not_finished(out, err.decode(), emulator)


async def test_wait_past_its_timeout_prints_the_token_again(emulator: Emulator) -> None:
    emulator.scenario("slow", Scenario(duration=60))
    env = codika_env(emulator)
    async with wt.AsyncClient(codika_for(emulator)) as client:
        token = (await client.trigger("slow")).token()
    code, out, err = await cli("wait", token, "--timeout", "0.2", "--interval", "0.02", env=env)
    assert code == 3
    assert assert_not_finished(out, err, emulator) == token


# -- usage errors: a message and exit 2, never a traceback ---------------------------------

BATCH = ("batch", "codika", "wf", "--input")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ("batch", "codika", "wf", "--input", "IN", "--output", "/missing/dir/o.jsonl"),
            "--output",
        ),
        (("emulator", "--port", "99999"), "65535"),
        (("emulator", "--port", "http"), "65535"),
        (("demo", "--count", "-5"), "--count"),
        (("demo", "--concurrency", "0"), "--concurrency"),
        (("run", "codika", "wf", "--timeout", "-1"), "--timeout"),
        (
            ("batch", "codika", "wf", "--input", "IN", "--output", "OUT", "--concurrency", "0"),
            ">= 1",
        ),
        (("status", "TOKEN", "--interval", "1"), "unrecognized arguments: --interval"),
        (("cancel", "TOKEN", "--interval", "1"), "unrecognized arguments: --interval"),
        ((*BATCH, "/missing/in.jsonl", "--output", "OUT"), "--input"),
        (("run", "codika", "wf", "--payload-file", "/missing/p.json"), "/missing/p.json"),
    ],
)
async def test_user_errors_exit_2_with_a_message(
    emulator: Emulator, tmp_path: Path, args: tuple[str, ...], needle: str
) -> None:
    (tmp_path / "in.jsonl").write_text('{"n": 1}\n')
    paths = {"IN": str(tmp_path / "in.jsonl"), "OUT": str(tmp_path / "out.jsonl")}
    env = codika_env(emulator)
    async with wt.AsyncClient(codika_for(emulator)) as client:
        paths["TOKEN"] = (await client.trigger("wf")).token()
    code, out, err = await cli(*(paths.get(a, a) for a in args), env=env)
    assert (code, out) == (2, ""), err
    assert needle in err and "Traceback" not in err


async def test_an_emulator_port_in_use_is_a_message_not_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        code, out, err = await cli("emulator", "--port", port, env=dict(os.environ))
    assert (code, out) == (2, "")
    assert f"cannot serve on 127.0.0.1:{port}" in err and "Traceback" not in err


async def test_version() -> None:
    code, out, _ = await cli("--version", env=dict(os.environ))
    assert (code, out.strip()) == (0, f"workflow-trigger {wt.__version__}")


async def test_allow_insecure_http_sends_credentials_to_a_plain_http_host() -> None:
    # 0.0.0.0 is not a loopback address to the SDK's check, yet Linux delivers a
    # connection to it on this machine: a "remote" plain-http host that sends nothing out
    async with Emulator(host="127.0.0.1") as emulator:
        emulator.scenario("wf", Scenario(result={"ok": 1}))
        env = codika_env(emulator, CODIKA_BASE_URL=f"http://0.0.0.0:{emulator.port}")
        args = ("run", "codika", "wf", "--interval", "0.02")
        code, out, err = await cli(*args, env=env)
        assert (code, out) == (2, "")
        assert "--allow-insecure-http" in err and emulator.requests == 0
        code, out, err = await cli(*args, "--allow-insecure-http", env=env)
        assert code == 0, err
        assert json.loads(out)["result"] == {"ok": 1}


async def test_demo_writes_progress_and_summary_to_stderr_only() -> None:
    code, out, err = await cli("demo", "--count", "5", "--concurrency", "5", env=dict(os.environ))
    assert code in (0, 1) and out == ""
    assert "Summary" in err and "requests made" in err


# -- batch input ----------------------------------------------------------------------------


BAD_INPUT = '{"id": "a", "n": 0}\n{not json\n\n{"n": 2}\n{"id": "d", "n": 3}\n'


async def test_a_bad_input_line_is_that_items_error_and_the_batch_goes_on(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.scenario("wf", Scenario(result=lambda p: p["n"]))
    inputs, outputs = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inputs.write_text(BAD_INPUT)
    args = ("batch", "codika", "wf", "--input", str(inputs), "--output", str(outputs))
    code, out, err = await cli(*args, "--key", "id", "--interval", "0.02", env=codika_env(emulator))
    assert code == 1 and out == "" and "Traceback" not in err
    outcomes = read_outcomes(outputs)
    assert sorted(o["key"] for o in outcomes if o["status"] == "succeeded") == ["a", "d"]
    errors = sorted(o["exception"]["message"] for o in outcomes if o["exception"])
    assert len(outcomes) == 4 and len(errors) == 2
    assert f"{inputs}:2: not a JSON line" in errors[0]
    assert f"{inputs}:4: the payload has no 'id' field" in errors[1]
    assert emulator.triggers("wf") == 2
    assert "2 succeeded, 2 did not" in err


async def test_without_key_fixing_a_bad_line_leaves_every_other_item_done(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.scenario("wf", Scenario(result=lambda p: p["n"]))
    inputs, outputs = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inputs.write_text(BAD_INPUT)
    args = ("batch", "codika", "wf", "--input", str(inputs), "--output", str(outputs))
    args += ("--journal", str(tmp_path / "j.sqlite"), "--interval", "0.02")
    code, _, err = await cli(*args, env=codika_env(emulator))
    assert code == 1, err
    outcomes = read_outcomes(outputs)
    # journaled without --key: each item is named by its payload, not by its place
    good = {o["key"]: o["result"] for o in outcomes if o["status"]}
    assert sorted(good.values()) == [0, 2, 3] and all(k.startswith("payload:") for k in good)
    assert emulator.triggers("wf") == 3
    inputs.write_text(BAD_INPUT.replace("{not json", '{"n": 1}'))  # the line is fixed
    code, _, err = await cli(*args, env=codika_env(emulator))
    assert code == 0, err
    again = {o["key"]: o["result"] for o in read_outcomes(outputs)}
    assert sorted(again.values()) == [0, 1, 2, 3] and set(good) < set(again)
    assert emulator.triggers("wf") == 4  # only the fixed line ran
    assert "3 from the journal" in err and "1 triggered" in err


async def test_fail_fast_stops_at_the_first_bad_line_naming_it(
    emulator: Emulator, tmp_path: Path
) -> None:
    inputs, outputs = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inputs.write_text(BAD_INPUT)
    args = ("batch", "codika", "wf", "--input", str(inputs), "--output", str(outputs))
    code, out, err = await cli(*args, "--fail-fast", "--interval", "0.02", env=codika_env(emulator))
    assert (code, out) == (2, "")
    assert f"{inputs}:2: not a JSON line" in err and "Traceback" not in err
