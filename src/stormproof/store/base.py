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
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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

    def driver_lease(self, run: str) -> AbstractContextManager[None]:
        """Hold the run exclusively; ``RunLocked`` at once if another process holds it.

        Released when the block ends *or the process dies* (kill -9 included).
        """

    def is_driven(self, run: str) -> bool:
        """Whether some process holds the run's driver lease right now."""

    def save_view(
        self, run: str, upto_seq: int, summary: dict[str, Any], tasks: Sequence[TaskRecord]
    ) -> bool:
        """In one transaction: replace the run's view summary, upsert ``tasks`` by task id.

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

    def close(self) -> None: ...
