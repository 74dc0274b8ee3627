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
marked ``possibly_duplicated``. That flag is written into the item's row
with the re-sent intent, so the token and the outcome recorded after it keep
it through any number of resumes.

Items are named by ``_items.ItemKeys`` (``key=``, else a digest of the
payload), never by position. Outcomes are stored as ``Outcome.to_json()``.

One batch per journal at a time: ``open`` takes an exclusive OS lock
(``flock``; ``msvcrt.locking`` on Windows) on a file beside the journal,
``<journal>.lock``, held until the journal is closed. The kernel lets go of
it when the process dies, however it dies, so a stale lock never blocks the
next run; a second batch on the same journal, in this process or another,
gets ``JournalInUse`` before it triggers anything. The one exception: in the
same process and event loop, a batch that is stopping (its ``stopping()``
says so: it was cancelled, and is recording what is on the wire) is waited
for, so that leaving one ``async for`` and starting the batch again works.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import threading
import uuid
import weakref
from collections.abc import Callable
from typing import IO, Any

import anyio
import anyio.abc
import attrs

from ._items import canonical_json
from .errors import InvalidInputError, JournalInUse
from .models import Execution, Outcome

if sys.platform == "win32":  # pragma: no cover - the CI runs on Linux
    import msvcrt

    def _try_lock(file: IO[bytes]) -> None:
        file.seek(0)
        try:
            msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            raise BlockingIOError(*exc.args) from exc

else:
    import fcntl

    def _try_lock(file: IO[bytes]) -> None:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


__all__ = ["ItemState", "Journal"]

#: the journals open in this process, by real path: a batch that is stopping is
#: waited for (it lets go in a moment), not refused
_OPEN: weakref.WeakValueDictionary[str, Journal] = weakref.WeakValueDictionary()

#: the journal's layout: 1 had no ``duplicated`` column (it is added on open)
_SCHEMA_VERSION = 2
_COLUMNS = "key, idempotency_key, token, outcome, duplicated"
#: rows per INSERT: within SQLite's oldest limit of 999 parameters
_ROWS_PER_STATEMENT = 999 // 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL,
    token TEXT,
    outcome TEXT,
    duplicated INTEGER NOT NULL DEFAULT 0
);
"""


@attrs.frozen
class ItemState:
    """What the journal knows of one item.

    ``possibly_duplicated``: a trigger was re-sent after one that may have started
    a run (on a platform without idempotency keys); it holds for the item's token
    and outcome too.
    """

    idempotency_key: str
    token: str | None = None
    outcome: Outcome[Any] | None = None
    possibly_duplicated: bool = False


#: one item's row as it is written: idempotency key, token, outcome JSON, duplicated
_Row = tuple[str, str | None, str | None, bool]


def _item_key(key: Any) -> str:
    try:
        return canonical_json(key)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"with a journal, item keys must be JSON values (str, int...), got {key!r}: "
            "pass key= a function that returns one"
        ) from exc


def _lock(path: str) -> IO[bytes]:
    """The open lock file of the journal at ``path``, locked; ``JournalInUse`` if it is held."""
    lock_path = os.path.realpath(path) + ".lock"  # one lock whatever the path's spelling
    try:
        file = open(lock_path, "a+b")  # noqa: SIM115 - kept open while the journal is
    except OSError as exc:
        raise InvalidInputError(
            f"cannot use {path!r} as a journal: cannot open its lock file {lock_path!r} "
            f"({exc.strerror}); pass a path in a folder you can write to"
        ) from exc
    try:
        _try_lock(file)
    except BlockingIOError:
        file.close()
        raise JournalInUse(
            f"the journal {path!r} is in use by another batch, in this process or another; "
            "nothing was triggered. Wait for that batch to end (then run this one again: it "
            "resumes), or give this batch a journal file of its own",
            path=path,
        ) from None
    except OSError as exc:
        file.close()
        raise InvalidInputError(
            f"cannot lock the journal {path!r} ({exc.strerror}): keep journals on a local "
            "disk that supports file locks"
        ) from exc
    return file


def _outcome(text: str, token: str | None, duplicated: bool) -> Outcome[Any]:
    data = json.loads(text)
    data.setdefault("token", token)  # journals of schema 1 kept it in its own column
    outcome = Outcome.from_dict(data)
    if duplicated and not outcome.possibly_duplicated:
        outcome = attrs.evolve(outcome, possibly_duplicated=True)
    return outcome


class Journal:
    """One batch's durable record. Open with ``await Journal.open(path, ...)``; close it
    by running ``run_writer`` (it closes on its way out) or with ``close()``."""

    def __init__(
        self, path: str, connection: sqlite3.Connection, batch_id: str, lock: IO[bytes]
    ) -> None:
        self.path = path
        self.batch_id = batch_id
        self._db = connection
        self._lock: IO[bytes] | None = lock
        self._stopping: Callable[[], bool] = lambda: False
        self._thread = 0  # the thread of the event loop that opened it
        self._closed = anyio.Event()
        self._rows: dict[str, _Row] = {}
        self._dirty: dict[str, None] = {}  # keys changed since the last transaction, in order
        self._committed = anyio.Event()  # set once the transaction holding them commits
        self._wake = anyio.Event()
        self.transactions = 0

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        provider: str,
        workflow_id: str,
        stopping: Callable[[], bool] | None = None,
    ) -> Journal:
        """Open (or create) the journal at ``path`` for this batch, and lock it.

        ``stopping()`` tells whether this batch was told to stop (another batch of this
        event loop that wants the journal then waits for it to close). Raises
        ``JournalInUse`` when another batch holds the journal, ``InvalidInputError``
        when the file is not a journal of this batch.
        """
        path = os.fspath(path)
        real = await anyio.to_thread.run_sync(os.path.realpath, path)
        holder = _OPEN.get(real)
        if holder is not None and holder._thread == threading.get_ident() and holder._stopping():
            await holder._closed.wait()
        try:
            journal = await anyio.to_thread.run_sync(cls._open_sync, path, provider, workflow_id)
        except JournalInUse as exc:
            holder = _OPEN.get(real)
            if holder is not None and holder._lock is not None:  # open, here
                exc.message += (
                    ". It is a batch of this process: one left early keeps running until "
                    "its handle is closed, so use `async with client.run_many(...) as batch:`"
                    " or `await batch.aclose()` before starting it again"
                )
            raise
        journal._thread = threading.get_ident()  # its events belong to this loop alone
        if stopping is not None:
            journal._stopping = stopping
        _OPEN[real] = journal
        return journal

    @classmethod
    def _open_sync(cls, path: str, provider: str, workflow_id: str) -> Journal:
        lock = _lock(path)
        try:
            db, batch_id = _connect(path, provider, workflow_id)
        except BaseException:
            lock.close()
            raise
        journal = cls(path, db, batch_id, lock)
        for key, idem, token, outcome, duplicated in db.execute(f"SELECT {_COLUMNS} FROM items"):
            journal._rows[key] = (idem, token, outcome, bool(duplicated))
        return journal

    def state(self, key: Any) -> ItemState | None:
        row = self._rows.get(_item_key(key))
        if row is None:
            return None
        idem, token, outcome, duplicated = row
        return ItemState(
            idempotency_key=idem,
            token=token,
            outcome=_outcome(outcome, token, duplicated) if outcome else None,
            possibly_duplicated=duplicated,
        )

    def idempotency_key(self, key: Any) -> str:
        return self._idempotency_key(_item_key(key))

    def _idempotency_key(self, k: str) -> str:
        digest = hashlib.sha256(k.encode()).hexdigest()[:24]
        return f"wt-{self.batch_id[:16]}-{digest}"

    async def record_intent(self, key: Any, *, honoured: bool) -> ItemState:
        """Make the item's intent durable; call it before sending its trigger.

        An item that already has an intent (and no token) is being re-triggered:
        its earlier trigger may have started a run. Where the platform does not
        honour the idempotency key (``honoured=False``) the returned state, and
        every later state of the item, says ``possibly_duplicated``.
        """
        k = _item_key(key)
        row = self._rows.get(k)
        duplicated = row is not None and (row[3] or not honoured)
        idem = row[0] if row is not None else self._idempotency_key(k)
        self._rows[k] = (idem, None, None, duplicated)
        await self._write(k)
        return ItemState(idempotency_key=idem, possibly_duplicated=duplicated)

    async def record_token(self, key: Any, execution: Execution) -> None:
        k = _item_key(key)
        idem, _, _, duplicated = self._rows[k]
        self._rows[k] = (idem, execution.token(), None, duplicated)
        await self._write(k)

    async def record_outcome(self, key: Any, outcome: Outcome[Any]) -> None:
        k = _item_key(key)
        idem, token, _, duplicated = self._rows[k]
        duplicated = duplicated or outcome.possibly_duplicated
        self._rows[k] = (idem, token, outcome.to_json(), duplicated)
        await self._write(k)

    async def record_refused(self, key: Any) -> None:
        """The item's trigger was refused outright, so it started no run: forget the item,
        so that a re-run triggers it afresh, unless an earlier trigger may have started
        one (then its intent stays, and a re-run flags it again)."""
        k = _item_key(key)
        row = self._rows.get(k)
        if row is not None and row[3]:
            return
        self._rows.pop(k, None)
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
            row = self._rows.get(k)
            if row is None:
                deletes.append(k)
            else:
                rows.append((k, *row))
        return rows, deletes, committed

    async def run_writer(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Commit changed rows in groups until cancelled, then close the journal (and let
        go of its lock); run it in a task group."""
        try:
            task_status.started()
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
                self.close()

    def close(self) -> None:
        """Close the database and let go of the lock (rows not yet committed are lost).

        Call it from the journal's event loop."""
        self._db.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        self._closed.set()

    def _commit(self, rows: list[tuple[Any, ...]], deletes: list[str]) -> None:
        # Few statements, each of many rows: the thread hands the GIL back and forth
        # once per statement, and on a busy event loop that dance is what costs.
        with self._db:
            self._db.execute("BEGIN")
            if deletes:
                self._db.executemany("DELETE FROM items WHERE key = ?", [(k,) for k in deletes])
            for start in range(0, len(rows), _ROWS_PER_STATEMENT):
                chunk = rows[start : start + _ROWS_PER_STATEMENT]
                values = ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk))
                self._db.execute(
                    f"INSERT OR REPLACE INTO items ({_COLUMNS}) VALUES {values}",
                    [value for row in chunk for value in row],
                )
        self.transactions += 1


def _connect(path: str, provider: str, workflow_id: str) -> tuple[sqlite3.Connection, str]:
    """The journal's database, created or brought to the current schema; and its batch id."""
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise _not_a_journal(path, exc) from exc
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
        if not meta:
            meta = {
                "batch_id": uuid.uuid4().hex,
                "provider": provider,
                "workflow_id": workflow_id,
                "schema": str(_SCHEMA_VERSION),
            }
            with db:
                db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        _check(path, meta, provider, workflow_id)
        if meta.get("schema") != str(_SCHEMA_VERSION):
            _migrate(db)
    except sqlite3.Error as exc:
        db.close()
        raise _not_a_journal(path, exc) from exc
    except BaseException:
        db.close()
        raise
    return db, meta["batch_id"]


def _check(path: str, meta: dict[str, str], provider: str, workflow_id: str) -> None:
    if (meta.get("provider"), meta.get("workflow_id")) != (provider, workflow_id):
        raise InvalidInputError(
            f"the journal {path!r} belongs to a batch of {meta.get('workflow_id')!r} on "
            f"{meta.get('provider')!r}, not {workflow_id!r} on {provider!r}: use another file"
        )
    schema = meta.get("schema", "1")
    if not schema.isdigit() or int(schema) > _SCHEMA_VERSION:
        raise InvalidInputError(
            f"the journal {path!r} was written by a newer workflow_trigger (schema {schema}, "
            f"this one knows {_SCHEMA_VERSION}): resume it with that version"
        )


def _migrate(db: sqlite3.Connection) -> None:
    """Schema 1 -> 2: the ``duplicated`` column. Rows written by schema 1 never stored the
    flag with their token, so it reads as False for them, as schema 1 reported it."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(items)")}
    with db:
        db.execute("BEGIN")
        if "duplicated" not in columns:
            db.execute("ALTER TABLE items ADD COLUMN duplicated INTEGER NOT NULL DEFAULT 0")
        db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(_SCHEMA_VERSION),))


def _not_a_journal(path: str, exc: sqlite3.Error) -> InvalidInputError:
    return InvalidInputError(
        f"cannot use {path!r} as a journal ({exc}): pass the path of a new file or "
        "of a journal this SDK wrote"
    )
