import base64
import json
from datetime import datetime, timezone

import pytest

from workflow_trigger import (
    ErrorInfo,
    Execution,
    InvalidInputError,
    Outcome,
    Status,
    WorkflowFailed,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def make_execution(**extras: str) -> Execution:
    return Execution(
        provider="codika",
        workflow_id="main-workflow",
        execution_id="019c8fb3-aaaa",
        extras=extras,
        triggered_at=NOW,
    )


def test_terminal_statuses() -> None:
    terminal = {s for s in Status if s.is_terminal}
    assert terminal == {Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT, Status.CANCELLED}


def test_token_round_trips_and_is_url_safe() -> None:
    ex = make_execution(process_instance_id="pi_1")
    token = ex.token()
    assert token.startswith("wt1.")
    assert all(c.isalnum() or c in "-_." for c in token)
    assert Execution.from_token(token) == ex


def test_token_holds_no_secret_or_url() -> None:
    raw = make_execution(process_instance_id="pi_1").token()[4:]
    body = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    assert set(body) == {"p", "w", "e", "t", "x"}


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "wt1.",
        "wt1.!!!!",
        "wt2." + make_execution().token()[4:],
        "wt1." + base64.urlsafe_b64encode(b'{"p": 1}').decode(),
        "wt1." + base64.urlsafe_b64encode(b"[1, 2]").decode(),
        make_execution().token()[:-6],
    ],
)
def test_corrupt_or_foreign_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidInputError, match="token"):
        Execution.from_token(token)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        Execution(provider="p", workflow_id="w", execution_id="e", triggered_at=datetime.now())


def test_outcome_unwrap() -> None:
    ok = Outcome(execution=make_execution(), status=Status.SUCCEEDED, result={"n": 1})
    assert ok.ok and ok.unwrap() == {"n": 1}
    failed = Outcome(
        execution=make_execution(), status=Status.FAILED, error=ErrorInfo(message="boom")
    )
    assert not failed.ok
    with pytest.raises(WorkflowFailed, match="boom") as info:
        failed.unwrap()
    assert info.value.outcome is failed


def test_outcome_with_a_local_exception_re_raises_it() -> None:
    error = InvalidInputError("bad")
    outcome: Outcome[None] = Outcome(execution=None, status=None, exception=error)
    assert not outcome.ok
    with pytest.raises(InvalidInputError):
        outcome.unwrap()


def test_executions_with_the_same_extras_share_one_that_cannot_change() -> None:
    import copy
    import pickle

    now = datetime.now(timezone.utc)
    first, second = (
        Execution(
            provider="codika",
            workflow_id="wf",
            execution_id=f"exec_{i}",
            extras={"process_instance_id": "pi_1"},
            triggered_at=now,
        )
        for i in range(2)
    )
    # a run in flight keeps its execution: 100,000 of them keep one extras, not 100,000
    assert first.extras is second.extras
    assert first.extras == {"process_instance_id": "pi_1"}
    with pytest.raises(TypeError, match="cannot be changed"):
        first.extras["process_instance_id"] = "pi_2"  # type: ignore[index]
    with pytest.raises(TypeError, match="cannot be changed"):
        first.extras.update(x="y")  # type: ignore[attr-defined]
    assert first.extras == {"process_instance_id": "pi_1"}
    for copied in (pickle.loads(pickle.dumps(first)), copy.deepcopy(first)):
        assert copied == first and copied.extras == first.extras
    assert json.loads(json.dumps(first.extras)) == {"process_instance_id": "pi_1"}
    assert Execution.from_token(first.token()) == first
