"""The default event log: every run of one stormproof home in one SQLite file.

SQLite because the default must need nothing started: one file
(``./.stormproof/stormproof.db``), real transactions, and in WAL mode a
``stormproof status`` in another process reads a consistent snapshot while
the driver writes, without blocking it.

The rules this module keeps:

* **Nothing is durable until ``flush``.** ``append`` only buffers (and numbers)
  rows in memory; ``flush`` writes the whole buffer in one transaction. This
  is the group commit of DESIGN §8: the driver appends many times and flushes
  once per loop iteration, *before* it acts on the decisions (outbox, then act).
  ``close`` never flushes: what becomes durable is the driver's call.
* **A flushed row survives kill -9** of the orchestrator with either
  ``synchronous`` setting: a commit has reached the WAL file in the kernel's
  page cache before ``flush`` returns. What differs is power loss (or a
  kernel panic, a hard-stopped VM):

  - ``"group"`` (the default): commits are not fsynced one by one; ``flush``
    fsyncs the WAL file itself when the last fsync is older than
    ``GROUP_FSYNC_S`` (0.1 s), and ``close`` fsyncs. Power loss can cut at most
    the last ~0.1 s off the log's tail, never its middle (WAL keeps a prefix).
    That is enough because the log is replayed deterministically and every
    backend is idempotent by attempt id: a launch that was done but whose
    record was lost is decided again with the same attempt id on resume, and
    ``recover`` finds the job by that id instead of running it twice.
  - ``"full"``: every commit is fsynced (costs ~0.2–0.7 ms per flush here,
    which caps a no-op-task run at a few thousand tasks a second).
  - ``"normal"``: no fsync of ours at all (SQLite's own at checkpoints).

  ``bench/store_append.py`` measures all three.
* **Seq numbers come from the store**, 1, 2, 3 … per run. The last seq of a
  run is read once, on its first ``append``, and counted in memory after that.
  That is safe because only the holder of the run's driver lease appends; a
  second writer without the lease is caught at ``flush`` by the primary key
  and reported, never interleaved.
* **Causes** (``Row.cause``) link a decision to the event that caused it. In
  one ``append`` call rows come as ``[event, its decisions…, event, its
  decisions…]``, and a cause may be given three ways:

  - ``None`` on a decision: the nearest preceding event *of the same call*;
  - a negative number ``-k``: the row ``k`` places earlier in the same call
    (``-1`` is the row just before);
  - a positive number: an absolute seq, earlier than the row's own.

  Events keep ``cause=None`` unless one is given. ``append`` returns the rows
  with their final ``seq`` and ``cause``.
* **The driver lease is an ``flock``** on ``<db dir>/locks/<run>.lock``: the
  kernel releases it when the holder exits or is killed, so a crashed driver
  never leaves a stale lease, and there is no expiry to tune. The lock file's
  descriptor is not inherited by exec'd children, so an attempt that outlives
  the orchestrator (local attempts do, by design) does not keep the lease. A
  child made by a bare ``os.fork()`` (no exec) *would* share it: don't.
* **Every sqlite3 failure becomes a ``StormproofError``** naming the file and
  the fix: a damaged or foreign file must not end in a traceback.
"""

from __future__ import annotations

import difflib
import fcntl
import functools
import json
import math
import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

import orjson

from stormproof.errors import RunExists, RunLocked, RunNotFound, StormproofError
from stormproof.store.base import Row, RowCategory, RunInfo, StoredView, TaskRecord

Synchronous = Literal["normal", "group", "full"]

SCHEMA_VERSION: Final = 1
DEFAULT_DB_PATH: Final = Path(".stormproof") / "stormproof.db"
DEFAULT_SYNCHRONOUS: Final[Synchronous] = "group"
GROUP_FSYNC_S: Final = 0.1
DEFAULT_BUSY_TIMEOUT_S: Final = 10.0

# ``is_driven`` probes the lock by taking it shared for a few microseconds; a
# driver that starts at that very moment retries for this long instead of
# reporting a lock that no driver holds.
_PROBE_GRACE_S: Final = 0.25
_PROBE_RETRY_S: Final = 0.002
_READ_BATCH: Final = 512
_INF: Final = math.inf
_DAMAGED: Final = (
    "the file is damaged or is not a stormproof database: move it away (a new one "
    "is created) or restore it from a backup; `sqlite3 FILE .recover` may save its rows"
)

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
    "INSERT OR IGNORE INTO store_info (key, value) VALUES ('schema_version', '1')",
)
#: The runs' views (``EventLog.save_view``): added to files of schema 1 as they are opened
#: for writing; a reader of a file without them folds the log instead.
_VIEW_SCHEMA: Final = (
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
    # One secondary index, by state: a big run's `status` lists its failed tasks. Another
    # would cost every save (the driver's, during the run); a filter by stage or ids scans
    # one run's records instead.
    "CREATE INDEX IF NOT EXISTS task_views_by_state ON task_views (run, state, position)",
)

_INSERT_ROW: Final = (
    "INSERT INTO rows (run, seq, category, kind, at, cause, data) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
#: Most rows one ``flush`` writes with a single INSERT: 7 values each stays under 999, the
#: variable limit of SQLite before 3.32; bigger buffers go through ``executemany``.
_ONE_STATEMENT_ROWS: Final = 128
_SELECT_ROWS: Final = (
    "SELECT seq, category, kind, at, cause, data FROM rows WHERE run = ? AND seq > ? ORDER BY seq"
)

# A buffered row, ready for ``executemany``: run, seq, category, kind, at, cause, data JSON.
_Pending = tuple[str, int, str, str, float, int | None, str]


class SQLiteEventLog:
    """The ``EventLog`` of one stormproof home, backed by one SQLite database file.

    One instance per process (and per thread: the connection is not shared
    across threads). Any number of processes may open the same file; only the
    holder of a run's ``driver_lease`` should append to that run.
    """

    def __init__(
        self,
        path: Path | str = DEFAULT_DB_PATH,
        *,
        synchronous: Synchronous = DEFAULT_SYNCHRONOUS,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        read_only: bool = False,
    ) -> None:
        """``read_only``: for a home that cannot be written; nothing is created (no file: no
        runs), and the file is opened read-only, or as immutable when even SQLite's
        shared-memory index of the WAL cannot be made (a read-only file system)."""
        if synchronous not in ("normal", "group", "full"):
            raise ValueError(
                f"synchronous must be 'normal', 'group' or 'full', not {synchronous!r}"
            )
        self.path = Path(path)
        self.synchronous: Synchronous = synchronous
        self._lock_dir = self.path.parent / "locks"
        self._buffer: list[_Pending] = []
        self._last_seq: dict[str, int] = {}
        if read_only:
            self._db = _open_read_only(self.path, busy_timeout_s)
        else:
            _make_parent(self.path)
            self._db = _open(self.path, synchronous, busy_timeout_s)
        self._last_fsync = time.monotonic()
        self._unsynced = False

    # -- runs -----------------------------------------------------------------

    def create_run(self, name: str, workflow_name: str, meta: dict[str, Any], at: float) -> None:
        """Record a new run; committed at once so that ``status`` sees it immediately."""
        _check_run_name(name)
        with self._errors():
            try:
                self._db.execute(
                    "INSERT INTO runs (name, created_at, workflow_name, meta) VALUES (?, ?, ?, ?)",
                    (name, at, workflow_name, _dumps(meta)),
                )
            except sqlite3.IntegrityError:
                raise RunExists(
                    f"run {name!r} exists; continue it with `stormproof resume {name}` "
                    "or pick another --name"
                ) from None

    def get_run(self, name: str) -> RunInfo:
        """The run's record; ``RunNotFound`` names the runs it might have meant."""
        with self._errors():
            found = self._db.execute(
                "SELECT name, created_at, workflow_name, meta FROM runs WHERE name = ?", (name,)
            ).fetchone()
        if found is None:
            raise self._run_not_found(name)
        return _run_info(found)

    def list_runs(self) -> list[RunInfo]:
        """Newest first; ``rowid`` breaks ties between runs created in the same instant."""
        with self._errors():
            found = self._db.execute(
                "SELECT name, created_at, workflow_name, meta FROM runs"
                " ORDER BY created_at DESC, rowid DESC"
            ).fetchall()
        return [_run_info(r) for r in found]

    # -- rows -----------------------------------------------------------------

    def append(self, run: str, rows: Sequence[Row]) -> list[Row]:
        """Number and buffer ``rows``; see the module docstring for how causes resolve.

        All-or-nothing: a malformed row raises ``ValueError`` and nothing is buffered.
        """
        if not rows:
            return []
        numbered = number_rows(rows, self._last_seq_of(run) + 1)
        pending = [
            (run, r.seq, r.category, r.kind, r.at, r.cause, _dumps_row(r.data)) for r in numbered
        ]
        self._buffer.extend(pending)
        self._last_seq[run] = numbered[-1].seq
        return numbered

    def flush(self) -> None:
        """Commit every buffered row in one transaction; on failure the buffer is kept."""
        if not self._buffer:
            return
        buffer = self._buffer
        with self._errors():
            try:
                if len(buffer) <= _ONE_STATEMENT_ROWS:
                    # one statement is one transaction: no BEGIN and COMMIT round trips
                    # (a flush per driver loop iteration; this saves a fifth of its time)
                    params = [value for row in buffer for value in row]
                    self._db.execute(_insert_rows(len(buffer)), params)
                else:
                    with self._transaction():
                        self._db.executemany(_INSERT_ROW, buffer)
            except sqlite3.IntegrityError as exc:
                raise self._collision(exc) from exc
        self._buffer.clear()
        if self.synchronous == "group":
            self._unsynced = True
            if time.monotonic() - self._last_fsync >= GROUP_FSYNC_S:
                self._fsync_wal()

    def _fsync_wal(self) -> None:
        """fsync the WAL file: an fsync of any descriptor of a file makes all of it durable."""
        self._last_fsync = time.monotonic()
        self._unsynced = False
        try:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY)
        except FileNotFoundError:
            return  # checkpointed away: its content is in the (fsynced) database file
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, run: str, after_seq: int = 0) -> Iterator[Row]:
        """The run's durable rows after ``after_seq``, streamed in batches.

        ``RunNotFound`` is raised here, not on the first ``next``. The iterator
        reads one snapshot; do not ``flush`` on this instance while iterating.
        """
        with self._errors():
            known = self._db.execute("SELECT 1 FROM runs WHERE name = ?", (run,)).fetchone()
        if known is None:
            raise self._run_not_found(run)
        return self._stream(run, after_seq)

    def _stream(self, run: str, after_seq: int) -> Iterator[Row]:
        with self._errors():
            cursor = self._db.execute(_SELECT_ROWS, (run, after_seq))
        try:
            while True:
                with self._errors():
                    batch = cursor.fetchmany(_READ_BATCH)
                if not batch:
                    return
                yield from (_row(r) for r in batch)
        finally:
            cursor.close()

    # -- requests -------------------------------------------------------------

    def post_request(self, run: str, kind: str, at: float) -> None:
        """Leave ``kind`` for the run's driver; ``RunNotFound`` if there is no such run."""
        with self._errors():
            cursor = self._db.execute(
                "INSERT INTO requests (run, kind, at)"
                " SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM runs WHERE name = ?)",
                (run, kind, at, run),
            )
        if cursor.rowcount == 0:
            raise self._run_not_found(run)

    def take_requests(self, run: str) -> list[str]:
        """Pop the run's requests, oldest first: select and delete in one transaction.

        The driver calls this every loop iteration, so the usual empty inbox is
        answered by a plain read that takes no write lock.
        """
        with self._errors():
            waiting = self._db.execute(
                "SELECT EXISTS (SELECT 1 FROM requests WHERE run = ?)", (run,)
            ).fetchone()
            if not waiting[0]:
                return []
            with self._transaction():
                taken = self._db.execute(
                    "SELECT id, kind FROM requests WHERE run = ? ORDER BY id", (run,)
                ).fetchall()
                if taken:
                    last_id = int(taken[-1][0])
                    self._db.execute(
                        "DELETE FROM requests WHERE run = ? AND id <= ?", (run, last_id)
                    )
        return [str(kind) for _, kind in taken]

    # -- driver lease -----------------------------------------------------------

    def driver_lease(self, run: str) -> AbstractContextManager[None]:
        """Hold the run exclusively until the block ends or this process dies."""
        return self._lease(self._lock_path(run), run)

    @contextmanager
    def _lease(self, lock_path: Path, run: str) -> Iterator[None]:
        self._lock_dir.mkdir(exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _acquire(fd, run)
            try:
                _write_holder(fd)
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def is_driven(self, run: str) -> bool:
        """Probe the lease with a shared lock, so probes never exclude each other."""
        try:
            fd = os.open(self._lock_path(run), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def _lock_path(self, run: str) -> Path:
        return self._lock_dir / f"{_check_run_name(run)}.lock"

    # -- views ----------------------------------------------------------------

    def save_view(
        self, run: str, upto_seq: int, summary: dict[str, Any], tasks: Sequence[TaskRecord]
    ) -> bool:
        """Upsert the task records and replace the summary, unless a newer view is stored."""
        # orjson straight: a view holds no NaN or infinity (``_dumps_row`` checks for the log)
        dumps = orjson.dumps
        rows = [(run, t.position, t.task_id, t.stage, t.state, dumps(t.data)) for t in tasks]
        with self._errors(), self._transaction():
            stored = self._db.execute("SELECT upto_seq FROM views WHERE run = ?", (run,)).fetchone()
            if stored is not None and int(stored[0]) > upto_seq:
                return False
            self._db.executemany(
                "INSERT OR REPLACE INTO task_views (run, position, task_id, stage, state, data)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._db.execute(
                "INSERT OR REPLACE INTO views (run, upto_seq, summary) VALUES (?, ?, ?)",
                (run, upto_seq, _dumps_row(summary)),
            )
        return True

    def load_view(
        self,
        run: str,
        *,
        states: Sequence[str] | None = None,
        stage: int | None = None,
        ids: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> StoredView | None:
        """The summary, and one page of the tasks that match, read in one snapshot."""
        where, params = _task_filter(run, states, stage, ids)
        with self._errors(), self._read_snapshot():
            try:
                found = self._db.execute(
                    "SELECT upto_seq, summary FROM views WHERE run = ?", (run,)
                ).fetchone()
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
                found = None  # a file of an older version, opened read-only
            if found is None:
                exists = self._db.execute("SELECT 1 FROM runs WHERE name = ?", (run,)).fetchone()
                if exists is None:  # not the run's record: its metadata holds the whole workflow
                    raise self._run_not_found(run)
                return None
            matching = 0
            if limit != 0:  # a caller that wants no task wants no count either
                matching = int(
                    self._db.execute(
                        f"SELECT count(*) FROM task_views WHERE {where}", params
                    ).fetchone()[0]
                )
            records: list[TaskRecord] = []
            if limit != 0:
                cursor = self._db.execute(
                    "SELECT task_id, position, stage, state, data FROM task_views"
                    f" WHERE {where} ORDER BY position LIMIT ? OFFSET ?",
                    (*params, -1 if limit is None else limit, offset),
                )
                records = [
                    TaskRecord(str(t), int(p), int(g), str(st), _loads_view(d))
                    for t, p, g, st, d in cursor
                ]
        return StoredView(int(found[0]), _loads(found[1]), records, matching)

    @contextmanager
    def _read_snapshot(self) -> Iterator[None]:
        """Several SELECTs that see one state of the file (a driver may commit meanwhile)."""
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            if self._db.in_transaction:
                self._db.execute("COMMIT")

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Close the connection. Unflushed rows are dropped: ``close`` is not a flush."""
        self._buffer.clear()
        if self._unsynced:
            self._fsync_wal()
        self._db.close()

    def __enter__(self) -> SQLiteEventLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- helpers --------------------------------------------------------------

    def _last_seq_of(self, run: str) -> int:
        """The run's last durable or buffered seq: one query per run, then memory."""
        if run in self._last_seq:
            return self._last_seq[run]
        with self._errors():
            known, last = self._db.execute(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE name = ?),"
                " (SELECT coalesce(max(seq), 0) FROM rows WHERE run = ?)",
                (run, run),
            ).fetchone()
        if not known:
            raise self._run_not_found(run)
        self._last_seq[run] = int(last)
        return self._last_seq[run]

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` takes the write lock up front, so the commit cannot
        fail half-way on a lock held by another process (the busy timeout covers the wait)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        with _translated(self.path):
            yield

    def _run_not_found(self, name: str) -> RunNotFound:
        with self._errors():
            names = [str(r[0]) for r in self._db.execute("SELECT name FROM runs")]
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" (did you mean {_either(close)}?)" if close else ""
        return RunNotFound(
            f"no run named {name!r} in {self.path.parent.resolve()}{hint}; "
            "`stormproof status` lists runs"
        )

    def _collision(self, exc: sqlite3.IntegrityError) -> StormproofError:
        runs = sorted({p[0] for p in self._buffer})
        first = runs[0] if runs else "?"
        return StormproofError(
            f"{self.path}: rows of run {_either(runs)} collide with rows already stored "
            f"({exc}): another process appended to the run without holding its driver lease; "
            f"stop the other orchestrator, then `stormproof resume {first}`"
        )


# -- pure helpers ---------------------------------------------------------------


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


@functools.lru_cache(maxsize=_ONE_STATEMENT_ROWS)
def _insert_rows(count: int) -> str:
    return _INSERT_ROW.replace("(?, ?, ?, ?, ?, ?, ?)", ", ".join(["(?,?,?,?,?,?,?)"] * count))


def number_rows(rows: Sequence[Row], first_seq: int) -> list[Row]:
    """Give ``rows`` the seqs ``first_seq, first_seq + 1, …`` and resolve their causes.

    Pure, so the rules about causes can be tested without a database.
    """
    numbered: list[Row] = []
    last_event: int | None = None
    seq = first_seq
    for index, row in enumerate(rows):
        category, cause = row.category, row.cause
        if row.seq != 0 or (category != "event" and category != "decision"):
            _check_row(row, index)  # raises
        if cause is None and category == "event":
            last_event = seq
        elif cause is None and last_event is not None:
            cause = last_event  # the driver's rows: a decision after its event
        else:
            cause = _resolve_cause(rows, index, first_seq, last_event)
            if category == "event":
                last_event = seq
        numbered.append(Row(seq, category, row.kind, row.at, cause, row.data))
        seq += 1
    return numbered


def _check_row(row: Row, index: int) -> None:
    if row.category not in ("event", "decision"):
        raise ValueError(f"rows[{index}]: category must be 'event' or 'decision'")
    if row.seq != 0:
        raise ValueError(f"rows[{index}]: seq is assigned by append; pass 0, not {row.seq}")


def _resolve_cause(
    rows: Sequence[Row], index: int, first_seq: int, last_event: int | None
) -> int | None:
    row = rows[index]
    seq = first_seq + index
    if row.cause is None:
        if row.category == "event":
            return None
        if last_event is None:
            raise ValueError(
                f"rows[{index}]: decision {row.kind!r} has no cause and no event precedes it "
                "in this append; append an event with its decisions, or give the cause's seq"
            )
        return last_event
    if row.cause < 0:
        target = index + row.cause
        if target < 0:
            raise ValueError(
                f"rows[{index}]: cause {row.cause} points before the start of this append"
            )
        _check_cause_category(row, index, rows[target].category)
        return first_seq + target
    if not 0 < row.cause < seq:
        raise ValueError(
            f"rows[{index}]: cause {row.cause} must be an earlier seq (this row gets {seq})"
        )
    if row.cause >= first_seq:
        _check_cause_category(row, index, rows[row.cause - first_seq].category)
    return row.cause


def _check_cause_category(row: Row, index: int, cause_category: RowCategory) -> None:
    if row.category == "decision" and cause_category != "event":
        raise ValueError(f"rows[{index}]: decision {row.kind!r} must be caused by an event")


def _check_run_name(name: str) -> str:
    """Run names become file names: refuse what could leave the locks directory."""
    if not name or "/" in name or "\0" in name or name.startswith("."):
        raise StormproofError(
            f"run name {name!r} is not allowed: it must not be empty, contain '/' or start with '.'"
        )
    return name


def _either(names: Sequence[str]) -> str:
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" or {quoted[-1]}"


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _dumps_row(value: dict[str, Any]) -> str:
    """One row's data as JSON text, with ``orjson`` (a tenth of ``json.dumps``'s time; the
    driver writes a row per event and per decision). orjson writes NaN and infinities as
    ``null``, so a row holding one (none of the core's do today) goes through ``json``, which
    keeps them; so does anything orjson refuses (non-str keys, huge ints)."""
    for v in value.values():
        t = v.__class__
        if (t is float and not -_INF < v < _INF) or (
            (t is tuple or t is list or t is dict) and not _finite(v)
        ):
            return _dumps(value)
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return _dumps(value)


def _finite(value: Any) -> bool:
    t = value.__class__
    if t is float:
        return bool(-_INF < value < _INF)
    if t is dict:
        return all(_finite(v) for v in value.values())
    if t is tuple or t is list:
        return all(_finite(v) for v in value)
    return True


def _loads(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise StormproofError(f"a stored JSON object is damaged ({exc}); {_DAMAGED}") from exc
    if not isinstance(value, dict):
        raise StormproofError(f"a stored JSON object is a {type(value).__name__}; {_DAMAGED}")
    return value


def _loads_view(data: bytes | str) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise StormproofError(f"a stored view is damaged ({exc}); {_DAMAGED}") from exc
    if not isinstance(value, dict):
        raise StormproofError(f"a stored view is a {type(value).__name__}; {_DAMAGED}")
    return value


def _row(r: tuple[Any, ...]) -> Row:
    seq, category, kind, at, cause, data = r
    return Row(
        int(seq),
        category,
        str(kind),
        float(at),
        None if cause is None else int(cause),
        _loads(data),
    )


def _run_info(r: tuple[Any, ...]) -> RunInfo:
    name, created_at, workflow_name, meta = r
    return RunInfo(str(name), float(created_at), str(workflow_name), _loads(meta))


# -- the lock file ----------------------------------------------------------------


def _acquire(fd: int, run: str) -> None:
    """Take the lease or raise ``RunLocked``; waits only out a concurrent ``is_driven`` probe."""
    deadline = time.monotonic() + _PROBE_GRACE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise RunLocked(
                    f"run {run!r} is being driven by another stormproof process "
                    f"({_holder(fd)}); wait for it, or stop it first"
                ) from None
            time.sleep(_PROBE_RETRY_S)


def _write_holder(fd: int) -> None:
    """Say who holds the lease, for the other side's ``RunLocked`` message."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)


def _holder(fd: int) -> str:
    words = os.pread(fd, 512, 0).decode(errors="replace").split()
    if not words:
        return "pid unknown"
    if len(words) > 1 and words[1] != socket.gethostname():
        return f"pid {words[0]} on host {words[1]}"
    return f"pid {words[0]}"


# -- opening the database -----------------------------------------------------------


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StormproofError(
            f"cannot create {path.parent} for the stormproof database ({exc.strerror}); "
            "choose another --home or STORMPROOF_HOME"
        ) from exc


def _open(path: Path, synchronous: Synchronous, busy_timeout_s: float) -> sqlite3.Connection:
    """Connect, check the file is ours, set the pragmas and create the schema if new.

    ``isolation_level=None``: transactions are explicit (``_transaction``),
    never opened behind our back by the sqlite3 module.
    """
    with _translated(path):
        db = sqlite3.connect(
            path,
            timeout=busy_timeout_s,
            isolation_level=None,
            # one INSERT per flush size (up to _ONE_STATEMENT_ROWS), and the rest
            cached_statements=_ONE_STATEMENT_ROWS + 64,
        )
    try:
        with _translated(path):
            tables = _table_names(db)
            _use_wal(db, busy_timeout_s)
            level = "NORMAL" if synchronous == "group" else synchronous.upper()
            db.execute(f"PRAGMA synchronous = {level}")
            db.execute("PRAGMA foreign_keys = ON")
            if "store_info" not in tables:
                _create_schema(db, path, tables)
            _check_version(db, path)
            if "task_views" not in tables:
                for statement in _VIEW_SCHEMA:
                    db.execute(statement)
    except BaseException:
        db.close()
        raise
    return db


def _open_read_only(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """The file, read-only; an empty in-memory store if there is none (a home with no runs).

    ``mode=ro`` still reads the WAL through its ``-shm`` index, which it must be able to
    open or create; where it cannot (a read-only mount, a directory without write
    permission and no ``-shm`` left) the file is opened ``immutable``: no locks and no WAL,
    right for a home nobody can write into. Committed rows still in a WAL that could not
    be checkpointed are then not seen: SQLite cannot read them without the index.
    """
    if not path.exists():
        db = sqlite3.connect(":memory:", isolation_level=None)
        for statement in (*_SCHEMA, *_VIEW_SCHEMA):
            db.execute(statement)
        return db
    last: sqlite3.DatabaseError | None = None
    for query in ("mode=ro", "mode=ro&immutable=1"):
        uri = f"{path.resolve().as_uri()}?{query}"
        db = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, isolation_level=None)
        try:
            tables = _table_names(db)
            if "store_info" not in tables:
                raise StormproofError(f"{path} is not a stormproof database; {_DAMAGED}")
            _check_version(db, path)
            return db
        except sqlite3.DatabaseError as exc:
            db.close()
            last = exc
        except BaseException:
            db.close()
            raise
    assert last is not None
    raise StormproofError(f"stormproof database {path}: {last}; {_fix_for(last)}") from last


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


@contextmanager
def _translated(path: Path) -> Iterator[None]:
    """Turn sqlite3's failures into a ``StormproofError`` that names the file and the fix.

    Programming errors (closed connection, wrong parameters) and integrity
    errors, which callers handle themselves, pass through untouched.
    """
    try:
        yield
    except (sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.IntegrityError):
        raise
    except sqlite3.DatabaseError as exc:
        raise StormproofError(f"stormproof database {path}: {exc}; {_fix_for(exc)}") from exc


def _fix_for(exc: sqlite3.DatabaseError) -> str:
    message = str(exc).lower()
    if "not a database" in message or "malformed" in message or "corrupt" in message:
        return _DAMAGED
    if "locked" in message or "busy" in message:
        return "another process holds it for writing; try again in a moment"
    if "full" in message:
        return "free some disk space, then try again (`stormproof resume RUN` for a run)"
    if "unable to open" in message or "readonly" in message or "read-only" in message:
        return "check that its directory exists and is writable, or choose another --home"
    return "check the disk and the file's permissions"
