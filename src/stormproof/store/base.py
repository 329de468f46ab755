"""The store seam: the event log, which is the truth about every run.

A row is either an ``event`` (an input to the core) or a ``decision`` (what the
core answered, linked to its cause by ``cause``). Rows are appended in
memory and made durable together by ``flush``, one transaction per batch:
the driver flushes before it acts on a batch's decisions (outbox, then act).

The store also owns the two bits of shared state around a run: the *driver
lease* (one orchestrator per run) and the *request inbox* (``cancel`` from
another process). Backends register under ``stormproof.stores``.

And it keeps the run's *view* (``save_view``/``load_view``): the log folded for
``status`` (``runtime/view.py``), so that looking at a 100,000-task run reads a summary
and one page of tasks instead of every row. The view is a cache the log can always
rebuild: its ``upto_seq`` says which rows it covers, and a reader folds the rows after
it. The store does not interpret the view; it stores the summary as given and the task
records by id, and selects them by state and stage, in workflow order, a page at a time.

Beside the log, a store keeps an **index of task results** across runs (``put_results``,
``find_results``, ``last_results``): a succeeded task that declares ``outputs``, by its
fingerprint (``runtime.fingerprint``). ``run --reuse`` looks every task of a new run up by
fingerprint there — one indexed lookup per plan, never a replay of earlier runs — and
reuses what matches. The index only ever says less than the log (a result is put after the
success it comes from is flushed), so losing a put loses a reuse, never adds a wrong one.
``delete_run`` forgets a run, its results included (``stormproof clean``).
The lease carries a **fencing token**, a number that grows every time the lease
changes hands. The store checks it on every ``flush`` (and ``take_requests``)
of a run whose lease this instance holds, in the same transaction as the write:
an orchestrator whose lease was taken over gets ``LeaseLost`` at its next flush,
before it can act on anything it decided, so no decision is carried out twice.
How long a lease lasts is the backend's: SQLite's is a file lock that ends only
with its holder's process (``duration_s is None``), PostgreSQL's expires unless
renewed (``runtime/lease.py`` renews it).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from stormproof.core.record import record

RowCategory = Literal["event", "decision"]


@record  # frozen to mypy, cheap to build: the driver makes one per event and decision
class Row:
    seq: int  # 1, 2, 3, … per run, assigned by ``append``; 0 before that
    category: RowCategory
    kind: str
    at: float  # wall-clock seconds; a decision carries its cause's time
    cause: int | None  # for a decision: the seq of the event that caused it
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """Who drives a run, as ``RunLocked`` tells an orchestrator that waits for it."""

    pid: int | None
    host: str
    token: int  # the holder's fencing token; 0 when the store does not know it
    #: Seconds until the lease lapses unless renewed (by the store's clock); ``None``: it
    #: lasts as long as the holder's process.
    expires_in_s: float | None

    def describe(self, this_host: str = "") -> str:
        """``pid 123 on host node-2`` (the host left out when it is ``this_host``)."""
        who = f"pid {self.pid}" if self.pid is not None else "a process"
        if self.host and self.host != this_host:
            who += f" on host {self.host}"
        return who

    def lapse(self) -> str:
        """``its lease lapses in 27 s unless renewed``, or ``until it exits``."""
        if self.expires_in_s is None:
            return "until it exits"
        return f"its lease lapses in {max(0.0, self.expires_in_s):.0f} s unless renewed"


class Lease(Protocol):
    """A run's driver lease as its holder sees it."""

    @property
    def token(self) -> int:
        """The fencing token: every append of the run is checked against it."""

    @property
    def duration_s(self) -> float | None:
        """How long the lease lasts after a renewal; ``None`` if it never lapses while its
        holder lives (then ``renew`` only checks that it is still held)."""

    def renew(self) -> None:
        """Extend the lease by ``duration_s`` from now; ``LeaseLost`` if another holder has it,
        ``StoreFault`` if the store cannot be reached."""


@dataclass(frozen=True, slots=True)
class RunInfo:
    name: str
    created_at: float
    workflow_name: str
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task of a run's view: ``data`` is opaque to the store (``TaskView.to_record``)."""

    task_id: str
    position: int  # the task's place in the workflow file: the order of listings
    stage: int  # 0-based
    state: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoredView:
    upto_seq: int  # the view covers the run's rows up to this seq
    summary: dict[str, Any]  # opaque (``RunView.summary``)
    tasks: list[TaskRecord]  # those asked for, in position order
    matching: int  # how many tasks match the filters, before offset and limit (0 if limit=0)


@dataclass(frozen=True, slots=True)
class TaskResult:
    """A task that succeeded in a run, indexed by its fingerprint (``runtime.reuse``)."""

    fingerprint: str
    run: str
    task_id: str
    workflow: str  # the workflow's ``name``
    at: float  # when it succeeded (or was kept)
    #: JSON-ready: the run's data dir and each declared output's size and mtime then.
    data: dict[str, Any]
    #: JSON-ready: the task's definition (``runtime.fingerprint``), to say what changed since.
    #: Only ``last_results`` returns it (``None`` from ``find_results``: a lookup of every task
    #: of a big workflow has no use for it).
    definition: dict[str, Any] | None = None


class EventLog(Protocol):
    def create_run(self, name: str, workflow_name: str, meta: dict[str, Any], at: float) -> None:
        """Record a new run; ``RunExists`` if the name is taken."""

    def get_run(self, name: str) -> RunInfo:
        """``RunNotFound`` if there is no such run."""

    def list_runs(self) -> list[RunInfo]:
        """Every run, newest first."""

    def append(self, run: str, rows: Sequence[Row]) -> list[Row]:
        """Buffer rows; returns them with their seq numbers (and causes resolved)."""

    def flush(self) -> None:
        """Make every buffered row durable, in one transaction."""

    def read(self, run: str, after_seq: int = 0) -> Iterator[Row]:
        """The run's rows in seq order, durable ones only."""

    def post_request(self, run: str, kind: str, at: float) -> None:
        """Leave a request (e.g. ``cancel``) for whoever drives the run."""

    def take_requests(self, run: str) -> list[str]:
        """Pop the run's pending requests, oldest first."""

    def driver_lease(self, run: str) -> AbstractContextManager[Lease]:
        """Hold the run exclusively; ``RunLocked`` (saying who holds it) at once if another
        process does. Waiting for it is the caller's (``runtime/lease.py``).

        Released when the block ends; when the process dies (kill -9 included) at once
        (SQLite) or when the lease lapses (PostgreSQL).
        """

    def is_driven(self, run: str) -> bool:
        """Whether some process holds the run's driver lease right now."""

    def save_view(
        self,
        run: str,
        upto_seq: int,
        summary: dict[str, Any],
        tasks: Sequence[TaskRecord],
        *,
        replace: bool = False,
    ) -> bool:
        """In one transaction: replace the run's view summary, upsert ``tasks`` by position;
        with ``replace``, ``tasks`` are all the run's and every other record goes (a redrive
        reshaped the run). ``RunNotFound`` without the run.

        Monotone: if the stored view covers more rows than ``upto_seq``, nothing is written
        and ``False`` is returned (two processes may save; the newer view wins).
        """

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
        """The stored view with the tasks matching every filter given (``limit=0``: none),
        in position order; ``None`` if none was saved; ``RunNotFound`` without the run."""

    def put_results(self, results: Sequence[TaskResult]) -> None:
        """Index succeeded tasks; durable when it returns. A run's newer result for a task
        replaces its older one."""

    def find_results(self, fingerprints: Collection[str]) -> dict[str, TaskResult]:
        """The newest result of each of ``fingerprints`` that has one, by an index lookup."""

    def last_results(self, workflow: str, task_ids: Collection[str]) -> dict[str, TaskResult]:
        """The newest result of each of ``task_ids`` in workflows named ``workflow``, whatever
        its fingerprint: what a task that matches nothing is compared with, to say why."""

    def delete_run(self, name: str) -> None:
        """Forget the run: its record, rows, requests and results. ``RunNotFound`` if none.
        The caller holds its driver lease, so that no orchestrator drives it meanwhile."""

    def close(self) -> None: ...
