"""ExecutionState, branch by branch, with plain values: no server, no clock, no sleep."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone

import attrs
import pytest

import workflow_trigger as wt
from workflow_trigger._results import make_converter
from workflow_trigger._state import ExecutionState

T0 = datetime(2026, 12, 2, tzinfo=timezone.utc)
EXECUTION = wt.Execution(provider="codika", workflow_id="wf", execution_id="ex_1", triggered_at=T0)
POLICY = wt.PollPolicy(interval=2.0, multiplier=2.0, max_interval=5.0, jitter=0.0, timeout=60)


def snap(status: wt.Status, **fields: object) -> wt.Snapshot:
    return wt.Snapshot(status=status, raw_status=status.value, observed_at=T0, **fields)  # type: ignore[arg-type]


def state(**kwargs: object) -> ExecutionState:
    return ExecutionState(EXECUTION, policy=POLICY, rng=random.Random(0), **kwargs)  # type: ignore[arg-type]


def test_the_schedule_follows_the_policy_until_its_ceiling() -> None:
    s = state()
    delays = []
    for _ in range(4):
        delays.append(s.delay())
        s.observe(snap(wt.Status.RUNNING))
    assert delays == [2.0, 4.0, 5.0, 5.0]
    assert s.polls == 4


def test_a_server_hint_wins_over_the_schedule_up_to_the_ceiling() -> None:
    s = state(max_hint=30.0)
    s.observe(snap(wt.Status.RUNNING, retry_after=7.0))
    assert s.delay() == 7.0
    s.observe(snap(wt.Status.RUNNING, retry_after=10_000.0))
    assert s.delay() == 30.0


def test_the_next_poll_is_never_after_the_deadline() -> None:
    s = state(deadline=101.0)
    assert s.next_poll_at(100.0) == 101.0
    assert s.next_poll_at(90.0) == 92.0
    assert not s.expired(100.0) and s.expired(101.0) and s.expired(100.9995)
    assert not state().expired(1e12)  # no deadline


def test_only_the_policys_own_schedule_is_brought_forward() -> None:
    s = state(deadline=200.0)
    assert s.next_poll_at(100.0, early=0.005) == 102.0 - 0.005
    s.observe(snap(wt.Status.RUNNING, retry_after=7.0))
    assert s.next_poll_at(100.0, early=0.005) == 107.0  # a server's hint: never before it
    s.observe(snap(wt.Status.RUNNING))
    assert s.next_poll_at(199.0, early=0.005) == 200.0  # the deadline stays where it is


def test_only_changes_of_status_or_steps_are_changes() -> None:
    s = state(first=snap(wt.Status.PENDING))
    assert s.polls == 0  # the trigger's answer is not a poll
    assert not s.observe(snap(wt.Status.PENDING))
    assert s.observe(snap(wt.Status.RUNNING))
    step = wt.Step(id="a", name="a", status=wt.Status.RUNNING, raw_status="running")
    assert s.observe(snap(wt.Status.RUNNING, steps=(step,)))
    assert not s.observe(snap(wt.Status.RUNNING, steps=(step,)))
    assert not s.done
    assert s.observe(snap(wt.Status.SUCCEEDED))
    assert s.done and s.polls == 5


def test_the_outcome_structures_the_result_and_keeps_the_raw_one() -> None:
    @attrs.frozen
    class Point:
        x: int

    s = state()
    ended = snap(wt.Status.SUCCEEDED, result={"x": 3})
    s.observe(ended)
    outcome = s.outcome(ended, make_converter(), Point, index=4, key="k")
    assert outcome.result == Point(3) and outcome.raw_result == {"x": 3}
    assert (outcome.index, outcome.key, outcome.polls) == (4, "k", 1)
    assert outcome.started_at == T0 and outcome.finished_at == T0
    with pytest.raises(wt.ResultTypeError, match="x"):
        s.outcome(snap(wt.Status.SUCCEEDED, result={"x": "nope"}), make_converter(), Point)


def test_a_failed_run_keeps_its_result_unstructured() -> None:
    s = state()
    ended = snap(
        wt.Status.FAILED,
        result={"partial": True},
        error=wt.ErrorInfo(message="boom"),
        finished_at=T0 + timedelta(seconds=5),
    )
    s.observe(ended)
    outcome = s.outcome(ended, make_converter(), dict)
    assert outcome.result == {"partial": True} and outcome.error is not None
    assert outcome.finished_at == T0 + timedelta(seconds=5)


def test_the_timeout_error_says_what_was_seen_and_what_to_do() -> None:
    s = state()
    error = s.timeout_error()
    assert error.execution is EXECUTION and error.snapshot is None
    assert "after 0 polls" in str(error) and "wait on the same Execution again" in str(error)
    s.observe(snap(wt.Status.RUNNING))
    error = s.timeout_error()
    assert error.snapshot is not None and "last status 'running'" in str(error)
    assert math.isinf(s.deadline)
