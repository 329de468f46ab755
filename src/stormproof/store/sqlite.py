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
* **Causes** (``Row.cause``) link a decision to the event that caused it; ``append``
  resolves them as ``store/rows.py`` says, the same for every backend, and returns
  the rows with their final ``seq`` and ``cause``.
* **The driver lease is an ``flock``** on ``<db dir>/locks/<run>.lock``: the
  kernel releases it when the holder exits or is killed, so a crashed driver
  never leaves a stale lease, and there is no expiry to tune. The lock file's
  descriptor is not inherited by exec'd children, so an attempt that outlives
  the orchestrator (local attempts do, by design) does not keep the lease. A
  child made by a bare ``os.fork()`` (no exec) *would* share it: don't.
* **The lease also has a fencing token** (table ``leases``), raised by one each
  time the lock is taken. A flush of a run whose lease this instance holds
  inserts its rows only if the run's token is still the one it got, in the same
  statement; otherwise ``LeaseLost``. The lock makes a second holder impossible
  while the first lives, so the token matters only when the lock was broken
  behind the holder's back (its lock file deleted, a home on a network
  filesystem whose locks do not work): then the first holder stops at its next
  flush instead of writing beside the second. It costs a lookup per flush.
* **Every sqlite3 failure becomes a ``StoreFault`` or ``StormproofError``**
  (``store/errors.py``) naming the file and the fix: a damaged or foreign file
  must not end in a traceback.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, ClassVar, Final

from stormproof.errors import LeaseLost, StormproofError
from stormproof.store import sqlite_results, sqlite_views
from stormproof.store._lockfile import acquire, read_holder, write_holder
from stormproof.store.base import (
    Lease,
    LeaseHolder,
    Row,
    TaskRecord,
    TaskResult,
)
from stormproof.store.errors import SQLITE_DAMAGED, lease_lost, sqlite_errors
from stormproof.store.rows import (
    check_run_name,
    dumps_row,
    either,
    number_rows,
    row_from,
)
from stormproof.store.sql import ResultQueries, SqlEventLog, ViewQueries
from stormproof.store.sqlite_file import (
    CREATE_LEASES,
    ONE_STATEMENT_ROWS,
    Synchronous,
    make_parent,
    open_db,
    open_read_only,
)

DEFAULT_DB_PATH: Final = Path(".stormproof") / "stormproof.db"
DEFAULT_SYNCHRONOUS: Final[Synchronous] = "group"
GROUP_FSYNC_S: Final = 0.1
DEFAULT_BUSY_TIMEOUT_S: Final = 10.0

_READ_BATCH: Final = 512

_INSERT_ROW: Final = (
    "INSERT INTO rows (run, seq, category, kind, at, cause, data) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
#: The same, fenced: inserts nothing unless the run's token is still the holder's (two last
#: parameters: the run, the token).
_FENCE: Final = " WHERE (SELECT token FROM leases WHERE run = ?) = ?"
_SELECT_ROWS: Final = (
    "SELECT seq, category, kind, at, cause, data FROM rows WHERE run = ? AND seq > ? ORDER BY seq"
)

# A buffered row, ready for ``executemany``: run, seq, category, kind, at, cause, data JSON.
_Pending = tuple[str, int, str, str, float, int | None, str]


class SQLiteEventLog(SqlEventLog):
    """The ``EventLog`` of one stormproof home, backed by one SQLite database file.

    One instance per process (and per thread: the connection is not shared
    across threads). Any number of processes may open the same file; only the
    holder of a run's ``driver_lease`` should append to that run.
    """

    PARAM = "?"
    RUNS_TABLE = "runs"
    ROWS_TABLE = "rows"
    CREATION_ORDER = "rowid"
    DAMAGED = SQLITE_DAMAGED
    DUPLICATE = sqlite3.IntegrityError
    VIEWS: ClassVar[ViewQueries] = sqlite_views
    RESULTS: ClassVar[ResultQueries] = sqlite_results

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
        self._buffered_runs: set[str] = set()
        self._last_seq: dict[str, int] = {}
        #: The fencing token of each run whose lease this instance holds.
        self._tokens: dict[str, int] = {}
        if read_only:
            self._db = open_read_only(self.path, busy_timeout_s)
        else:
            make_parent(self.path)
            self._db = open_db(self.path, synchronous, busy_timeout_s)
        self._last_fsync = time.monotonic()
        self._unsynced = False

    # -- runs -----------------------------------------------------------------

    # -- rows -----------------------------------------------------------------

    def append(self, run: str, rows: Sequence[Row]) -> list[Row]:
        """Number and buffer ``rows``; see the module docstring for how causes resolve.

        All-or-nothing: a malformed row raises ``ValueError`` and nothing is buffered.
        """
        if not rows:
            return []
        numbered = number_rows(rows, self._last_seq_of(run) + 1)
        pending = [
            (run, r.seq, r.category, r.kind, r.at, r.cause, dumps_row(r.data)) for r in numbered
        ]
        self._buffer.extend(pending)
        self._buffered_runs.add(run)
        self._last_seq[run] = numbered[-1].seq
        return numbered

    def flush(self) -> None:
        """Commit every buffered row in one transaction; on failure the buffer is kept.

        A run whose lease this instance holds is fenced in the same transaction:
        ``LeaseLost`` (and nothing written) if its token has moved on.
        """
        if not self._buffer:
            return
        buffer = self._buffer
        runs = self._buffered_runs
        fenced = [run for run in runs if run in self._tokens]
        with self._errors():
            try:
                if len(buffer) <= ONE_STATEMENT_ROWS and (not fenced or len(runs) == 1):
                    # one statement is one transaction: no BEGIN and COMMIT round trips
                    # (a flush per driver loop iteration; this saves a fifth of its time)
                    self._insert_at_once(buffer, fenced[0] if fenced else None)
                else:
                    with self._transaction():
                        for run in fenced:
                            self._check_token(run)
                        self._db.executemany(_INSERT_ROW, buffer)
            except sqlite3.IntegrityError as exc:
                raise self._collision(exc) from exc
        self._buffer.clear()
        self._buffered_runs.clear()
        if self.synchronous == "group":
            self._unsynced = True
            if time.monotonic() - self._last_fsync >= GROUP_FSYNC_S:
                with self._errors():
                    self._fsync_wal()

    def _insert_at_once(self, buffer: list[_Pending], fenced_run: str | None) -> None:
        params = [value for row in buffer for value in row]
        if fenced_run is None:
            self._db.execute(_insert_rows(len(buffer)), params)
            return
        token = self._tokens[fenced_run]
        statement = _insert_rows(len(buffer), fenced=True)
        cursor = self._db.execute(statement, [*params, fenced_run, token])
        if cursor.rowcount == 0:
            raise self._lease_lost(fenced_run)

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
                yield from (row_from(r, SQLITE_DAMAGED) for r in batch)
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
                if run in self._tokens:
                    self._check_token(run)  # a lease taken over must not swallow a request
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

    def driver_lease(self, run: str) -> AbstractContextManager[Lease]:
        """Hold the run exclusively until the block ends or this process dies."""
        return self._lease(self._lock_path(run), run)

    @contextmanager
    def _lease(self, lock_path: Path, run: str) -> Iterator[Lease]:
        self._lock_dir.mkdir(exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            acquire(fd, run)
            try:
                token = self._next_token(run)
                write_holder(fd, token)
                self._tokens[run] = token
                yield _LockLease(self, run, token)
            finally:
                self._tokens.pop(run, None)
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _next_token(self, run: str) -> int:
        """Raise the run's fencing token by one, under the lock: the new holder's token."""
        with self._errors(), self._transaction():
            self._db.execute(CREATE_LEASES)
            (token,) = self._db.execute(
                "INSERT INTO leases (run, token) VALUES (?, 1)"
                " ON CONFLICT (run) DO UPDATE SET token = token + 1 RETURNING token",
                (run,),
            ).fetchone()
        return int(token)

    def _check_token(self, run: str) -> None:
        """``LeaseLost`` unless the run's token is still ours (called within a transaction)."""
        found = self._db.execute("SELECT token FROM leases WHERE run = ?", (run,)).fetchone()
        if found is None or int(found[0]) != self._tokens[run]:
            raise self._lease_lost(run)

    def _lease_lost(self, run: str) -> LeaseLost:
        found = self._db.execute("SELECT token FROM leases WHERE run = ?", (run,)).fetchone()
        try:
            holder = read_holder(self._lock_path(run))
        except OSError:
            holder = LeaseHolder(None, "", 0, None)
        if found is not None:
            holder = LeaseHolder(holder.pid, holder.host, int(found[0]), None)
        return lease_lost(
            run,
            self._tokens.get(run, 0),
            holder,
            "its lock was broken behind its back (was its lock file deleted, or is the home "
            "on a network filesystem whose locks do not work?)",
        )

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
        return self._lock_dir / f"{check_run_name(run)}.lock"

    # -- results across runs (``store/sqlite_results.py``) -------------------------

    def put_results(self, results: Sequence[TaskResult]) -> None:
        """All or nothing: ``RunNotFound`` (and nothing put) if a result's run is not there."""
        with self._errors():
            try:
                sqlite_results.put(self._db, results)
            except sqlite3.IntegrityError:  # the foreign key: a run deleted meanwhile
                runs = sorted({r.run for r in results})
                gone = [run for run in runs if not self._run_exists(run)]
                raise self._run_not_found(gone[0] if gone else runs[0]) from None

    def delete_run(self, name: str) -> None:
        """Fenced when this instance holds the run's lease: ``LeaseLost`` if it was broken."""
        fence = functools.partial(self._check_token, name) if name in self._tokens else None
        with self._errors():
            gone = sqlite_results.delete_run(self._db, name, fence)
        if not gone:
            raise self._run_not_found(name)
        self._last_seq.pop(name, None)
        self._lock_path(name).unlink(missing_ok=True)

    # -- views (``store/sqlite_views.py``) ------------------------------------------

    def save_view(
        self,
        run: str,
        upto_seq: int,
        summary: dict[str, Any],
        tasks: Sequence[TaskRecord],
        *,
        replace: bool = False,
    ) -> bool:
        """Upsert the task records and replace the summary, unless a newer view is stored."""
        with self._errors():
            try:
                with self._transaction():
                    return sqlite_views.save(self._db, run, upto_seq, summary, tasks, replace)
            except sqlite3.IntegrityError:  # the foreign key: no such run (or deleted)
                raise self._run_not_found(run) from None

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Close the connection. Unflushed rows are dropped: ``close`` is not a flush."""
        self._buffer.clear()
        if self._unsynced:
            with contextlib.suppress(OSError):  # nothing to hand the failure to any more
                self._fsync_wal()
        self._db.close()

    # -- helpers --------------------------------------------------------------

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
        with sqlite_errors(self.path):
            yield

    def _where(self) -> str:
        return str(self.path.parent.resolve())

    def _collision(self, exc: sqlite3.IntegrityError) -> StormproofError:
        runs = sorted({p[0] for p in self._buffer})
        first = runs[0] if runs else "?"
        return StormproofError(
            f"{self.path}: rows of run {either(runs)} collide with rows already stored "
            f"({exc}): another process appended to the run without holding its driver lease; "
            f"stop the other orchestrator, then `stormproof resume {first}`"
        )


# -- pure helpers ---------------------------------------------------------------


@functools.lru_cache(maxsize=2 * ONE_STATEMENT_ROWS)
def _insert_rows(count: int, fenced: bool = False) -> str:
    values = "VALUES " + ", ".join(["(?,?,?,?,?,?,?)"] * count)
    if fenced:
        values = f"SELECT * FROM ({values}){_FENCE}"
    return _INSERT_ROW.replace("VALUES (?, ?, ?, ?, ?, ?, ?)", values)


# -- the lease: a lock file and a token -------------------------------------------------


class _LockLease:
    """The lease as its holder sees it: held until the lock is released, never lapsing."""

    duration_s: float | None = None

    def __init__(self, log: SQLiteEventLog, run: str, token: int) -> None:
        self._log = log
        self.run = run
        self.token = token

    def renew(self) -> None:
        """Nothing to extend (the lock lasts as long as this process); check the token."""
        with self._log._errors():
            self._log._check_token(self.run)
