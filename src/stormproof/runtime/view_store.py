"""A run's view kept in the store, so that looking at a big run reads a page, not the log.

Folding every row of a 100,000-task run takes minutes and gigabytes; ``status`` must answer
in a second. So the fold is done once, where the rows are made:

* **the driver** keeps the run's ``RunView`` (``ViewKeeper``, on rows it holds in memory
  anyway) and saves the tasks that changed, with the run's summary, every ``SAVE_EVERY_S``
  and when it leaves: each task's record is written about once per change it has between
  two saves, and nothing is written at start (what it costs: ``bench/README.md``);
* **a reader** (``read_view``) loads the stored summary and the page of tasks it shows, and
  folds the rows written since the view was saved (a few seconds' worth while a run runs,
  more after a kill -9), loading only the tasks those rows touch. With no stored view at
  all (a run from before views, one younger than its first save, or one whose driver died
  before it) it folds the log from the start, and saves the result when the home is
  writable;
* **the dashboard** (``whole_view``) loads the stored view with every task once, folds the
  rows after it, and from then on only the rows appended since.

The log stays the truth: a stored view is a cache that ``upto_seq`` ties to the log, and
``save_view`` keeps the newer of two.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from stormproof.runtime.redrive import REDRIVEN
from stormproof.runtime.view import VIEW_FORMAT, RunView, levels_of
from stormproof.runtime.view_query import Page, TaskQuery, select
from stormproof.runtime.view_records import TaskView, closed_breaker
from stormproof.store.base import EventLog, Row, RunInfo, StoredView, TaskRecord

#: How often a driver saves its view: what a reader folds at most while a run runs.
SAVE_EVERY_S = 5.0
#: A reader that had to fold more rows than this saves the view it made (if it can write).
SAVE_AFTER_ROWS = 2_000
#: Ids per query when loading the tasks some rows touch (SQLite's parameter limit).
_IDS_PER_QUERY = 500


def record_of(task: TaskView) -> TaskRecord:
    return TaskRecord(task.id, task.position, task.stage, task.state, task.to_record())


def view_for_run(info: RunInfo) -> RunView:
    """A run's view before its first row: every task waiting in its stage, in file order;
    every pool's breaker closed; its delegated pools and their ``max_jobs``.

    The stages come straight from the recorded spec's ids and ``depends_on`` (validated, and
    acyclic, when the run was created): no second validation of a 100,000-task spec.
    """
    spec, pools = info.meta["spec"], info.meta.get("pools", [])
    view = RunView(name=info.name, workflow=spec["name"])
    view.breakers = {p["name"]: closed_breaker() for p in pools}
    view.delegated = {p["name"]: int(p.get("max_jobs", 0)) for p in pools if p.get("delegated")}
    level = levels_of(spec["tasks"])
    for i, t in enumerate(spec["tasks"]):
        view.add_task(TaskView(t["id"], t.get("name") or t["id"], level[t["id"]], position=i))
    return view


class ViewKeeper:
    """The driver's side: the view folded as rows are appended, saved every ``SAVE_EVERY_S``
    and when the driver leaves (``save``).

    A save writes the summary and only the tasks changed since the last one. So nothing is
    saved when the driver starts: a new run's tasks are all written by its first save (a
    reader folds the few rows before it from the start), and a resumed run's stored view
    lacks only the tasks the rows after it touch (after a kill -9), which are marked changed.
    """

    def __init__(self, store: EventLog, info: RunInfo, history: Sequence[Row]) -> None:
        self.store = store
        self.view = view_for_run(info).apply(history)
        stored = store.load_view(info.name, limit=0)
        if _usable(stored) and stored.upto_seq <= self.view.last_seq:  # type: ignore[union-attr]
            after = [r for r in history if r.seq > stored.upto_seq]  # type: ignore[union-attr]
            reshaped = any(r.kind == REDRIVEN for r in after)
            changed = set(self.view.tasks) if reshaped else _touched(after)
            self.view.dirty = changed & self.view.tasks.keys()
            self.view.reshaped = reshaped
        else:  # every task written, any other record dropped
            self.view.dirty = set(self.view.tasks)
            self.view.reshaped = True
        self._saved_at = time.monotonic()

    def apply(self, rows: Iterable[Row]) -> None:
        self.view.apply(rows)
        now = time.monotonic()
        if now - self._saved_at >= SAVE_EVERY_S:
            self.save(now)

    def save(self, now: float | None = None) -> None:
        _save(self.store, self.view)
        self._saved_at = time.monotonic() if now is None else now


class _ViewMoved(Exception):
    """A newer view was saved while this one was being read (its task records may be ahead
    of the summary read first): read it all again."""


#: Reads of a stored view before a reader folds the log instead (a driver saves every
#: ``SAVE_EVERY_S``: a read that takes milliseconds meets a save rarely, twice in a row never).
_TRIES = 3


def read_view(store: EventLog, name: str, query: TaskQuery, writable: bool) -> tuple[RunView, Page]:
    """The run's view now, and the page of tasks ``query`` asks for.

    The view holds the tasks of the page, those still running and those the rows after the
    stored view touched (``tasks``); its totals cover every task.
    """
    for _ in range(_TRIES):
        try:
            view, page = _read_view(store, name, query, writable)
        except _ViewMoved:
            continue
        view.loader = view.load_rest = None  # what it loaded agrees with its summary: no more
        return view, page
    view = _folded_from_start(store, store.get_run(name), writable)
    return view, select(view, query)


def _read_view(
    store: EventLog, name: str, query: TaskQuery, writable: bool
) -> tuple[RunView, Page]:
    stored = store.load_view(
        name, states=query.states, stage=query.stage, limit=query.limit, offset=query.offset
    )
    if not _usable(stored):
        view = _folded_from_start(store, store.get_run(name), writable)
        return view, select(view, query)
    assert stored is not None
    upto = stored.upto_seq
    view = RunView.from_summary(name, stored.summary)
    view.loader = lambda task_id: _load_one(store, name, task_id, upto)
    view.load_rest = lambda: _load(store, name, None, upto)
    tail = list(store.read(name, after_seq=upto))
    touched = _touched(tail) | view.live
    before = {t.id: t for t in _load(store, name, touched, upto)}
    for task in before.values():
        view.add_task(TaskView.from_record(task.to_record()), counted=True)
    if not tail:
        return view, Page([TaskView.from_record(r.data) for r in stored.tasks], stored.matching)
    view.apply(tail)
    if view.reshaped:  # a redrive in the tail: the view holds every task now
        page = select(view, query)
    else:
        page = _merged_page(store, name, query, view, before, stored)
    if writable and len(tail) > SAVE_AFTER_ROWS:
        _save(store, view)
    return view, page


def whole_view(store: EventLog, info: RunInfo, writable: bool) -> RunView:
    """The run's view with every task in it, up to the log's last row (the dashboard's)."""
    stored = store.load_view(info.name)
    if not _usable(stored):
        return _folded_from_start(store, info, writable)
    assert stored is not None
    view = RunView.from_summary(info.name, stored.summary)
    for record in stored.tasks:
        view.add_task(TaskView.from_record(record.data), counted=True)
    tail = list(store.read(info.name, after_seq=stored.upto_seq))
    view.apply(tail)
    if writable and len(tail) > SAVE_AFTER_ROWS:
        _save(store, view)
    view.dirty.clear()
    return view


def _usable(stored: StoredView | None) -> bool:
    """A view was saved, in the format this version reads."""
    return stored is not None and stored.summary.get("format") == VIEW_FORMAT


def _save(store: EventLog, view: RunView) -> None:
    """The summary and the tasks changed since the last save (``dirty``)."""
    records = [record_of(view.tasks[t]) for t in view.dirty]
    store.save_view(view.name, view.last_seq, view.summary(), records, replace=view.reshaped)
    view.dirty.clear()
    view.reshaped = False


def _merged_page(
    store: EventLog,
    name: str,
    query: TaskQuery,
    view: RunView,
    before: dict[str, TaskView],
    first: StoredView,
) -> Page:
    """The stored page, with the tasks the tail changed as they are now (in or out of it)."""
    changed = {t: view.tasks[t] for t in view.dirty if t in view.tasks}
    widened = None if query.limit is None else query.offset + query.limit + len(changed)
    stored = store.load_view(name, states=query.states, stage=query.stage, limit=widened, offset=0)
    if stored is None or stored.upto_seq != first.upto_seq:
        raise _ViewMoved
    kept = [TaskView.from_record(r.data) for r in stored.tasks if r.task_id not in changed]
    now_in = [t for t in changed.values() if query.matches(t)]
    was_in = sum(1 for t in changed if t in before and query.matches(before[t]))
    tasks = sorted(kept + now_in, key=lambda t: t.position)
    end = None if query.limit is None else query.offset + query.limit
    return Page(tasks[query.offset : end], first.matching - was_in + len(now_in))


def _folded_from_start(store: EventLog, info: RunInfo, writable: bool) -> RunView:
    view = view_for_run(info).apply(store.read(info.name))
    if writable:
        view.dirty, view.reshaped = set(view.tasks), True
        _save(store, view)
    view.dirty.clear()
    view.reshaped = False
    return view


def _touched(rows: Iterable[Row]) -> set[str]:
    """The tasks some rows are about (their ``task_id``, or the task of their attempt)."""
    ids: set[str] = set()
    for row in rows:
        task_id = row.data.get("task_id")
        if task_id is None and "attempt_id" in row.data:
            task_id = str(row.data["attempt_id"]).rpartition("/")[0]
        if isinstance(task_id, str) and task_id:
            ids.add(task_id)
    return ids


def _load(store: EventLog, name: str, ids: Iterable[str] | None, upto_seq: int) -> list[TaskView]:
    """The stored records of ``ids`` (``None``: every task), as of the view that covers
    ``upto_seq`` (``_ViewMoved`` if a newer one was saved meanwhile)."""
    if ids is None:
        batches: list[list[str] | None] = [None]
    else:
        wanted = sorted(ids)
        batches = [wanted[i : i + _IDS_PER_QUERY] for i in range(0, len(wanted), _IDS_PER_QUERY)]
    found: list[TaskView] = []
    for batch in batches:
        stored = store.load_view(name, ids=batch)
        if stored is None or stored.upto_seq != upto_seq:
            raise _ViewMoved
        found += [TaskView.from_record(r.data) for r in stored.tasks]
    return found


def _load_one(store: EventLog, name: str, task_id: str, upto_seq: int) -> TaskView | None:
    found = _load(store, name, [task_id], upto_seq)
    return found[0] if found else None
