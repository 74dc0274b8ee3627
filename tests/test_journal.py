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
from workflow_trigger.testing import Emulator, Fault, Scenario


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


# -- keys that cannot mix items up ------------------------------------------------------


async def test_without_key_reordered_added_and_removed_lines_keep_their_own_outcomes(
    client: wt.AsyncClient, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.scenario("wf", Scenario(duration=0.01, result=lambda p: p))
    journal = tmp_path / "batch.sqlite"
    first: list[dict[str, object]] = [{"k": i} for i in range(20)] + [{"k": "same"}] * 2
    outcomes = [o async for o in client.run_many("wf", first, journal=journal, concurrency=8)]
    assert all(o.ok and o.result == first[o.index or 0] for o in outcomes)
    assert all(str(o.key).startswith("payload:") for o in outcomes)
    # reversed, the first five removed, five new ones added at the front
    second = [{"k": 100 + i} for i in range(5)] + first[:4:-1]
    outcomes = [o async for o in client.run_many("wf", second, journal=journal, concurrency=8)]
    assert sorted(o.index or 0 for o in outcomes) == list(range(len(second)))
    assert all(o.ok and o.result == second[o.index or 0] for o in outcomes)
    runs = Counter(str(e.payload["k"]) for e in emulator.executions)
    expected = Counter(str(p["k"]) for p in first) + Counter(str(100 + i) for i in range(5))
    assert runs == expected  # nothing ran twice, "same" ran once per copy


# -- duplicate keys refused -------------------------------------------------------------


@pytest.mark.parametrize("journaled", [True, False], ids=["journal", "no-journal"])
async def test_an_item_whose_key_was_seen_before_is_refused_not_triggered(
    client: wt.AsyncClient, emulator: Emulator, tmp_path: Path, journaled: bool
) -> None:
    emulator.scenario("wf", Scenario(duration=0.01, result=lambda p: p["n"]))
    journal = tmp_path / "batch.sqlite" if journaled else None
    payloads = [{"k": 7, "n": n} for n in range(10)] + [{"k": 8, "n": 10}]
    outcomes = [o async for o in client.run_many("wf", payloads, key=by_k, journal=journal)]
    assert emulator.triggers("wf") == 2
    assert Counter(e.payload["k"] for e in emulator.executions) == Counter({7: 1, 8: 1})
    refused = [o for o in outcomes if o.exception is not None]
    assert sorted(o.index or 0 for o in refused) == list(range(1, 10))
    assert all(isinstance(o.exception, wt.InvalidInputError) for o in refused)
    assert all("7" in str(o.exception) and o.execution is None for o in refused)
    assert {o.key: o.result for o in outcomes if o.ok} == {7: 0, 8: 10}
    if journaled:  # the re-run answers the first from the journal, refuses the rest again
        again = [o async for o in client.run_many("wf", payloads, key=by_k, journal=journal)]
        assert emulator.triggers("wf") == 2
        assert sorted(o.index or 0 for o in again if o.exception) == list(range(1, 10))


# -- one batch per journal --------------------------------------------------------------


async def test_a_second_batch_on_a_journal_in_use_in_this_process_is_refused_at_once(
    client: wt.AsyncClient, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.scenario("wf", Scenario(duration=60))
    journal = tmp_path / "batch.sqlite"
    first = client.run_many("wf", keyed(10), key=by_k, journal=journal, concurrency=4)
    async with first, anyio.create_task_group() as tasks:
        tasks.start_soon(anext, first)
        with anyio.fail_after(10):  # four runs started, each polled: their tokens are recorded
            await emulator.wait_until(
                lambda: (
                    emulator.triggers("wf") >= 4
                    and all(emulator.polls(e.id) for e in emulator.executions)
                )
            )
        # a journal opened through another spelling of its path is the same journal
        other = tmp_path / "sub" / ".." / "batch.sqlite"
        (tmp_path / "sub").mkdir()
        with pytest.raises(wt.JournalInUse, match="in use") as refused:
            async for _ in client.run_many("wf", keyed(10), key=by_k, journal=other):
                pass  # pragma: no cover - refused before the first outcome
        assert refused.value.path == str(other) and str(other) in str(refused.value)
        assert emulator.triggers("wf") == 4  # the second batch triggered nothing
        tasks.cancel_scope.cancel()
    for execution in emulator.executions:
        execution.duration = 0.0
    emulator.scenario("wf", Scenario(duration=0.0, result="done"))
    # once the first batch has closed, the journal is free again: it resumes
    outcomes = [o async for o in client.run_many("wf", keyed(10), key=by_k, journal=journal)]
    assert sorted(o.key for o in outcomes) == list(range(10)) and all(o.ok for o in outcomes)
    assert runs_per_key(emulator) == Counter(range(10))


HOLDER = """
import sys, anyio, workflow_trigger as wt

async def main(base_url: str, journal: str) -> None:
    provider = wt.Codika("pi_test", api_key="ck_test_key", base_url=base_url)
    async with wt.AsyncClient(provider, poll=wt.PollPolicy(interval=0.02, jitter=0.0)) as client:
        async for outcome in client.run_many(
            "wf", ({"k": i} for i in range(10)), key=lambda p: p["k"], journal=journal
        ):
            print(outcome.key, flush=True)

anyio.run(main, sys.argv[1], sys.argv[2])
"""


async def test_a_journal_held_by_another_process_is_refused_and_freed_when_it_is_killed(
    client: wt.AsyncClient, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.scenario("wf", Scenario(duration=60))
    journal = tmp_path / "batch.sqlite"
    args = [sys.executable, "-c", HOLDER, emulator.base_url, str(journal)]
    async with await anyio.open_process(args) as child:
        with anyio.fail_after(30):
            await emulator.wait_until(lambda: emulator.triggers("wf") >= 10)
        with pytest.raises(wt.JournalInUse, match="in use"):
            async for _ in client.run_many("wf", keyed(10), key=by_k, journal=journal):
                pass  # pragma: no cover - refused before the first outcome
        assert emulator.triggers("wf") == 10
        child.kill()  # SIGKILL: the lock file stays, the kernel lets go of its lock
        await child.wait()
    assert (tmp_path / "batch.sqlite.lock").exists()
    for execution in emulator.executions:
        execution.duration = 0.0
    emulator.scenario("wf", Scenario(duration=0.0))  # for any item triggered again
    outcomes = [o async for o in client.run_many("wf", keyed(10), key=by_k, journal=journal)]
    assert sorted(o.key for o in outcomes) == list(range(10)) and all(o.ok for o in outcomes)
    flagged = {o.key for o in outcomes if o.possibly_duplicated}
    assert all(n == 1 for k, n in runs_per_key(emulator).items() if k not in flagged)


# -- the duplicate flag, stored with the token ------------------------------------------


async def test_the_duplicate_flag_survives_every_resume(
    client: wt.AsyncClient, emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "batch.sqlite"
    emulator.scenario("wf", Scenario(duration=60))

    async def run_until(condition: Callable[[], bool]) -> None:
        """A batch stopped once ``condition()`` holds: a crash, as the journal sees it."""
        batch = client.run_many("wf", keyed(1), key=by_k, journal=journal)
        async with batch, anyio.create_task_group() as tasks:
            tasks.start_soon(anext, batch)
            with anyio.fail_after(10):
                await emulator.wait_until(condition)
            tasks.cancel_scope.cancel()

    # 1: the trigger's answer is lost, so the journal cannot know whether a run started
    emulator.add_fault(Fault.drop(on="trigger"))
    [outcome] = [o async for o in client.run_many("wf", keyed(1), key=by_k, journal=journal)]
    assert isinstance(outcome.exception, wt.TransportError)
    assert outcome.possibly_duplicated is False
    # 2: re-triggered (flagged) and its token recorded: the run is polled
    await run_until(lambda: emulator.poll_requests >= 1)
    assert emulator.triggers("wf") == 1
    # 3 and 4: resumed from the token, twice
    await run_until(lambda: emulator.poll_requests >= 3)
    emulator.executions[0].duration = 0.0
    [resumed] = [o async for o in client.run_many("wf", keyed(1), key=by_k, journal=journal)]
    assert resumed.ok and resumed.possibly_duplicated is True
    # 5: answered from the journal
    requests = emulator.requests
    [replayed] = [o async for o in client.run_many("wf", keyed(1), key=by_k, journal=journal)]
    assert replayed.possibly_duplicated is True and emulator.requests == requests
    assert emulator.triggers("wf") == 1


async def test_a_journal_of_the_first_schema_is_migrated_and_resumes(
    client: wt.AsyncClient, emulator: Emulator, tmp_path: Path
) -> None:
    from workflow_trigger.journal import Journal

    emulator.scenario("wf", Scenario(duration=0.0, result="new"))
    ex = await client.trigger("wf", {"k": 1})
    path = tmp_path / "old.sqlite"
    old_outcome = (
        '{"status": "succeeded", "raw_status": "success", "result": "old", "error": null, '
        '"artifacts": [], "designated_output": null, "polls": 2, "started_at": '
        '"2026-01-01T00:00:00+00:00", "finished_at": null, "possibly_duplicated": true}'
    )
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE items (key TEXT PRIMARY KEY, idempotency_key TEXT NOT NULL,"
            " token TEXT, outcome TEXT);"
        )
        db.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("batch_id", "b" * 32), ("provider", "codika"), ("workflow_id", "wf")],
        )
        db.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?)",
            [("0", "i0", ex.token(), old_outcome), ("1", "i1", ex.token(), None)],
        )
    db.close()
    outcomes = {o.key: o async for o in client.run_many("wf", keyed(2), key=by_k, journal=path)}
    assert outcomes[0].result == "old" and outcomes[0].possibly_duplicated
    assert outcomes[1].result == "new" and outcomes[1].execution == ex
    assert emulator.triggers("wf") == 1
    with sqlite3.connect(path) as db:
        assert ("schema", "2") in db.execute("SELECT * FROM meta").fetchall()
    db.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '3' WHERE name = 'schema'")
    db.close()
    with pytest.raises(wt.InvalidInputError, match="newer"):
        await Journal.open(path, provider="codika", workflow_id="wf")
