"""The journal: a durable record of a batch, so a re-run resumes instead of re-triggering.

How it works. A journal is one SQLite file per batch. For every item key it
records, in this order:

1. the *intent*, before the trigger is sent, with the idempotency key derived
   from the batch id and the item key;
2. the execution *token*, as soon as the trigger answers;
3. the final *outcome*, once the run has ended.

Each step waits until its row is committed before the item goes on, so a crash
loses nothing that was acknowledged. Writes are group-committed: one writer
task takes every row changed while the previous transaction ran and writes
them together, in one multi-row statement per 200 rows, so a batch of
thousands costs a few hundred transactions, not three per item. SQLite runs
on a worker thread (``anyio.to_thread``) in WAL mode, which survives the
process being killed at any point.

Running the same batch again with the same journal: an item with an outcome is
answered from the journal without any request; one with a token is waited on
without a new trigger; one with only an intent is triggered again, with the
same idempotency key where the platform honours one, else its outcome is
marked ``possibly_duplicated``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import uuid
from datetime import datetime
from typing import Any

import anyio
import anyio.abc
import attrs

from .errors import InvalidInputError
from .models import Artifact, ErrorInfo, Execution, Outcome, Status

__all__ = ["ItemState", "Journal"]

#: rows per INSERT (4 parameters each: within SQLite's oldest limit of 999 parameters)
_ROWS_PER_STATEMENT = 200

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL,
    token TEXT,
    outcome TEXT
);
"""


@attrs.frozen
class ItemState:
    """What the journal knows of one item."""

    idempotency_key: str
    token: str | None = None
    outcome: Outcome[Any] | None = None


def _outcome_to_json(outcome: Outcome[Any]) -> str:
    def artifact(a: Artifact | None) -> dict[str, Any] | None:
        return attrs.asdict(a) if a is not None else None

    def when(d: datetime | None) -> str | None:
        return d.isoformat() if d is not None else None

    error = outcome.error
    return json.dumps(
        {
            "status": outcome.status.value if outcome.status else None,
            "raw_status": outcome.raw_status,
            "result": outcome.raw_result,
            "error": attrs.asdict(error) if error is not None else None,
            "artifacts": [artifact(a) for a in outcome.artifacts],
            "designated_output": artifact(outcome.designated_output),
            "polls": outcome.polls,
            "started_at": when(outcome.started_at),
            "finished_at": when(outcome.finished_at),
            "possibly_duplicated": outcome.possibly_duplicated,
        },
        default=str,
    )


def _outcome_from_json(text: str, execution: Execution | None) -> Outcome[Any]:
    data = json.loads(text)

    def when(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    error = data["error"]
    designated = data["designated_output"]
    return Outcome(
        execution=execution,
        status=Status(data["status"]) if data["status"] else None,
        raw_status=data["raw_status"],
        result=data["result"],
        raw_result=data["result"],
        error=ErrorInfo(**error) if error else None,
        artifacts=tuple(Artifact(**a) for a in data["artifacts"]),
        designated_output=Artifact(**designated) if designated else None,
        polls=data["polls"],
        started_at=when(data["started_at"]),
        finished_at=when(data["finished_at"]),
        possibly_duplicated=data["possibly_duplicated"],
    )


def _item_key(key: Any) -> str:
    try:
        return json.dumps(key, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"with a journal, item keys must be JSON values (str, int...), got {key!r}: "
            "pass key= a function that returns one"
        ) from exc


class Journal:
    """One batch's durable record. Open with ``await Journal.open(path, ...)``."""

    def __init__(self, path: str, connection: sqlite3.Connection, batch_id: str) -> None:
        self.path = path
        self.batch_id = batch_id
        self._db = connection
        self._states: dict[str, ItemState] = {}
        self._outcomes: dict[str, str] = {}  # outcomes recorded, as JSON, until written
        self._dirty: dict[str, None] = {}  # keys changed since the last transaction, in order
        self._committed = anyio.Event()  # set once the transaction holding them commits
        self._wake = anyio.Event()
        self._closed = False
        self.transactions = 0

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, provider: str, workflow_id: str
    ) -> Journal:
        """Open (or create) the journal at ``path`` for this batch."""
        path = os.fspath(path)
        return await anyio.to_thread.run_sync(cls._open_sync, path, provider, workflow_id)

    @classmethod
    def _open_sync(cls, path: str, provider: str, workflow_id: str) -> Journal:
        try:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            raise InvalidInputError(
                f"cannot use {path!r} as a journal ({exc}): pass the path of a new file or "
                "of a journal this SDK wrote"
            ) from exc
        if not meta:
            meta = {"batch_id": uuid.uuid4().hex, "provider": provider, "workflow_id": workflow_id}
            with db:
                db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        elif (meta.get("provider"), meta.get("workflow_id")) != (provider, workflow_id):
            db.close()
            raise InvalidInputError(
                f"the journal {path!r} belongs to a batch of {meta.get('workflow_id')!r} on "
                f"{meta.get('provider')!r}, not {workflow_id!r} on {provider!r}: use another file"
            )
        journal = cls(path, db, meta["batch_id"])
        for key, idem, token, outcome in db.execute("SELECT * FROM items"):
            execution = Execution.from_token(token) if token else None
            journal._states[key] = ItemState(
                idempotency_key=idem,
                token=token,
                outcome=_outcome_from_json(outcome, execution) if outcome else None,
            )
        return journal

    def state(self, key: Any) -> ItemState | None:
        return self._states.get(_item_key(key))

    def idempotency_key(self, key: Any) -> str:
        return self._idempotency_key(_item_key(key))

    def _idempotency_key(self, k: str) -> str:
        digest = hashlib.sha256(k.encode()).hexdigest()[:24]
        return f"wt-{self.batch_id[:16]}-{digest}"

    async def record_intent(self, key: Any) -> ItemState:
        k = _item_key(key)
        state = ItemState(idempotency_key=self._idempotency_key(k))
        self._states[k] = state
        await self._write(k)
        return state

    async def record_token(self, key: Any, execution: Execution) -> None:
        k = _item_key(key)
        self._states[k] = attrs.evolve(self._states[k], token=execution.token())
        await self._write(k)

    async def record_outcome(self, key: Any, outcome: Outcome[Any]) -> None:
        k = _item_key(key)
        self._states[k] = attrs.evolve(self._states[k], outcome=outcome)
        self._outcomes[k] = _outcome_to_json(outcome)
        await self._write(k)

    async def forget(self, key: Any) -> None:
        """Drop an item whose trigger was refused outright: no run exists for it."""
        k = _item_key(key)
        self._states.pop(k, None)
        self._outcomes.pop(k, None)
        await self._write(k)

    async def _write(self, k: str) -> None:
        """Mark the item's row for the next transaction and wait until it is committed."""
        self._dirty[k] = None
        committed = self._committed
        self._wake.set()
        await committed.wait()

    def _take(self) -> tuple[list[tuple[Any, ...]], list[str], anyio.Event]:
        """The rows of every item changed since the last transaction, as they are now."""
        keys, self._dirty = self._dirty, {}
        committed, self._committed = self._committed, anyio.Event()
        rows: list[tuple[Any, ...]] = []
        deletes: list[str] = []
        for k in keys:
            state = self._states.get(k)
            if state is None:
                deletes.append(k)
                continue
            outcome = self._outcomes.pop(k, None)
            if outcome is None and state.outcome is not None:
                outcome = _outcome_to_json(state.outcome)
            rows.append((k, state.idempotency_key, state.token, outcome))
        return rows, deletes, committed

    async def run_writer(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Commit changed rows in groups until cancelled; run it in a task group."""
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                if self._dirty:
                    rows, deletes, committed = self._take()
                    await anyio.to_thread.run_sync(self._commit, rows, deletes)
                    committed.set()
        finally:
            with anyio.CancelScope(shield=True):
                if self._dirty:
                    rows, deletes, _ = self._take()
                    await anyio.to_thread.run_sync(self._commit, rows, deletes)
                await anyio.to_thread.run_sync(self._db.close)

    def _commit(self, rows: list[tuple[Any, ...]], deletes: list[str]) -> None:
        # Few statements, each of many rows: the thread hands the GIL back and forth
        # once per statement, and on a busy event loop that dance is what costs.
        with self._db:
            self._db.execute("BEGIN")
            if deletes:
                self._db.executemany("DELETE FROM items WHERE key = ?", [(k,) for k in deletes])
            for start in range(0, len(rows), _ROWS_PER_STATEMENT):
                chunk = rows[start : start + _ROWS_PER_STATEMENT]
                values = ", ".join(["(?, ?, ?, ?)"] * len(chunk))
                self._db.execute(
                    f"INSERT OR REPLACE INTO items VALUES {values}",  # only placeholders
                    [value for row in chunk for value in row],
                )
        self.transactions += 1
