"""What the SQLite and the PostgreSQL event logs share: the same tables, read the same way.

Both stores keep runs, rows, results and views in tables of the same shape and answer the
``EventLog`` Protocol with the same semantics (``tests/store/`` runs one set of contract
tests against both). Where they differ is how they write (SQLite's file lock and group
commit, PostgreSQL's fenced single statements), how their failures read, and the SQL
dialect's small print: the parameter marker, the tables' names, the column that orders runs
created in the same instant. ``SqlEventLog`` holds the reading side once, in terms of those
few settings; each store keeps its writing side and says its settings as class attributes.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self

from stormproof.errors import RunExists, RunNotFound
from stormproof.store.base import RunInfo, StoredView, TaskResult
from stormproof.store.rows import check_run_name, dumps_json, either, run_info_from


class ViewQueries(Protocol):
    """``sqlite_views`` or ``postgres_views``, as this module calls them."""

    def load(
        self,
        db: Any,
        run: str,
        states: Sequence[str] | None,
        stage: int | None,
        ids: Sequence[str] | None,
        limit: int | None,
        offset: int,
    ) -> StoredView | None: ...


class ResultQueries(Protocol):
    """``sqlite_results`` or ``postgres_results``, as this module calls them."""

    def find(self, db: Any, fingerprints: Collection[str]) -> dict[str, TaskResult]: ...

    def last(self, db: Any, workflow: str, task_ids: Collection[str]) -> dict[str, TaskResult]: ...


class SqlEventLog:
    """The reading half of an SQL event log; a store adds the writing half and its settings."""

    #: The dialect's parameter marker (``?`` or ``%s``).
    PARAM: ClassVar[str]
    RUNS_TABLE: ClassVar[str]
    ROWS_TABLE: ClassVar[str]
    #: The column that orders runs created in the same instant (the later one first).
    CREATION_ORDER: ClassVar[str]
    #: What a damaged row's error says about this store (``store/errors.py``).
    DAMAGED: ClassVar[str]
    #: The error the database raises for a second run of one name.
    DUPLICATE: ClassVar[type[Exception]]
    VIEWS: ClassVar[ViewQueries]
    RESULTS: ClassVar[ResultQueries]

    _last_seq: dict[str, int]
    #: The open connection (a property on PostgreSQL, which reconnects).
    _db: Any

    # -- what each store provides ---------------------------------------------------

    def _errors(self) -> AbstractContextManager[None]:
        """The database's failures turned into ours (``store/errors.py``)."""
        raise NotImplementedError

    def _where(self) -> str:
        """Where the runs are, for messages: the home's folder or the server."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- runs -------------------------------------------------------------------------

    def create_run(self, name: str, workflow_name: str, meta: dict[str, Any], at: float) -> None:
        """Record a new run; committed at once so that ``status`` sees it immediately."""
        check_run_name(name)
        p = self.PARAM
        with self._errors():
            try:
                self._db.execute(
                    f"INSERT INTO {self.RUNS_TABLE} (name, created_at, workflow_name, meta)"
                    f" VALUES ({p}, {p}, {p}, {p})",
                    (name, at, workflow_name, dumps_json(meta)),
                )
            except self.DUPLICATE:
                raise RunExists(
                    f"run {name!r} exists; continue it with `stormproof resume {name}` "
                    "or pick another --name"
                ) from None

    def get_run(self, name: str) -> RunInfo:
        """The run's record; ``RunNotFound`` names the runs it might have meant."""
        with self._errors():
            found = self._db.execute(
                f"SELECT name, created_at, workflow_name, meta FROM {self.RUNS_TABLE}"
                f" WHERE name = {self.PARAM}",
                (name,),
            ).fetchone()
        if found is None:
            raise self._run_not_found(name)
        return run_info_from(found, self.DAMAGED)

    def list_runs(self) -> list[RunInfo]:
        """Newest first."""
        with self._errors():
            found = self._db.execute(
                f"SELECT name, created_at, workflow_name, meta FROM {self.RUNS_TABLE}"
                f" ORDER BY created_at DESC, {self.CREATION_ORDER} DESC"
            ).fetchall()
        return [run_info_from(r, self.DAMAGED) for r in found]

    # -- results and views --------------------------------------------------------------

    def find_results(self, fingerprints: Collection[str]) -> dict[str, TaskResult]:
        with self._errors():
            return self.RESULTS.find(self._db, fingerprints)

    def last_results(self, workflow: str, task_ids: Collection[str]) -> dict[str, TaskResult]:
        with self._errors():
            return self.RESULTS.last(self._db, workflow, task_ids)

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
        with self._errors():
            found = self.VIEWS.load(self._db, run, states, stage, ids, limit, offset)
        if found is None and not self._run_exists(run):  # not get_run: its record is big
            raise self._run_not_found(run)
        return found

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- helpers --------------------------------------------------------------------------

    def _run_exists(self, run: str) -> bool:
        with self._errors():
            found = self._db.execute(
                f"SELECT 1 FROM {self.RUNS_TABLE} WHERE name = {self.PARAM}", (run,)
            ).fetchone()
        return found is not None

    def _last_seq_of(self, run: str) -> int:
        """The run's last durable or buffered seq: one query per run, then memory."""
        if run in self._last_seq:
            return self._last_seq[run]
        p = self.PARAM
        with self._errors():
            known, last = self._db.execute(
                f"SELECT EXISTS (SELECT 1 FROM {self.RUNS_TABLE} WHERE name = {p}),"
                f" (SELECT coalesce(max(seq), 0) FROM {self.ROWS_TABLE} WHERE run = {p})",
                (run, run),
            ).fetchone()
        if not known:
            raise self._run_not_found(run)
        self._last_seq[run] = int(last)
        return self._last_seq[run]

    def _run_not_found(self, name: str) -> RunNotFound:
        with self._errors():
            names = [str(r[0]) for r in self._db.execute(f"SELECT name FROM {self.RUNS_TABLE}")]
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" (did you mean {either(close)}?)" if close else ""
        return RunNotFound(
            f"no run named {name!r} in {self._where()}{hint}; `stormproof status` lists runs"
        )
