"""``workflow-trigger batch --workers N`` / ``--ray-address ADDR``, run as real subprocesses:
the same output, journal and summary as a batch in one process."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anyio
from test_cli import cli, codika_env, read_outcomes, write_payloads
from test_cli_journal import summary

from workflow_trigger.testing import Emulator, Scenario

N = 80


def batch_args(tmp_path: Path, *extra: str) -> tuple[str, ...]:
    inputs, outputs = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_payloads(inputs, N)
    return (
        "batch", "codika", "wf", "--input", str(inputs), "--output", str(outputs),
        "--concurrency", "20", "--key", "id", "--interval", "0.05", *extra,
    )  # fmt: skip


async def test_batch_over_a_ray_cluster_writes_every_outcome_and_resumes_from_its_journal(
    emulator: Emulator, tmp_path: Path, ray_address: str
) -> None:
    emulator.scenario("wf", Scenario(duration=(0.0, 0.2), result=lambda p: p["n"]))
    journal = tmp_path / "j.sqlite"
    args = batch_args(
        tmp_path, "--ray-address", ray_address, "--workers", "2", "--journal", str(journal)
    )
    with anyio.fail_after(60):
        code, _, err = await cli(*args, env=codika_env(emulator))
    assert code == 0, err
    assert "80 succeeded, 0 did not" in " ".join(err.split())
    assert "ran on 2 Ray workers (0 died" in " ".join(err.split())
    assert summary(err) == {"from_journal": 0, "resumed": 0, "triggered": N, "flagged": 0}
    outcomes = read_outcomes(tmp_path / "out.jsonl")
    assert sorted(o["key"] for o in outcomes) == sorted(f"item-{i}" for i in range(N))
    assert all(o["status"] == "succeeded" and o["result"] == o["index"] for o in outcomes)
    assert Counter(e.payload["id"] for e in emulator.executions) == Counter(
        f"item-{i}" for i in range(N)
    )
    with anyio.fail_after(60):  # again: all from the journal, nothing triggered
        code, _, err = await cli(*args, env=codika_env(emulator))
    assert code == 0, err
    assert summary(err)["from_journal"] == N and emulator.triggers("wf") == N
    assert len(read_outcomes(tmp_path / "out.jsonl")) == N


async def test_batch_with_workers_starts_a_local_cluster_of_its_own(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.scenario("wf", Scenario(duration=0.1, result=lambda p: p["n"]))
    with anyio.fail_after(90):
        code, _, err = await cli(*batch_args(tmp_path, "--workers", "2"), env=codika_env(emulator))
    assert code == 0, err
    assert "ran on 2 Ray workers" in " ".join(err.split())
    outcomes = read_outcomes(tmp_path / "out.jsonl")
    assert sorted(o["index"] for o in outcomes) == list(range(N))
    assert emulator.triggers("wf") == N
