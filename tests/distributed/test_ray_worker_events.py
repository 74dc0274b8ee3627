"""A worker's ``events`` long poll, without Ray: its ``Share`` of a batch is plain Python.

One actor call costs more CPU than many events, so ``events`` gathers what
happens for ``linger`` (a quarter of the poll interval) after the first event;
while it lingers it sleeps, and an event wakes it only when it is the first or
fills the call.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import anyio
import anyio.lowlevel
import attrs
import pytest
from _support import codika_for

import workflow_trigger as wt
from workflow_trigger import _ray_worker
from workflow_trigger._ray_worker import DEFAULT_TIMEOUT, Share
from workflow_trigger.testing import Emulator


@pytest.fixture
def w() -> Iterator[Share]:
    made = Share()  # serve() is never called: only the event buffer
    yield made
    made._send.close()
    made._receive.close()


async def test_events_linger_and_carry_what_happened_meanwhile_in_one_call(w: Share) -> None:
    calls: list[list[tuple[object, ...]] | None] = []

    async def call() -> None:
        calls.append(await w.events())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(call)
            await anyio.sleep(0.01)
            assert not calls  # nothing happened yet: it waits
            w._emit(("t", 0, "token-0"))
            for i in range(1, 100):
                await anyio.lowlevel.checkpoint()
                w._emit(("t", i, f"token-{i}"))
                assert not w._wake.is_set()  # it sleeps through its linger: no wake-up per event
    assert calls and calls[0] is not None
    assert [event[1] for event in calls[0]] == list(range(100))


async def test_events_return_early_once_a_call_is_full(
    monkeypatch: pytest.MonkeyPatch, w: Share
) -> None:
    w.linger = 30.0
    monkeypatch.setattr(_ray_worker, "MAX_EVENTS", 10)
    w._emit(("t", 0, "token-0"))
    with anyio.fail_after(5):  # far below LINGER: the tenth event ends the call
        async with anyio.create_task_group() as group:
            got: list[list[tuple[object, ...]] | None] = []

            async def call() -> None:
                got.append(await w.events())

            group.start_soon(call)
            for i in range(1, 10):
                await anyio.sleep(0.001)
                w._emit(("t", i, f"token-{i}"))
    assert got[0] is not None and len(got[0]) == 10


async def test_events_hand_over_the_rest_then_none_once_serve_ended(w: Share) -> None:
    w.linger = 30.0
    w._emit(("o", 0, {}, None, False))
    with anyio.fail_after(5):  # the end of serve cuts the linger short
        async with anyio.create_task_group() as group:
            got: list[list[tuple[object, ...]] | None] = []

            async def call() -> None:
                got.append(await w.events())

            group.start_soon(call)
            await anyio.sleep(0.01)
            w._emit(("o", 1, {}, None, False))
            w._served = True  # what serve's ``finally`` does
            w._wake.set()
        assert got[0] is not None and [event[1] for event in got[0]] == [0, 1]
        assert await w.events() is None


def test_the_linger_is_a_quarter_of_the_poll_interval_within_its_bounds() -> None:
    assert _ray_worker.linger(wt.PollPolicy(interval=0.6)) == pytest.approx(0.15)
    assert _ray_worker.linger(wt.PollPolicy(interval=0.01)) == _ray_worker.MIN_LINGER
    assert _ray_worker.linger(wt.PollPolicy(interval=30.0)) == _ray_worker.MAX_LINGER


async def test_a_served_share_lingers_by_its_clients_poll_interval(w: Share) -> None:
    poll = wt.PollPolicy(interval=0.4, timeout=5.0)
    async with Emulator(seed=0) as emu, wt.AsyncClient(codika_for(emu), poll=poll) as client:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(w.serve, client, "wf", DEFAULT_TIMEOUT, 10)
                await anyio.wait_all_tasks_blocked()
                assert w.linger == pytest.approx(0.1)
                await w.stop(graceful=False)
    assert await w.events() is None  # stopped: nothing more to come


def test_an_outcome_crosses_as_plain_values_and_comes_back_whole() -> None:
    """A worker's outcome without an exception goes as a tuple of plain values (cheaper to
    pickle than attrs classes): every field comes back, with the driver's own."""
    at = datetime(2026, 12, 2, 15, 0, 1, 250_000, tzinfo=timezone.utc)
    execution = wt.Execution(
        provider="pinkfish",
        workflow_id="wf",
        execution_id="run-7",
        extras={"automation_id": "a-1"},
        triggered_at=at,
    )
    report = wt.Artifact(name="report.csv", url="https://files.test/r", mime_type="text/csv")
    sent = wt.Outcome(
        execution=execution,
        status=wt.Status.FAILED,
        result=None,
        error=wt.ErrorInfo(message="boom", code="E1", details={"line": 3}),
        artifacts=(report,),
        designated_output=report,
        polls=4,
        started_at=at,
        finished_at=at + timedelta(seconds=2),
        raw_status="error",
        index=0,  # the worker's position: the driver names the item
        key=0,
        raw_result={"partial": [1, 2]},
    )
    wire = pickle.loads(pickle.dumps(_ray_worker.pack_outcome(sent)))
    assert type(wire) is tuple  # neither the Outcome nor its Execution crosses as such
    assert not any(isinstance(v, (wt.Outcome, wt.Execution)) for v in wire)
    back = _ray_worker.unpack_outcome(wire, index=41, key="k41", possibly_duplicated=True)
    assert back == attrs.evolve(sent, index=41, key="k41", possibly_duplicated=True)
    assert back.execution is not None and back.execution.token() == execution.token()
    ran = pickle.loads(pickle.dumps(_ray_worker.pack_execution(execution)))
    assert _ray_worker.unpack_execution(ran) == execution
