"""The event log in PostgreSQL: runs shared between machines, driven under an expiring lease.

``store: postgresql://USER:PASSWORD@HOST:PORT/DATABASE`` (or ``STORMPROOF_STORE``).
The semantics are the SQLite store's, row for row (``tests/store/`` runs the same
contract tests against both); what differs is what a shared server needs:

* **Tables** ``stormproof_info``, ``stormproof_runs``, ``stormproof_rows``,
  ``stormproof_requests`` and ``stormproof_leases`` (and, beside the log, the results
  index and the runs' views: ``postgres_results.py``, ``postgres_views.py``), made on
  first use (under an advisory lock, so racing openers are harmless) in the first schema
  of the connection's ``search_path``; choose another schema with
  ``?options=-csearch_path%3Dmyschema`` in the URL.
* **Nothing is durable until ``flush``**, which writes all of a run's buffered rows
  with one statement (their columns go as arrays, unnested by the server): one
  round trip and, the connection being in autocommit, one transaction. Rows of
  several runs are written in one explicit transaction.
* **The lease** is a row per run: the fencing ``token``, who holds it, and when it
  lapses (``expires_at``, by the *server's* clock, so the orchestrators' clocks
  need not agree). It is taken when free or lapsed, raising the token by one;
  its holder renews it (``runtime/lease.py``, every third of its duration) and
  frees it at the end. A holder killed with -9 frees nothing: the next
  orchestrator takes over when the lease lapses, ``lease_s`` after the last
  renewal (30 s by default; ``lease:`` in stormproof.yaml).
* **Fencing.** A flush of a run whose lease this instance holds inserts only if
  the run's token is still the one it got, in the same statement, with the lease
  row locked ``FOR SHARE``: a takeover waits for that flush to commit, and the
  old holder's next flush inserts nothing and raises ``LeaseLost``. The driver
  acts only on what a flush made durable, so the old holder never acts again.
* **A network partition** from the database: the holder's statements fail after at
  most ``tcp_user_timeout`` (10 s unless the URL says otherwise; a connection
  attempt after ``connect_timeout``, also 10 s) with ``StoreFault``, and its run
  stops resumably; its lease lapses and an orchestrator that can reach the
  server takes over. Should the old holder reach the server again first, its
  token tells it whether it still holds the run.
* **A broken connection is opened again** on the next call, so a ``status
  --watch`` or a waiting orchestrator carries on once the server is back.
* **Every psycopg failure** becomes a ``StoreFault`` (may pass) or a
  ``StormproofError`` (fix the URL, the password, the database) naming the server
  and the fix (``store/errors.py``); the password never appears in a message.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import psycopg
from psycopg import errors as pg

from stormproof.errors import LeaseLost, StormproofError
from stormproof.store import postgres_results, postgres_views
from stormproof.store.base import (
    Lease,
    LeaseHolder,
    Row,
    TaskRecord,
    TaskResult,
)
from stormproof.store.errors import (
    POSTGRES_DAMAGED,
    lease_lost,
    postgres_error,
    run_locked,
)
from stormproof.store.postgres_server import (
    connection_settings,
    ensure_schema,
)
from stormproof.store.rows import (
    check_run_name,
    dumps_row,
    either,
    number_rows,
    row_from,
)
from stormproof.store.sql import ResultQueries, SqlEventLog, ViewQueries

#: How long a lease lasts after its last renewal; its holder renews it every third of this.
DEFAULT_LEASE_S: Final = 30.0
_READ_BATCH: Final = 2000
_INSERT_ROWS: Final = (
    "INSERT INTO stormproof_rows (run, seq, category, kind, at, cause, data)"
    " SELECT %s, v.* FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::float8[],"
    " %s::bigint[], %s::text[]) AS v"
)
#: Appended to a statement: true only while the run's token is the holder's (run, token);
#: ``FOR SHARE`` makes a takeover wait for the statement's transaction.
_FENCE: Final = (
    " WHERE EXISTS (SELECT 1 FROM stormproof_leases WHERE run = %s AND token = %s FOR SHARE)"
)
_SELECT_ROWS: Final = (
    "SELECT seq, category, kind, at, cause, data FROM stormproof_rows"
    " WHERE run = %s AND seq > %s ORDER BY seq LIMIT %s"
)
_TAKE_LEASE: Final = """
    INSERT INTO stormproof_leases AS l (run, token, holder_pid, holder_host, expires_at)
    VALUES (%(run)s, 1, %(pid)s, %(host)s, clock_timestamp() + make_interval(secs => %(s)s))
    ON CONFLICT (run) DO UPDATE
        SET token = l.token + 1, holder_pid = EXCLUDED.holder_pid,
            holder_host = EXCLUDED.holder_host, expires_at = EXCLUDED.expires_at
        WHERE l.holder_pid IS NULL OR l.expires_at <= clock_timestamp()
    RETURNING token"""
_HOLDER: Final = (
    "SELECT holder_pid, coalesce(holder_host, ''), token,"
    " extract(epoch FROM expires_at - clock_timestamp())::float8,"
    " holder_pid IS NOT NULL AND expires_at > clock_timestamp()"
    " FROM stormproof_leases WHERE run = %s"
)


@dataclass
class _Pending:
    """A run's buffered rows as the columns ``_INSERT_ROWS`` takes."""

    seqs: list[int] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    ats: list[float] = field(default_factory=list)
    causes: list[int | None] = field(default_factory=list)
    datas: list[str] = field(default_factory=list)

    def add(self, rows: Sequence[Row]) -> None:
        for r in rows:
            self.seqs.append(r.seq)
            self.categories.append(r.category)
            self.kinds.append(r.kind)
            self.ats.append(r.at)
            self.causes.append(r.cause)
            self.datas.append(dumps_row(r.data))

    def columns(self) -> tuple[list[Any], ...]:
        return (self.seqs, self.categories, self.kinds, self.ats, self.causes, self.datas)


class PostgresEventLog(SqlEventLog):
    """The ``EventLog`` in a PostgreSQL database, shared by every orchestrator that uses it.

    One instance per process and thread (one connection). Only the holder of a
    run's ``driver_lease`` should append to that run; the lease's token fences it.
    """

    PARAM = "%s"
    RUNS_TABLE = "stormproof_runs"
    ROWS_TABLE = "stormproof_rows"
    CREATION_ORDER = "created_order"
    DAMAGED = POSTGRES_DAMAGED
    DUPLICATE = pg.UniqueViolation
    VIEWS: ClassVar[ViewQueries] = postgres_views
    RESULTS: ClassVar[ResultQueries] = postgres_results

    def __init__(self, url: str, *, lease_s: float = DEFAULT_LEASE_S) -> None:
        if not lease_s > 0:
            raise ValueError(f"lease_s must be more than 0 seconds, not {lease_s!r}")
        self.lease_s = float(lease_s)
        self._conninfo, self.server = connection_settings(url)
        self._pending: dict[str, _Pending] = {}
        self._last_seq: dict[str, int] = {}
        #: The fencing token of each run whose lease this instance holds.
        self._tokens: dict[str, int] = {}
        self._conn = self._connect()

    # -- runs -----------------------------------------------------------------

    # -- rows -----------------------------------------------------------------

    def append(self, run: str, rows: Sequence[Row]) -> list[Row]:
        """Number and buffer ``rows`` (``store/rows.py`` says how causes resolve)."""
        if not rows:
            return []
        numbered = number_rows(rows, self._last_seq_of(run) + 1)
        self._pending.setdefault(run, _Pending()).add(numbered)
        self._last_seq[run] = numbered[-1].seq
        return numbered

    def flush(self) -> None:
        """Commit every buffered row in one transaction; on failure the buffer is kept."""
        if not self._pending:
            return
        try:
            with self._errors():
                if len(self._pending) == 1:
                    self._insert(*next(iter(self._pending.items())))
                else:
                    with self._db.transaction():
                        for run, pending in self._pending.items():
                            self._insert(run, pending)
        except pg.UniqueViolation as exc:
            raise self._collision(exc) from exc
        self._pending.clear()

    def _insert(self, run: str, pending: _Pending) -> None:
        token = self._tokens.get(run)
        if token is None:
            self._db.execute(_INSERT_ROWS, (run, *pending.columns()))
            return
        cursor = self._db.execute(_INSERT_ROWS + _FENCE, (run, *pending.columns(), run, token))
        if cursor.rowcount == 0:
            raise self._lease_lost(run)

    def read(self, run: str, after_seq: int = 0) -> Iterator[Row]:
        """The run's durable rows after ``after_seq``, in pages by seq.

        Each page is its own snapshot; rows are only ever appended, a flush at a
        time, so the pages together are the log as the last one saw it: whole
        flushes, no gaps. ``RunNotFound`` is raised here, not on the first ``next``.
        """
        if not self._run_exists(run):
            raise self._run_not_found(run)
        return self._pages(run, after_seq)

    def _pages(self, run: str, after_seq: int) -> Iterator[Row]:
        while True:
            with self._errors():
                page = self._db.execute(_SELECT_ROWS, (run, after_seq, _READ_BATCH)).fetchall()
            yield from (row_from(r, POSTGRES_DAMAGED) for r in page)
            if len(page) < _READ_BATCH:
                return
            after_seq = int(page[-1][0])

    # -- requests -------------------------------------------------------------

    def post_request(self, run: str, kind: str, at: float) -> None:
        with self._errors():
            cursor = self._db.execute(
                "INSERT INTO stormproof_requests (run, kind, at) SELECT %s, %s, %s"
                " WHERE EXISTS (SELECT 1 FROM stormproof_runs WHERE name = %s)",
                (run, kind, at, run),
            )
        if cursor.rowcount == 0:
            raise self._run_not_found(run)

    def take_requests(self, run: str) -> list[str]:
        """Pop the run's requests, oldest first, in one statement; fenced for a lease holder
        (a lease taken over must not swallow a request meant for the new holder)."""
        statement = "DELETE FROM stormproof_requests WHERE run = %s"
        params: tuple[Any, ...] = (run,)
        if run in self._tokens:
            statement += " AND EXISTS (SELECT 1 FROM stormproof_leases"
            statement += " WHERE run = %s AND token = %s FOR SHARE)"
            params = (run, run, self._tokens[run])
        with self._errors():
            taken = self._db.execute(statement + " RETURNING id, kind", params).fetchall()
        return [str(kind) for _, kind in sorted(taken)]

    # -- driver lease -----------------------------------------------------------

    def driver_lease(self, run: str) -> AbstractContextManager[Lease]:
        """Take the run's lease if it is free or has lapsed; ``RunLocked`` if another holds it."""
        check_run_name(run)
        return self._lease(run)

    @contextmanager
    def _lease(self, run: str) -> Iterator[Lease]:
        token = self._take(run)
        self._tokens[run] = token
        try:
            yield _ExpiringLease(self, run, token)
        finally:
            self._tokens.pop(run, None)
            self._free(run, token)

    def _take(self, run: str) -> int:
        self.get_run(run)  # RunNotFound, with suggestions
        args = {"run": run, "pid": os.getpid(), "host": socket.gethostname(), "s": self.lease_s}
        for _ in range(3):  # the holder may free it between our two statements: ask again
            with self._errors():
                taken = self._db.execute(_TAKE_LEASE, args).fetchone()
                if taken is not None:
                    return int(taken[0])
                holder = self._holder(run)
            if holder is not None:
                raise run_locked(run, holder)
        raise run_locked(run, LeaseHolder(None, "", 0, None))

    def _renew(self, run: str, token: int) -> None:
        with self._errors():
            renewed = self._db.execute(
                "UPDATE stormproof_leases SET expires_at = clock_timestamp()"
                " + make_interval(secs => %s) WHERE run = %s AND token = %s RETURNING 1",
                (self.lease_s, run, token),
            ).fetchone()
        if renewed is None:
            raise self._lease_lost(run, token)

    def _free(self, run: str, token: int) -> None:
        """Let the next orchestrator in at once; if the server is gone, the lease lapses."""
        try:
            with self._errors():
                self._db.execute(
                    "UPDATE stormproof_leases SET holder_pid = NULL, holder_host = NULL,"
                    " expires_at = clock_timestamp() WHERE run = %s AND token = %s",
                    (run, token),
                )
        except StormproofError:
            pass

    def is_driven(self, run: str) -> bool:
        """Whether a holder's lease is current (a killed holder's counts until it lapses)."""
        check_run_name(run)
        with self._errors():
            found = self._db.execute(_HOLDER, (run,)).fetchone()
        return bool(found is not None and found[4])

    def _holder(self, run: str) -> LeaseHolder | None:
        """Who holds the run's lease now; ``None`` if nobody (free or lapsed)."""
        found = self._db.execute(_HOLDER, (run,)).fetchone()
        if found is None or not found[4]:
            return None
        pid, host, token, left_s, _ = found
        return LeaseHolder(int(pid), str(host), int(token), float(left_s))

    def _lease_lost(self, run: str, token: int | None = None) -> LeaseLost:
        ours = token if token is not None else self._tokens.get(run, 0)
        found = self._db.execute(_HOLDER, (run,)).fetchone()
        if found is not None and found[0] is not None:
            holder = LeaseHolder(int(found[0]), str(found[1]), int(found[2]), float(found[3]))
        else:
            holder = LeaseHolder(None, "", int(found[2]) if found else 0, None)
        return lease_lost(
            run,
            ours,
            holder,
            f"its lease lapsed before it was renewed (was this orchestrator stopped, or cut off "
            f"from the database, for longer than the lease's {self.lease_s:g} s?)",
        )

    # -- results across runs (``store/postgres_results.py``) -----------------------

    def put_results(self, results: Sequence[TaskResult]) -> None:
        """All or nothing: ``RunNotFound`` (and nothing put) if a result's run is not there."""
        try:
            with self._errors():
                postgres_results.put(self._db, results)
        except pg.ForeignKeyViolation:
            gone = [run for run in sorted({r.run for r in results}) if not self._run_exists(run)]
            raise self._run_not_found(gone[0] if gone else results[0].run) from None

    def delete_run(self, name: str) -> None:
        """Forget the run in one statement; fenced when this instance holds its lease (as
        the caller should): a lease taken over meanwhile deletes nothing (``LeaseLost``)."""
        token = self._tokens.get(name)
        with self._errors():
            gone = postgres_results.delete_run(self._db, name, token)
        if not gone:
            if token is not None and self._run_exists(name):
                with self._errors():
                    raise self._lease_lost(name, token)
            raise self._run_not_found(name)
        self._pending.pop(name, None)
        self._last_seq.pop(name, None)

    # -- views (``store/postgres_views.py``) ----------------------------------------

    def save_view(
        self,
        run: str,
        upto_seq: int,
        summary: dict[str, Any],
        tasks: Sequence[TaskRecord],
        *,
        replace: bool = False,
    ) -> bool:
        """Upsert the task records and replace the summary, unless a newer view is stored;
        one statement."""
        try:
            with self._errors():
                return postgres_views.save(self._db, run, upto_seq, summary, tasks, replace)
        except pg.ForeignKeyViolation:
            raise self._run_not_found(run) from None

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Close the connection. Unflushed rows are dropped: ``close`` is not a flush."""
        self._pending.clear()
        self._conn.close()

    # -- helpers --------------------------------------------------------------

    @property
    def _db(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The connection, opened again if the last one broke (the server went away)."""
        if self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        with self._errors():
            conn = psycopg.connect(self._conninfo, autocommit=True)
        try:
            with self._errors():
                ensure_schema(conn, self.server)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """psycopg's failures become ours; integrity errors are the callers' to handle."""
        try:
            yield
        except pg.IntegrityError:
            raise
        except psycopg.Error as exc:
            raise postgres_error(exc, self.server) from exc

    def _where(self) -> str:
        return self.server

    def _collision(self, exc: psycopg.Error) -> StormproofError:
        runs = sorted(self._pending)
        return StormproofError(
            f"{self.server}: rows of run {either(runs)} collide with rows already stored "
            f"({str(exc).splitlines()[0]}): another process appended to the run without holding "
            f"its driver lease; stop the other orchestrator, then `stormproof resume {runs[0]}`"
        )


class _ExpiringLease:
    """The lease as its holder sees it: lapses ``duration_s`` after its last renewal."""

    def __init__(self, log: PostgresEventLog, run: str, token: int) -> None:
        self._log = log
        self.run = run
        self.token = token
        self.duration_s: float | None = log.lease_s

    def renew(self) -> None:
        self._log._renew(self.run, self.token)
