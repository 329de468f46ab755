"""The SQLite store's index of task results (``EventLog.put_results`` and the rest).

One table beside the log, keyed by run and task, with an index by fingerprint (what
``run --reuse`` asks: one indexed lookup per fingerprint, in batches) and one by workflow
and task (what it asks to explain a task that matched nothing). A home whose database
predates the table gets it the first time it is opened by a version that knows it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Final

import orjson

from stormproof.store import sqlite_views
from stormproof.store.base import TaskResult
from stormproof.store.errors import SQLITE_DAMAGED
from stormproof.store.rows import result_from

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS results (
        run         TEXT NOT NULL REFERENCES runs(name),
        task_id     TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        workflow    TEXT NOT NULL,
        at          REAL NOT NULL,
        data        TEXT NOT NULL,
        definition  TEXT NOT NULL,
        PRIMARY KEY (run, task_id)
    )""",
    "CREATE INDEX IF NOT EXISTS results_by_fingerprint ON results (fingerprint, at)",
    "CREATE INDEX IF NOT EXISTS results_by_task ON results (workflow, task_id, at)",
)
#: Values per ``IN (...)`` lookup: under SQLite's old limit of 999 variables.
_BATCH: Final = 500
_COLUMNS: Final = "fingerprint, run, task_id, workflow, at, data"


def ensure_schema(db: sqlite3.Connection) -> None:
    """Create the table and its indexes if this database has none yet (one transaction)."""
    found = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'results'"
    ).fetchone()
    if found is not None:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA:
            db.execute(statement)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def put(db: sqlite3.Connection, results: Sequence[TaskResult]) -> None:
    if not results:
        return
    dumps = orjson.dumps
    rows = [
        (
            r.run,
            r.task_id,
            r.fingerprint,
            r.workflow,
            r.at,
            dumps(r.data).decode(),
            dumps(r.definition or {}).decode(),
        )
        for r in results
    ]
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany(
            "INSERT OR REPLACE INTO results"
            " (run, task_id, fingerprint, workflow, at, data, definition)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def find(db: sqlite3.Connection, fingerprints: Collection[str]) -> dict[str, TaskResult]:
    found: dict[str, TaskResult] = {}
    for batch in _batches(list(set(fingerprints))):
        marks = ",".join("?" * len(batch))
        cursor = db.execute(
            f"SELECT {_COLUMNS} FROM results WHERE fingerprint IN ({marks}) ORDER BY at", batch
        )
        for row in cursor:
            found[row[0]] = result_from(row, SQLITE_DAMAGED)  # ordered by time: the newest wins
    return found


def last(db: sqlite3.Connection, workflow: str, task_ids: Collection[str]) -> dict[str, TaskResult]:
    found: dict[str, TaskResult] = {}
    for batch in _batches(list(set(task_ids))):
        marks = ",".join("?" * len(batch))
        cursor = db.execute(
            f"SELECT {_COLUMNS}, definition FROM results"
            f" WHERE workflow = ? AND task_id IN ({marks}) ORDER BY at",
            [workflow, *batch],
        )
        for row in cursor:
            found[row[2]] = result_from(row, SQLITE_DAMAGED)
    return found


def delete_run(db: sqlite3.Connection, name: str, check: Callable[[], None] | None = None) -> bool:
    """Delete the run and everything of it in one transaction; False if there was none.
    ``check``, called first within the transaction, may refuse by raising (the lease's fence)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if check is not None:
            check()
        for table in ("results", "requests", "rows", *sqlite_views.TABLES):
            db.execute(f"DELETE FROM {table} WHERE run = ?", (name,))
        gone = db.execute("DELETE FROM runs WHERE name = ?", (name,)).rowcount
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return gone > 0


def _batches(values: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), _BATCH):
        yield values[start : start + _BATCH]
