"""The PostgreSQL store's runs' views (``EventLog.save_view``/``load_view``).

The tables are SQLite's (``store/sqlite_views.py``): a run's summary with the seq it covers,
and one record per task keyed by its position in the workflow, indexed by state. What
differs is the round trips: a save is **one statement** (the records go as arrays the server
unnests, as ``postgres.py`` writes rows; data-modifying ``WITH`` clauses write the summary,
drop the old records of a reshaped run and upsert the new ones, only if no newer view is
stored), and a load is one statement too, its count a window over the same selection, read
in one snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import orjson
import psycopg

from stormproof.store.base import StoredView, TaskRecord
from stormproof.store.errors import POSTGRES_DAMAGED
from stormproof.store.rows import dumps_row, loads_json, loads_view

#: Made with the other tables (``postgres.py``), or added to a database from before them.
SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS stormproof_views (
        run      text PRIMARY KEY REFERENCES stormproof_runs (name),
        upto_seq bigint NOT NULL,
        summary  text NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS stormproof_task_views (
        run      text    NOT NULL REFERENCES stormproof_runs (name),
        position integer NOT NULL,
        task_id  text    NOT NULL,
        stage    integer NOT NULL,
        state    text    NOT NULL,
        data     text    NOT NULL,
        PRIMARY KEY (run, position)
    )""",
    "CREATE INDEX IF NOT EXISTS stormproof_task_views_by_state"
    " ON stormproof_task_views (run, state, position)",
)
TABLES: Final = ("stormproof_views", "stormproof_task_views")

#: ``saved`` holds a row only if no newer view is stored; the records are written only
#: then. ``{drop}``: empty, or the clause that deletes the run's records at positions the
#: new ones do not take (a reshaped run). No row is both deleted and upserted: one statement
#: may not change a row twice.
_SAVE: Final = """
    WITH saved AS (
        INSERT INTO stormproof_views AS v (run, upto_seq, summary)
        VALUES (%(run)s, %(upto)s, %(summary)s)
        ON CONFLICT (run) DO UPDATE SET upto_seq = EXCLUDED.upto_seq, summary = EXCLUDED.summary
        WHERE v.upto_seq <= EXCLUDED.upto_seq
        RETURNING run
    ){drop}, records AS (
        INSERT INTO stormproof_task_views AS t (run, position, task_id, stage, state, data)
        SELECT %(run)s, r.* FROM unnest(%(positions)s::int[], %(ids)s::text[],
            %(stages)s::int[], %(states)s::text[], %(datas)s::text[]) AS r
        WHERE EXISTS (SELECT 1 FROM saved)
        ON CONFLICT (run, position) DO UPDATE SET task_id = EXCLUDED.task_id,
            stage = EXCLUDED.stage, state = EXCLUDED.state, data = EXCLUDED.data
    )
    SELECT count(*) FROM saved"""
_DROP: Final = """, dropped AS (
        DELETE FROM stormproof_task_views
        WHERE run = %(run)s AND EXISTS (SELECT 1 FROM saved)
            AND NOT (position = ANY(%(positions)s::int[]))
    )"""
_SUMMARY: Final = "SELECT upto_seq, summary FROM stormproof_views WHERE run = %s"

Connection = psycopg.Connection[tuple[Any, ...]]


def save(
    db: Connection,
    run: str,
    upto_seq: int,
    summary: dict[str, Any],
    tasks: Sequence[TaskRecord],
    replace: bool,
) -> bool:
    """One statement; ``ForeignKeyViolation`` if the run is not there."""
    dumps = orjson.dumps
    found = db.execute(
        _SAVE.format(drop=_DROP if replace else ""),
        {
            "run": run,
            "upto": upto_seq,
            "summary": dumps_row(summary),
            "positions": [t.position for t in tasks],
            "ids": [t.task_id for t in tasks],
            "stages": [t.stage for t in tasks],
            "states": [t.state for t in tasks],
            "datas": [dumps(t.data).decode() for t in tasks],
        },
    ).fetchone()
    return bool(found and found[0])


def load(
    db: Connection,
    run: str,
    states: Sequence[str] | None,
    stage: int | None,
    ids: Sequence[str] | None,
    limit: int | None,
    offset: int,
) -> StoredView | None:
    """The view read in one snapshot; ``None`` without one (the caller tells a missing run
    from a run without a view)."""
    with db.transaction():
        if limit != 0:  # REPEATABLE READ: the summary and the records of one moment
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        found = db.execute(_SUMMARY, (run,)).fetchone()
        if found is None:
            return None
        upto, summary = int(found[0]), loads_json(found[1], POSTGRES_DAMAGED)
        if limit == 0:  # a caller that wants no task wants no count either
            return StoredView(upto, summary, [], 0)
        where, params = _task_filter(run, states, stage, ids)
        rows = db.execute(
            "SELECT task_id, position, stage, state, data, count(*) OVER () FROM"
            f" stormproof_task_views WHERE {where} ORDER BY position LIMIT %s OFFSET %s",
            (*params, limit, offset),
        ).fetchall()
        matching = int(rows[0][5]) if rows else _count(db, where, params)
    records = [
        TaskRecord(str(t), int(p), int(g), str(st), loads_view(d, POSTGRES_DAMAGED))
        for t, p, g, st, d, _ in rows
    ]
    return StoredView(upto, summary, records, matching)


def _count(db: Connection, where: str, params: list[Any]) -> int:
    """How many match, when the page holds none (an offset past the end)."""
    found = db.execute(f"SELECT count(*) FROM stormproof_task_views WHERE {where}", params)
    row = found.fetchone()
    return int(row[0]) if row else 0


def _task_filter(
    run: str, states: Sequence[str] | None, stage: int | None, ids: Sequence[str] | None
) -> tuple[str, list[Any]]:
    """The WHERE clause of a view's task query, with its parameters."""
    where: list[str] = ["run = %s"]
    params: list[Any] = [run]
    if states is not None:
        where.append("state = ANY(%s::text[])")
        params.append(list(states))
    if stage is not None:
        where.append("stage = %s")
        params.append(stage)
    if ids is not None:
        where.append("task_id = ANY(%s::text[])")
        params.append(list(ids))
    return " AND ".join(where), params
