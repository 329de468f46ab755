"""The SQLite file itself: opening it (read-write in WAL mode, or read-only for a home that
cannot be written), its schema and version. Separate from ``sqlite.py``, whose subject is
the event log's rules (group commit, seq numbers, the lease), because none of this changes
how rows are written, only whether the file can hold them.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Final, Literal

from stormproof.errors import StormproofError
from stormproof.store import sqlite_results, sqlite_views
from stormproof.store.errors import SQLITE_DAMAGED, sqlite_error, sqlite_errors

Synchronous = Literal["normal", "group", "full"]
SCHEMA_VERSION: Final = 1
#: Most rows one ``flush`` writes with a single INSERT: 7 values each stays under 999, the
#: variable limit of SQLite before 3.32; bigger buffers go through ``executemany``.
ONE_STATEMENT_ROWS: Final = 128

#: The fencing tokens; made on first use in files older than the token (same schema version:
#: an older stormproof ignores the table).
CREATE_LEASES: Final = """CREATE TABLE IF NOT EXISTS leases (
        run   TEXT PRIMARY KEY,
        token INTEGER NOT NULL
    )"""
_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS store_info (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS runs (
        name          TEXT PRIMARY KEY,
        created_at    REAL NOT NULL,
        workflow_name TEXT NOT NULL,
        meta          TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS rows (
        run      TEXT    NOT NULL REFERENCES runs(name),
        seq      INTEGER NOT NULL CHECK (seq > 0),
        category TEXT    NOT NULL CHECK (category IN ('event', 'decision')),
        kind     TEXT    NOT NULL,
        at       REAL    NOT NULL,
        cause    INTEGER,
        data     TEXT    NOT NULL,
        PRIMARY KEY (run, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS requests (
        id   INTEGER PRIMARY KEY AUTOINCREMENT,
        run  TEXT NOT NULL REFERENCES runs(name),
        kind TEXT NOT NULL,
        at   REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS requests_by_run ON requests (run, id)",
    CREATE_LEASES,
    "INSERT OR IGNORE INTO store_info (key, value) VALUES ('schema_version', '1')",
)


def make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StormproofError(
            f"cannot create {path.parent} for the stormproof database ({exc.strerror}); "
            "choose another --home or STORMPROOF_HOME"
        ) from exc


def open_db(path: Path, synchronous: Synchronous, busy_timeout_s: float) -> sqlite3.Connection:
    """Connect, check the file is ours, set the pragmas and create the schema if new.

    ``isolation_level=None``: transactions are explicit (``_transaction``),
    never opened behind our back by the sqlite3 module.
    """
    with sqlite_errors(path):
        db = sqlite3.connect(
            path,
            timeout=busy_timeout_s,
            isolation_level=None,
            # one INSERT per flush size (up to ONE_STATEMENT_ROWS), and the rest
            cached_statements=ONE_STATEMENT_ROWS + 64,
        )
    try:
        with sqlite_errors(path):
            tables = _table_names(db)
            _use_wal(db, busy_timeout_s)
            level = "NORMAL" if synchronous == "group" else synchronous.upper()
            db.execute(f"PRAGMA synchronous = {level}")
            db.execute("PRAGMA foreign_keys = ON")
            if "store_info" not in tables:
                _create_schema(db, path, tables)
            _check_version(db, path)
            sqlite_results.ensure_schema(db)
            sqlite_views.ensure_schema(db)
    except BaseException:
        db.close()
        raise
    return db


def open_read_only(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """The file, read-only; an empty in-memory store if there is none (a home with no runs).

    ``mode=ro`` still reads the WAL through its ``-shm`` index, which it must be able to
    open or create; where it cannot (a read-only mount, a directory without write
    permission and no ``-shm`` left) the file is opened ``immutable``: no locks and no WAL,
    right for a home nobody can write into. Committed rows still in a WAL that could not
    be checkpointed are then not seen: SQLite cannot read them without the index.
    """
    if not path.exists():
        db = sqlite3.connect(":memory:", isolation_level=None)
        for statement in _SCHEMA:
            db.execute(statement)
        sqlite_results.ensure_schema(db)
        sqlite_views.ensure_schema(db)
        return db
    last: sqlite3.DatabaseError | None = None
    for query in ("mode=ro", "mode=ro&immutable=1"):
        uri = f"{path.resolve().as_uri()}?{query}"
        db = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, isolation_level=None)
        try:
            tables = _table_names(db)
            if "store_info" not in tables:
                raise StormproofError(f"{path} is not a stormproof database; {SQLITE_DAMAGED}")
            _check_version(db, path)
            return db
        except sqlite3.DatabaseError as exc:
            db.close()
            last = exc
        except BaseException:
            db.close()
            raise
    assert last is not None
    raise sqlite_error(last, path) from last


def _use_wal(db: sqlite3.Connection, busy_timeout_s: float) -> None:
    """Switch the file to WAL (persistent: the first opener does it for all).

    The switch needs an exclusive lock and SQLite answers ``database is
    locked`` at once, without its busy handler, while another process is
    creating the same fresh file; so wait for that here, up to the busy timeout.
    """
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _table_names(db: sqlite3.Connection) -> set[str]:
    """Reading the schema is also what detects a file that is not SQLite at all."""
    return {str(r[0]) for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _create_schema(db: sqlite3.Connection, path: Path, tables: set[str]) -> None:
    """Create the tables in one transaction; ``IF NOT EXISTS`` makes racing openers harmless."""
    if tables - {"sqlite_sequence"}:
        raise StormproofError(
            f"{path} is an SQLite database but not a stormproof one "
            f"(it has tables {', '.join(sorted(tables))}); move it away, "
            "or choose another --home or STORMPROOF_HOME"
        )
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA:
            db.execute(statement)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _check_version(db: sqlite3.Connection, path: Path) -> None:
    found = db.execute("SELECT value FROM store_info WHERE key = 'schema_version'").fetchone()
    version = int(found[0]) if found else 0
    if version > SCHEMA_VERSION:
        raise StormproofError(
            f"{path} was written by a newer stormproof (schema version {version}; this one "
            f"reads up to {SCHEMA_VERSION}); upgrade with `pip install -U stormproof`"
        )
    if version < 1:
        raise StormproofError(
            f"{path} has no stormproof schema version; the file is damaged: move it away, "
            "or choose another --home or STORMPROOF_HOME"
        )
