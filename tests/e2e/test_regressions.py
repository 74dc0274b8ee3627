"""Regressions found by the end-to-end suite: each failed before its fix."""

from __future__ import annotations

import contextlib
import socket
import traceback
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, Scenario

FAST = wt.PollPolicy(interval=0.02, jitter=0.0, timeout=10.0)
KEY = "pf_live_secret_key"


@pytest.mark.parametrize("reply", ["run", "instance"])
async def test_an_event_goes_through_the_connection_the_run_was_triggered_on(reply: str) -> None:
    async with Emulator(awaitstep_trigger_reply=reply, awaitstep_connection_id="conn_live") as emu:
        emu.scenario("wf", Scenario(duration=30.0, wait_for_event="go"))
        provider = wt.AwaitStep(emu.awaitstep_api_key, "conn_default", base_url=emu.base_url)
        async with wt.AsyncClient(provider) as client:
            ex = await client.trigger("wf", connection_id="conn_live")
            await client.send_event(ex, "go", {})
        assert emu.executions[0].events == [{"type": "go", "payload": {}}]


@pytest.fixture
def saturated_port() -> Iterator[int]:
    """A listening socket whose accept queue is full: connects to it hang, then time out."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # the connect completes in the backlog
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for s in [*fillers, server]:
        s.close()


async def test_a_connect_timeout_does_not_leak_the_key(saturated_port: int) -> None:
    provider = wt.Pinkfish(KEY, base_url=f"http://127.0.0.1:{saturated_port}")
    ex = wt.Execution(
        provider="pinkfish",
        workflow_id="trg",
        execution_id="1",
        extras={"automation_id": "a"},
        triggered_at=datetime.now(timezone.utc),
    )
    async with wt.AsyncClient(
        provider, connect_timeout=0.2, retry=wt.RetryPolicy(attempts=1)
    ) as client:
        with pytest.raises(wt.TransportError) as info:
            await client.status(ex)
    assert KEY not in str(info.value)
    shown = "".join(traceback.format_exception(info.value))  # what logger.exception prints
    assert KEY not in shown, shown


async def test_a_lone_surrogate_is_invalid_input_before_sending() -> None:
    async with Emulator() as emu:
        provider = wt.RunsApi(emu.base_url, emu.runs_api_api_key)
        async with wt.AsyncClient(provider) as client:
            with pytest.raises(wt.InvalidInputError):
                await client.trigger("wf", {"text": "\ud800"})
        assert emu.requests == 0


async def test_a_spent_execute_window_does_not_stop_polls_on_the_read_window() -> None:
    """_transport.py: hold_until is one value for every request, so the trigger window's
    X-RateLimit-Remaining: 0 also holds polls, which the read window (1,000/min) allows."""
    async with Emulator(runs_api_rate_limit=1) as emu:
        emu.scenario("wf", Scenario(result=1))
        provider = wt.RunsApi(emu.base_url, emu.runs_api_api_key)
        async with wt.AsyncClient(provider, poll=FAST) as client:
            outcome = await client.run("wf", timeout=2)
        assert outcome.ok


async def test_a_download_over_the_cap_leaves_the_target_file_alone(tmp_path: Path) -> None:
    """_transport.py: download(to=) opens the target "wb" before checking the cap."""
    async with Emulator() as emu:
        emu.scenario("trg", Scenario(files={"poem.txt": "Roses are red"}, designated="poem.txt"))
        provider = wt.Pinkfish(emu.pinkfish_api_key, base_url=emu.base_url)
        async with wt.AsyncClient(provider, poll=FAST) as client:
            outcome = await client.run("trg")
            assert outcome.designated_output is not None
            target = tmp_path / "poem.txt"
            target.write_text("an earlier poem")
            with pytest.raises(wt.ProtocolError):
                await client.download(outcome.designated_output, to=target, max_bytes=5)
        assert target.read_text() == "an earlier poem"


async def test_a_sync_run_finishes_after_it_started() -> None:
    """client.py: the snapshot a trigger answer carries is stamped with the time the
    trigger was built, so a run held 0.5 s by Pinkfish 'finished' when it started."""
    async with Emulator() as emu:
        emu.scenario("trg", Scenario(duration=0.5, result=1))
        provider = wt.Pinkfish(emu.pinkfish_api_key, base_url=emu.base_url, wait="sync")
        async with wt.AsyncClient(provider) as client:
            outcome = await client.run("trg")
        assert outcome.ok and outcome.started_at and outcome.finished_at
        assert (outcome.finished_at - outcome.started_at).total_seconds() >= 0.5


async def test_outcome_times_are_the_platforms_where_it_reports_them() -> None:
    async with Emulator() as emu:
        emu.scenario("wf", Scenario(duration=0.05, result=1))
        provider = wt.RunsApi(emu.base_url, emu.runs_api_api_key)
        async with wt.AsyncClient(provider, poll=FAST) as client:
            outcome = await client.run("wf")
            assert outcome.execution is not None
            snapshot = await client.status(outcome.execution)
        # the run's own startedAt/completedAt, not the trigger time and the last poll's
        assert snapshot.started_at is not None and snapshot.finished_at is not None
        assert (outcome.started_at, outcome.finished_at) == (
            snapshot.started_at,
            snapshot.finished_at,
        )
        assert outcome.started_at != outcome.execution.triggered_at
