"""The blocking Client: the same behaviour as AsyncClient, driven from plain threads."""

from __future__ import annotations

import pathlib
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import anyio
import anyio.from_thread
import pytest
from _support import FAST, FAST_RETRY, codika_for

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, Scenario


@pytest.fixture
def portal() -> Iterator[anyio.from_thread.BlockingPortal]:
    with anyio.from_thread.start_blocking_portal() as portal:
        yield portal


@pytest.fixture
def emu(portal: anyio.from_thread.BlockingPortal) -> Iterator[Emulator]:
    """An emulator on its own event loop thread, so the test's thread can block."""
    with portal.wrap_async_context_manager(Emulator(seed=0)) as emulator:
        yield emulator


@pytest.fixture
def client(emu: Emulator) -> Iterator[wt.Client]:
    with wt.Client(codika_for(emu), poll=FAST, retry=FAST_RETRY, seed=0) as client:
        yield client


def test_run_trigger_status_wait(client: wt.Client, emu: Emulator) -> None:
    emu.scenario("wf", Scenario(duration=0.05, result={"n": 1}))
    outcome = client.run("wf", {"a": 1})
    assert outcome.ok and outcome.result == {"n": 1}
    ex = client.trigger("wf")
    assert client.status(ex).status in (wt.Status.PENDING, wt.Status.SUCCEEDED)
    assert client.wait(ex).result == {"n": 1}
    assert [s.status for s in client.watch(client.trigger("wf"))][-1] is wt.Status.SUCCEEDED
    assert emu.triggers("wf") == 3


def test_errors_cross_the_thread_boundary_unchanged(client: wt.Client, emu: Emulator) -> None:
    emu.inactive = True
    with pytest.raises(wt.APIError, match="inactive"):
        client.run("wf")
    with pytest.raises(wt.UnsupportedOperation):
        client.cancel(wt.Execution.from_token(_token()))


def _token() -> str:
    from datetime import datetime, timezone

    return wt.Execution(
        provider="codika",
        workflow_id="w",
        execution_id="e",
        triggered_at=datetime.now(timezone.utc),
    ).token()


def test_run_many_blocking_iterator(client: wt.Client, emu: Emulator) -> None:
    emu.scenario("wf", Scenario(duration=(0.01, 0.05), result=lambda p: p))
    outcomes = list(client.run_many("wf", ({"i": i} for i in range(60)), concurrency=6))
    assert sorted(o.index for o in outcomes if o.index is not None) == list(range(60))
    assert all(o.result == {"i": o.index} for o in outcomes)
    assert emu.max_in_flight <= 6


def test_run_many_early_exit_cancels_the_rest(client: wt.Client, emu: Emulator) -> None:
    emu.scenario("wf", Scenario(duration=0.0, result=1))
    for _ in client.run_many("wf", [{}] * 100, concurrency=8, timeout=None):
        emu.scenario("wf", Scenario(duration=60))
        break
    assert emu.triggers("wf") < 100
    polls = _settled_polls(emu)
    threading.Event().wait(FAST.interval * 5)  # a window in which a leaked poller would poll
    assert emu.poll_requests == polls


def _settled_polls(emu: Emulator) -> int:
    threading.Event().wait(FAST.interval)  # a poll already on the wire may still land
    return emu.poll_requests


def test_wait_many_blocking_iterator(client: wt.Client, emu: Emulator) -> None:
    emu.scenario("wf", Scenario(duration=(0.01, 0.1), result=lambda p: p["i"]))
    tokens = [client.trigger("wf", {"i": i}).token() for i in range(30)]
    executions = (wt.Execution.from_token(t) for t in tokens)
    outcomes = list(client.wait_many(executions, concurrency=5))
    assert sorted(o.index for o in outcomes if o.index is not None) == list(range(30))
    assert all(o.ok and o.result == o.index for o in outcomes)
    assert emu.triggers("wf") == 30  # waiting triggers nothing


def test_one_client_shared_between_threads(client: wt.Client, emu: Emulator) -> None:
    emu.scenario("wf", Scenario(duration=0.02, result=lambda p: p))
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: client.run("wf", {"i": i}).result, range(40)))
    assert results == [{"i": i} for i in range(40)]


def test_closing_stops_the_background_thread(emu: Emulator) -> None:
    before = threading.active_count()
    with wt.Client(codika_for(emu), poll=FAST) as client:
        assert threading.active_count() == before + 1
        assert client.run("wf").ok
    assert threading.active_count() == before


async def test_refuses_to_block_inside_an_event_loop(emulator: Emulator) -> None:
    with pytest.raises(wt.UnsupportedOperation, match="AsyncClient"):
        wt.Client(codika_for(emulator))


def test_ctrl_c_cancels_the_blocking_call(
    client: wt.Client, emu: Emulator, portal: anyio.from_thread.BlockingPortal
) -> None:
    emu.scenario("slow", Scenario(duration=60))
    main = threading.main_thread().ident
    assert main == threading.get_ident()

    async def first_polls() -> None:
        with anyio.fail_after(5):
            await emu.wait_until(lambda: emu.poll_requests >= 2)

    def interrupt_after_first_polls() -> None:
        portal.call(first_polls)
        signal.pthread_kill(main, signal.SIGINT)

    interrupter = threading.Thread(target=interrupt_after_first_polls)
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            client.run("slow", timeout=None)
    finally:
        interrupter.join()
    polls = _settled_polls(emu)
    threading.Event().wait(FAST.interval * 5)
    assert emu.poll_requests == polls
    assert client.run("wf").ok  # the client still works afterwards


def test_a_blocking_batch_tells_what_became_of_its_items(
    client: wt.Client, emu: Emulator, tmp_path: pathlib.Path
) -> None:
    journal = tmp_path / "batch.sqlite"
    payloads = [{"k": i} for i in range(5)]
    first = client.run_many("wf", payloads, key=lambda p: p["k"], journal=journal)
    assert len(list(first)) == 5 and first.counts.triggered == 5
    again = client.run_many("wf", payloads, key=lambda p: p["k"], journal=journal)
    assert len(list(again)) == 5
    assert (again.counts.from_journal, again.counts.triggered) == (5, 0)
    assert emu.triggers("wf") == 5
    with pytest.raises(wt.UnsupportedOperation, match="counts"):
        _ = client.watch(client.trigger("wf")).counts  # type: ignore[attr-defined]


def test_outcomes_ending_close_together_cross_threads_together(
    client: wt.Client, emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a crossing between the caller's thread and the loop's costs about 100 us of CPU:
    # outcomes that end within the linger of each other come over in one
    emu.scenario("wf", Scenario(duration=0.0, result=1))
    monkeypatch.setattr(wt.sync.BlockingIterator, "LINGER", 0.5)
    crossings = 0
    call = client._call

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal crossings
        crossings += 1
        return call(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(client, "_call", counted)
    outcomes = list(client.run_many("wf", [{"i": i} for i in range(200)], concurrency=200))
    assert sorted(o.index for o in outcomes if o.index is not None) == list(range(200))
    assert all(o.ok for o in outcomes)
    assert crossings <= 6  # 200 outcomes, a chunk per half second (and the last, empty)
