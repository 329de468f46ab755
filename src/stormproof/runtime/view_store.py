"""A run's view kept in the store, so that looking at a big run reads a page, not the log.

Folding every row of a 100,000-task run takes minutes and gigabytes; ``status`` must answer
in a second. So the fold is done once, where the rows are made:

* **the driver** keeps the run's ``RunView`` as it appends (``ViewKeeper.apply``, on rows
  it holds in memory anyway) and saves the tasks that changed, with the run's summary, every
  ``SAVE_EVERY_S`` and when it leaves;
* **a reader** (``read_view``) loads the stored summary and the page of tasks it shows, and
  folds the rows written since the view was saved (a second's worth while a run runs, more
  after a kill -9), loading only the tasks those rows touch. With no stored view at all (a
  run from before views, or one whose driver died before its first save) it folds the log
  from the start, and saves the result when the home is writable.

The log stays the truth: a stored view is a cache that ``upto_seq`` ties to the log, and
``save_view`` keeps the newer of two.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from stormproof.plan.graph import Dag
from stormproof.runtime.runs import RunContext
from stormproof.runtime.view import RunView, TaskView, closed_breaker
from stormproof.spec.model import WorkflowSpec
from stormproof.store.base import EventLog, Row, TaskRecord

#: How often a driver saves its view: what a reader folds at most while a run runs.
SAVE_EVERY_S = 5.0
#: A reader that had to fold more rows than this saves the view it made (if it can write).
SAVE_AFTER_ROWS = 2_000
#: Ids per query when loading the tasks some rows touch (SQLite's parameter limit).
_IDS_PER_QUERY = 500


@dataclass(frozen=True)
class TaskQuery:
    """Which tasks a reader lists: by state and stage, a page in workflow order."""

    states: tuple[str, ...] | None = None
    stage: int | None = None  # 0-based
    limit: int | None = None  # None: all
    offset: int = 0

    def matches(self, task: TaskView) -> bool:
        return (self.states is None or task.state in self.states) and (
            self.stage is None or task.stage == self.stage
        )


@dataclass
class Page:
    tasks: list[TaskView]
    matching: int


def record_of(task: TaskView) -> TaskRecord:
    return TaskRecord(task.id, task.position, task.stage, task.state, task.to_record())


def initial_view(name: str, spec: WorkflowSpec, pools: Iterable[str]) -> RunView:
    """The view of a run before its first row: every task waiting, in its stage."""
    dag = Dag.from_spec(spec)
    view = RunView(name=name, workflow=spec.name)
    view.breakers = {pool: closed_breaker() for pool in pools}
    for i, task in enumerate(spec.tasks):
        view.add_task(TaskView(task.id, task.display_name, dag.level[i], position=i))
    return view


class ViewKeeper:
    """The driver's side: the view folded as rows are appended, saved every so often."""

    def __init__(self, store: EventLog, ctx: RunContext, history: Sequence[Row]) -> None:
        self.store = store
        pools = (p.name for p in ctx.pools)
        self.view = initial_view(ctx.name, ctx.spec, pools).apply(history)
        stored = store.load_view(ctx.name, limit=0)
        if stored is None or stored.upto_seq < self.view.last_seq:
            self.view.dirty = set(self.view.tasks)
        else:
            self.view.dirty.clear()
        self._saved_at = 0.0
        self.save()

    def apply(self, rows: Iterable[Row]) -> None:
        self.view.apply(rows)
        now = time.monotonic()
        if now - self._saved_at >= SAVE_EVERY_S:
            self.save(now)

    def save(self, now: float | None = None) -> None:
        view = self.view
        records = [record_of(view.tasks[t]) for t in view.dirty]
        self.store.save_view(view.name, view.last_seq, view.summary(), records)
        view.dirty.clear()
        self._saved_at = time.monotonic() if now is None else now


def read_view(store: EventLog, name: str, query: TaskQuery, writable: bool) -> tuple[RunView, Page]:
    """The run's view now, and the page of tasks ``query`` asks for."""
    stored = store.load_view(
        name, states=query.states, stage=query.stage, limit=query.limit, offset=query.offset
    )
    if stored is None:
        return _folded_from_start(store, name, query, writable)
    view = RunView.from_summary(name, stored.summary)
    view.loader = lambda task_id: _load_one(store, name, task_id)
    tail = list(store.read(name, after_seq=stored.upto_seq))
    if not tail:
        return view, Page([_task(r.data) for r in stored.tasks], stored.matching)
    touched = _touched(tail) | view.live
    before = {t.id: t for t in _load(store, name, touched)}
    for task in before.values():
        view.add_task(TaskView.from_record(task.to_record()), counted=True)
    view.apply(tail)
    if writable and len(tail) > SAVE_AFTER_ROWS:
        records = [record_of(view.tasks[t]) for t in view.dirty]
        store.save_view(name, view.last_seq, view.summary(), records)
    return view, _merged_page(store, name, query, view, before, stored.matching)


def _merged_page(
    store: EventLog,
    name: str,
    query: TaskQuery,
    view: RunView,
    before: dict[str, TaskView],
    stored_matching: int,
) -> Page:
    """The stored page, with the tasks the tail changed as they are now (in or out of it)."""
    changed = {t: view.tasks[t] for t in view.dirty if t in view.tasks}
    widened = None if query.limit is None else query.offset + query.limit + len(changed)
    stored = store.load_view(name, states=query.states, stage=query.stage, limit=widened, offset=0)
    kept = (
        [] if stored is None else [_task(r.data) for r in stored.tasks if r.task_id not in changed]
    )
    now_in = [t for t in changed.values() if query.matches(t)]
    was_in = sum(1 for t in changed if t in before and query.matches(before[t]))
    tasks = sorted(kept + now_in, key=lambda t: t.position)
    end = None if query.limit is None else query.offset + query.limit
    return Page(tasks[query.offset : end], stored_matching - was_in + len(now_in))


def _folded_from_start(
    store: EventLog, name: str, query: TaskQuery, writable: bool
) -> tuple[RunView, Page]:
    ctx = RunContext.from_meta(name, store.get_run(name).meta)
    view = initial_view(name, ctx.spec, (p.name for p in ctx.pools)).apply(store.read(name))
    if writable:
        store.save_view(
            name, view.last_seq, view.summary(), [record_of(t) for t in view.tasks.values()]
        )
    matching = [t for t in view.tasks.values() if query.matches(t)]
    end = None if query.limit is None else query.offset + query.limit
    return view, Page(matching[query.offset : end], len(matching))


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


def _load(store: EventLog, name: str, ids: Iterable[str]) -> list[TaskView]:
    wanted = sorted(ids)
    found: list[TaskView] = []
    for i in range(0, len(wanted), _IDS_PER_QUERY):
        stored = store.load_view(name, ids=wanted[i : i + _IDS_PER_QUERY])
        if stored is not None:
            found += [_task(r.data) for r in stored.tasks]
    return found


def _load_one(store: EventLog, name: str, task_id: str) -> TaskView | None:
    found = _load(store, name, [task_id])
    return found[0] if found else None


def _task(data: dict[str, Any]) -> TaskView:
    return TaskView.from_record(data)
