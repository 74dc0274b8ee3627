"""``workflow-trigger batch`` with a journal, run as a real subprocess: outputs that resume."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import anyio
from test_cli import COMMAND, cli, codika_env, read_outcomes, write_payloads

from workflow_trigger.testing import Emulator, Scenario


def summary(err: str) -> dict[str, int]:
    found = re.search(
        r"(\d+) from the journal, (\d+) resumed from a token, (\d+) triggered, "
        r"(\d+) flagged possibly_duplicated",
        " ".join(err.split()),
    )
    assert found, err
    names = ("from_journal", "resumed", "triggered", "flagged")
    return dict(zip(names, map(int, found.groups()), strict=True))


async def test_each_item_has_one_output_line_across_a_kill_and_two_resumes(
    emulator: Emulator, tmp_path: Path
) -> None:
    n = 60
    emulator.scenario("wf", Scenario(duration=(0.1, 0.4), result=lambda p: p["n"]))
    inputs, outputs, journal = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "j.sqlite"
    write_payloads(inputs, n)
    args = (
        "batch", "codika", "wf", "--input", str(inputs), "--output", str(outputs),
        "--concurrency", "10", "--journal", str(journal), "--key", "id", "--interval", "0.02",
    )  # fmt: skip
    async with await anyio.open_process([*COMMAND, *args], env=codika_env(emulator)) as process:
        with anyio.fail_after(30):
            await emulator.wait_until(lambda: emulator.triggers("wf") >= 25)
        process.kill()  # SIGKILL mid-way: some lines written, some triggers on the wire
        await process.wait()
    assert 0 < len(read_outcomes(outputs)) < n
    code, _, err = await cli(*args, env=codika_env(emulator))
    assert code == 0, err
    outcomes = read_outcomes(outputs)
    assert sorted(o["key"] for o in outcomes) == sorted(f"item-{i}" for i in range(n))
    assert all(o["status"] == "succeeded" and o["result"] == o["index"] for o in outcomes)
    counts = summary(err)
    assert counts["from_journal"] > 0 and counts["triggered"] > 0
    assert counts["from_journal"] + counts["resumed"] + counts["triggered"] == n
    flagged = {o["key"] for o in outcomes if o["possibly_duplicated"]}
    assert counts["flagged"] == len(flagged)
    runs = Counter(e.payload["id"] for e in emulator.executions)
    assert all(runs[key] == 1 for key in runs if key not in flagged)
    # once more: everything from the journal, one line each, the same items flagged
    triggers = emulator.trigger_requests
    code, _, err = await cli(*args, env=codika_env(emulator))
    assert code == 0 and emulator.trigger_requests == triggers
    again = read_outcomes(outputs)
    assert len(again) == n and {o["key"] for o in again if o["possibly_duplicated"]} == flagged
    assert summary(err) == {
        "from_journal": n, "resumed": 0, "triggered": 0, "flagged": len(flagged)
    }  # fmt: skip


async def test_a_duplicate_key_is_refused_naming_its_input_line(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.scenario("wf", Scenario(duration=0.0, result=lambda p: p["n"]))
    inputs, outputs = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [{"id": "a", "n": 0}, {"id": "b", "n": 1}, None, {"id": "a", "n": 2}]
    inputs.write_text("".join((json.dumps(p) if p else "") + "\n" for p in lines))
    code, _, err = await cli(
        "batch", "codika", "wf", "--input", str(inputs), "--output", str(outputs),
        "--key", "id", "--interval", "0.02", env=codika_env(emulator),
    )  # fmt: skip
    assert code == 1, err
    assert Counter(e.payload["id"] for e in emulator.executions) == Counter("ab")
    [refused] = [o for o in read_outcomes(outputs) if o["exception"]]
    assert refused["key"] == "a" and refused["index"] == 2 and refused["token"] is None
    assert refused["exception"]["type"] == "InvalidInputError"
    assert refused["exception"]["message"].startswith(f"{inputs}:4: the key 'a'")
