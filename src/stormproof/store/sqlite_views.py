"""The SQLite store's runs' views (``EventLog.save_view``/``load_view``).

Two tables beside the log: a run's summary with the seq it covers, and one record per task
keyed by its position in the workflow (the order every listing uses), with an index by
state (a big run's ``status`` lists its failed tasks by it). Another index would cost every
save, the driver's, during the run: a filter by stage or by ids scans one run's records.
A home whose database predates the tables gets them the first time it is opened for
writing; one opened read-only without them has no stored view (its log is folded).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import orjson

from stormproof.store.base import StoredView, TaskRecord
from stormproof.store.errors import SQLITE_DAMAGED
from stormproof.store.rows import dumps_row, loads_json, loads_view

SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS views (
        run      TEXT PRIMARY KEY REFERENCES runs(name),
        upto_seq INTEGER NOT NULL,
        summary  TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS task_views (
        run      TEXT    NOT NULL REFERENCES runs(name),
        position INTEGER NOT NULL,
        task_id  TEXT    NOT NULL,
        stage    INTEGER NOT NULL,
        state    TEXT    NOT NULL,
        data     TEXT    NOT NULL,
        PRIMARY KEY (run, position)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS task_views_by_state ON task_views (run, state, position)",
)
#: What ``delete_run`` empties before the run's record goes (their foreign keys).
TABLES: Final = ("task_views", "views")


def ensure_schema(db: sqlite3.Connection) -> None:
    """Create the tables if this database has none yet (one transaction)."""
    found = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'task_views'"
    ).fetchone()
    if found is not None:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in SCHEMA:
            db.execute(statement)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def save(
    db: sqlite3.Connection,
    run: str,
    upto_seq: int,
    summary: dict[str, Any],
    tasks: Sequence[TaskRecord],
    replace: bool,
) -> bool:
    """In the caller's transaction. ``IntegrityError`` if the run is not there."""
    # orjson straight: a view holds no NaN or infinity (``dumps_row`` checks for the log)
    dumps = orjson.dumps
    rows = [(run, t.position, t.task_id, t.stage, t.state, dumps(t.data)) for t in tasks]
    stored = db.execute("SELECT upto_seq FROM views WHERE run = ?", (run,)).fetchone()
    if stored is not None and int(stored[0]) > upto_seq:
        return False
    db.execute(
        "INSERT OR REPLACE INTO views (run, upto_seq, summary) VALUES (?, ?, ?)",
        (run, upto_seq, dumps_row(summary)),
    )
    if replace:
        db.execute("DELETE FROM task_views WHERE run = ?", (run,))
    db.executemany(
        "INSERT OR REPLACE INTO task_views (run, position, task_id, stage, state, data)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    return True


def load(
    db: sqlite3.Connection,
    run: str,
    states: Sequence[str] | None,
    stage: int | None,
    ids: Sequence[str] | None,
    limit: int | None,
    offset: int,
) -> StoredView | None:
    """The view read in one snapshot; ``None`` without one (the caller tells a missing run
    from a run without a view)."""
    where, params = _task_filter(run, states, stage, ids)
    with _read_snapshot(db):
        try:
            found = db.execute(
                "SELECT upto_seq, summary FROM views WHERE run = ?", (run,)
            ).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            return None  # a file of an older version, opened read-only
        if found is None:
            return None
        if limit == 0:  # a caller that wants no task wants no count either
            return StoredView(int(found[0]), loads_json(found[1], SQLITE_DAMAGED), [], 0)
        (matching,) = db.execute(
            f"SELECT count(*) FROM task_views WHERE {where}", params
        ).fetchone()
        cursor = db.execute(
            "SELECT task_id, position, stage, state, data FROM task_views"
            f" WHERE {where} ORDER BY position LIMIT ? OFFSET ?",
            (*params, -1 if limit is None else limit, offset),
        )
        records = [
            TaskRecord(str(t), int(p), int(g), str(st), loads_view(d, SQLITE_DAMAGED))
            for t, p, g, st, d in cursor
        ]
    return StoredView(int(found[0]), loads_json(found[1], SQLITE_DAMAGED), records, int(matching))


@contextmanager
def _read_snapshot(db: sqlite3.Connection) -> Iterator[None]:
    """Several SELECTs that see one state of the file (a driver may commit meanwhile)."""
    if db.in_transaction:
        yield
        return
    db.execute("BEGIN")
    try:
        yield
    finally:
        if db.in_transaction:
            db.execute("COMMIT")


def _task_filter(
    run: str, states: Sequence[str] | None, stage: int | None, ids: Sequence[str] | None
) -> tuple[str, list[Any]]:
    """The WHERE clause of a view's task query, with its parameters."""
    where: list[str] = ["run = ?"]
    params: list[Any] = [run]
    if states is not None:
        where.append(f"state IN ({', '.join('?' * len(states))})" if states else "0")
        params += list(states)
    if stage is not None:
        where.append("stage = ?")
        params.append(stage)
    if ids is not None:
        where.append(f"task_id IN ({', '.join('?' * len(ids))})" if ids else "0")
        params += list(ids)
    return " AND ".join(where), params
