"""The PostgreSQL store's index of task results (``EventLog.put_results`` and the rest), and
``delete_run``.

The table is SQLite's (``store/sqlite_results.py``): keyed by run and task, indexed by
fingerprint (what ``run --reuse`` asks) and by workflow and task (what it asks to explain a
task that matched nothing). What differs is the round trips: every call is **one statement**,
so one transaction and one round trip whatever its size. Results to put go as arrays the
server unnests (as ``postgres.py`` writes rows); a lookup sends every fingerprint as one
array (``= ANY``, answered from the index) and the server keeps only the newest result of
each (``DISTINCT ON``), so a plan of 100,000 tasks costs one query, not 200 batches.

``delete_run`` deletes the run and everything of it with one statement of data-modifying
``WITH`` clauses. It keeps the run's lease row (freed), so that its fencing token goes on
growing if a run of the same name is made again: an orchestrator of the deleted run, frozen
meanwhile, can never pass the fence of the new one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Final

import orjson
import psycopg

from stormproof.store.base import TaskResult
from stormproof.store.errors import POSTGRES_DAMAGED
from stormproof.store.rows import result_from

#: Made with the other tables (``postgres.py``), or added to a database from before them.
SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS stormproof_results (
        run         text NOT NULL REFERENCES stormproof_runs (name),
        task_id     text NOT NULL,
        fingerprint text NOT NULL,
        workflow    text NOT NULL,
        at          double precision NOT NULL,
        data        text NOT NULL,
        definition  text NOT NULL,
        PRIMARY KEY (run, task_id)
    )""",
    "CREATE INDEX IF NOT EXISTS stormproof_results_by_fingerprint"
    " ON stormproof_results (fingerprint, at)",
    "CREATE INDEX IF NOT EXISTS stormproof_results_by_task"
    " ON stormproof_results (workflow, task_id, at)",
)

_PUT: Final = (
    "INSERT INTO stormproof_results (run, task_id, fingerprint, workflow, at, data, definition)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::float8[],"
    " %s::text[], %s::text[])"
    " ON CONFLICT (run, task_id) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,"
    " workflow = EXCLUDED.workflow, at = EXCLUDED.at, data = EXCLUDED.data,"
    " definition = EXCLUDED.definition"
)
_COLUMNS: Final = "fingerprint, run, task_id, workflow, at, data"
#: The newest result of each fingerprint; ties in time go to the greatest run name, so that
#: the answer never depends on the plan.
FIND: Final = (
    f"SELECT DISTINCT ON (fingerprint) {_COLUMNS} FROM stormproof_results"
    " WHERE fingerprint = ANY(%s::text[]) ORDER BY fingerprint, at DESC, run DESC"
)
_LAST: Final = (
    f"SELECT DISTINCT ON (task_id) {_COLUMNS}, definition FROM stormproof_results"
    " WHERE workflow = %s AND task_id = ANY(%s::text[]) ORDER BY task_id, at DESC, run DESC"
)
#: The run's record last: its foreign keys are checked at the end of the statement, when
#: the clauses before have deleted what refers to it. ``{fence}``: empty, or a condition that
#: holds only while the caller's lease token is the run's.
_DELETE_RUN: Final = """
    WITH run AS (
        DELETE FROM stormproof_runs WHERE name = %(run)s{fence} RETURNING name
    ), results AS (
        DELETE FROM stormproof_results WHERE run IN (SELECT name FROM run)
    ), requests AS (
        DELETE FROM stormproof_requests WHERE run IN (SELECT name FROM run)
    ), log AS (
        DELETE FROM stormproof_rows WHERE run IN (SELECT name FROM run)
    ), views AS (
        DELETE FROM stormproof_views WHERE run IN (SELECT name FROM run)
    ), task_views AS (
        DELETE FROM stormproof_task_views WHERE run IN (SELECT name FROM run)
    ), lease AS (
        UPDATE stormproof_leases SET holder_pid = NULL, holder_host = NULL,
            expires_at = clock_timestamp()
        WHERE run IN (SELECT name FROM run)
    )
    SELECT count(*) FROM run"""
_FENCE: Final = (
    " AND EXISTS (SELECT 1 FROM stormproof_leases WHERE run = %(run)s AND token = %(token)s"
    " FOR UPDATE)"
)

Connection = psycopg.Connection[tuple[Any, ...]]


def put(db: Connection, results: Sequence[TaskResult]) -> None:
    """Insert or replace, in one statement; of two results for one run's task, the later
    in ``results`` is kept (as SQLite's ``INSERT OR REPLACE`` does)."""
    latest = {(r.run, r.task_id): r for r in results}
    if not latest:
        return
    dumps = orjson.dumps
    items = latest.values()
    db.execute(
        _PUT,
        (
            [r.run for r in items],
            [r.task_id for r in items],
            [r.fingerprint for r in items],
            [r.workflow for r in items],
            [r.at for r in items],
            [dumps(r.data).decode() for r in items],
            [dumps(r.definition or {}).decode() for r in items],
        ),
    )


def find(db: Connection, fingerprints: Collection[str]) -> dict[str, TaskResult]:
    if not fingerprints:
        return {}
    cursor = db.execute(FIND, (list(set(fingerprints)),))
    return {str(row[0]): result_from(row, POSTGRES_DAMAGED) for row in cursor}


def last(db: Connection, workflow: str, task_ids: Collection[str]) -> dict[str, TaskResult]:
    if not task_ids:
        return {}
    cursor = db.execute(_LAST, (workflow, list(set(task_ids))))
    return {str(row[2]): result_from(row, POSTGRES_DAMAGED) for row in cursor}


def delete_run(db: Connection, name: str, token: int | None) -> bool:
    """Delete the run and everything of it, in one statement; False if nothing was deleted:
    no such run, or (``token`` given) the caller's lease token is no longer the run's."""
    statement = _DELETE_RUN.format(fence="" if token is None else _FENCE)
    found = db.execute(statement, {"run": name, "token": token}).fetchone()
    return bool(found and found[0])
