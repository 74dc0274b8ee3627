"""Resumable batches: the journal records intent, token and outcome per item."""

from __future__ import annotations

import sqlite3
import sys
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import anyio
import pytest

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, Scenario


def keyed(n: int) -> list[dict[str, int]]:
    return [{"k": i} for i in range(n)]


def by_k(payload: dict[str, int]) -> int:
    return payload["k"]


def runs_per_key(emulator: Emulator) -> Counter[int]:
    return Counter(e.payload["k"] for e in emulator.executions)


def journal_rows(path: Path) -> dict[int, tuple[str | None, str | None]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT key, token, outcome FROM items").fetchall()
    return {int(k): (token, outcome) for k, token, outcome in rows}


async def test_a_finished_batch_replays_from_the_journal_without_requests(
    client: wt.AsyncClient, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.scenario("wf", Scenario(duration=0.01, result=lambda p: {"double": p["k"] * 2}))
    journal = tmp_path / "batch.sqlite"
    first = {
        o.key: o
        async for o in client.run_many("wf", keyed(30), key=by_k, journal=journal, concurrency=8)
    }
    assert all(o.ok for o in first.values())
    requests = emulator.requests
    again = [o async for o in client.run_many("wf", keyed(30), key=by_k, journal=journal)]
    assert emulator.requests == requests
    assert {o.key: o.result for o in again} == {k: {"double": k * 2} for k in range(30)}
    assert all(o.execution == first[o.key].execution for o in again)


async def test_replayed_results_are_structured_again(
    client: wt.AsyncClient, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.scenario("wf", Scenario(result={"title": "t", "count": 2}))
    journal = tmp_path / "batch.sqlite"
    [o async for o in client.run_many("wf", keyed(2), key=by_k, journal=journal)]
    from test_client import AttrsSummary

    again = [
        o.unwrap()
        async for o in client.run_many(
            "wf", keyed(2), key=by_k, journal=journal, result_type=AttrsSummary
        )
    ]
    assert again == [AttrsSummary(title="t", count=2)] * 2


async def test_items_with_a_token_are_waited_on_not_triggered_again(
    client: wt.AsyncClient, emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "batch.sqlite"
    emulator.scenario("wf", Scenario(duration=60))
    with anyio.move_on_after(0.3):
        async with client.run_many("wf", keyed(10), key=by_k, journal=journal, concurrency=4) as b:
            async for _ in b:
                pass  # pragma: no cover - nothing ends within the window
    rows = journal_rows(journal)
    with_token = {k for k, (token, _) in rows.items() if token}
    assert len(with_token) == 4
    for execution in emulator.executions:  # let the runs already started finish now
        execution.duration = 0.0
    emulator.scenario("wf", Scenario(duration=0.0, result="done"))
    outcomes = [o async for o in client.run_many("wf", keyed(10), key=by_k, journal=journal)]
    assert sorted(o.key for o in outcomes) == list(range(10))
    assert all(o.ok and not o.possibly_duplicated for o in outcomes)
    assert runs_per_key(emulator) == Counter(range(10))


async def test_a_refused_trigger_is_forgotten_so_a_rerun_triggers_afresh(
    client: wt.AsyncClient, emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "batch.sqlite"
    emulator.inactive = True
    outcomes = [o async for o in client.run_many("wf", keyed(3), key=by_k, journal=journal)]
    assert all(isinstance(o.exception, wt.APIError) for o in outcomes)
    assert journal_rows(journal) == {}
    emulator.inactive = False
    outcomes = [o async for o in client.run_many("wf", keyed(3), key=by_k, journal=journal)]
    assert all(o.ok and not o.possibly_duplicated for o in outcomes)


async def test_a_journal_of_another_batch_is_refused(
    client: wt.AsyncClient, tmp_path: Path
) -> None:
    journal = tmp_path / "batch.sqlite"
    [o async for o in client.run_many("wf", keyed(1), journal=journal)]
    with pytest.raises(wt.InvalidInputError, match="belongs to a batch"):
        async for _ in client.run_many("other-workflow", keyed(1), journal=journal):
            pass


async def test_keys_must_be_json_values_with_a_journal(
    client: wt.AsyncClient, tmp_path: Path
) -> None:
    with pytest.raises(wt.InvalidInputError, match="JSON values"):
        async for _ in client.run_many(
            "wf", keyed(1), key=lambda p: object(), journal=tmp_path / "j.sqlite"
        ):
            pass


CHILD = """
import sys, anyio, workflow_trigger as wt

async def main(base_url: str, journal: str, n: int) -> None:
    provider = wt.Codika("pi_test", api_key="ck_test_key", base_url=base_url)
    policy = wt.PollPolicy(interval=0.02, jitter=0.0)
    async with wt.AsyncClient(provider, poll=policy) as client:
        payloads = ({"k": i} for i in range(n))
        batch = client.run_many(
            "wf", payloads, concurrency=20, journal=journal, key=lambda p: p["k"]
        )
        async for outcome in batch:
            print(outcome.key, flush=True)

anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
"""


async def test_a_batch_killed_mid_way_resumes_with_exactly_one_outcome_per_key(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator, tmp_path: Path
) -> None:
    n = 120
    journal = tmp_path / "batch.sqlite"
    emulator.scenario("wf", Scenario(duration=(0.05, 0.4), result=lambda p: p))
    args = [sys.executable, "-c", CHILD, emulator.base_url, str(journal), str(n)]
    async with await anyio.open_process(args) as child:
        with anyio.fail_after(30):
            await emulator.wait_until(lambda: emulator.triggers("wf") >= 50)
        child.kill()  # SIGKILL: no cleanup, no flush
        await child.wait()
    rows = journal_rows(journal)
    tokened = {k for k, (token, _) in rows.items() if token}
    intent_only = {k for k, (token, _) in rows.items() if not token}
    assert tokened and len(rows) < n
    async with make_client() as client:
        outcomes = [o async for o in client.run_many("wf", keyed(n), key=by_k, journal=journal)]
    assert sorted(o.key for o in outcomes) == list(range(n))
    assert all(o.ok and o.result == {"k": o.key} for o in outcomes)
    runs = runs_per_key(emulator)
    assert all(runs[k] == 1 for k in tokened)  # recorded tokens are never re-triggered
    assert all(runs[k] == 1 for k in set(range(n)) - set(rows))
    # Codika has no idempotency key: an item whose trigger may have gone out
    # before the kill is flagged rather than silently duplicated
    assert {o.key for o in outcomes if o.possibly_duplicated} == intent_only


async def test_the_journal_commits_large_groups_and_reopens_as_it_was(tmp_path: Path) -> None:
    from workflow_trigger.journal import Journal

    path = tmp_path / "batch.sqlite"
    execution = wt.Execution(
        provider="codika",
        workflow_id="wf",
        execution_id="ex",
        triggered_at=datetime(2026, 11, 25, tzinfo=timezone.utc),
    )
    outcome = wt.Outcome(
        execution=execution, status=wt.Status.SUCCEEDED, result={"a": 1}, raw_result={"a": 1}
    )
    journal = await Journal.open(path, provider="codika", workflow_id="wf")
    async with anyio.create_task_group() as writer:
        await writer.start(journal.run_writer)

        async def item(k: int) -> None:
            await journal.record_intent(k, honoured=False)
            if k % 3 == 0:
                await journal.record_refused(k)  # refused outright: no row left
                return
            await journal.record_token(k, execution)
            if k % 3 == 1:
                await journal.record_outcome(k, outcome)

        async with anyio.create_task_group() as items:  # 450 rows in flight at once
            for k in range(450):
                items.start_soon(item, k)
        writer.cancel_scope.cancel()
    # 1,050 writes in a few transactions, the first of 450 rows (three statements)
    assert journal.transactions < 30

    reopened = await Journal.open(path, provider="codika", workflow_id="wf")
    rows = journal_rows(path)
    assert sorted(rows) == [k for k in range(450) if k % 3]
    for k in range(450):
        state = reopened.state(k)
        if k % 3 == 0:
            assert state is None
            continue
        assert state is not None and state.token == execution.token()
        assert state.idempotency_key == journal.idempotency_key(k)
        if k % 3 == 1:
            assert state.outcome is not None and state.outcome.result == {"a": 1}
        else:
            assert state.outcome is None
    reopened.close()
