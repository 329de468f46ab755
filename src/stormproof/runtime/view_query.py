"""What a reader asks of a run's tasks and what it gets: the one paging of ``status`` and the API.

``status NAME --json`` and ``GET /api/runs/NAME`` (and ``…/tasks``) take the same filters
(``TaskQuery``: states, a stage, a page by offset and limit, in workflow order) and send the
same shape (``run_json``: the run's totals, the page's tasks, and ``page``). A page is
selected by the store from a stored view (``EventLog.load_view``), or by ``select`` from a
view that holds every task (the dashboard's, a fold from the start): the same filters, the
same order, which the tests hold against each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from stormproof.errors import StormproofError
from stormproof.runtime.view import RunView
from stormproof.runtime.view_records import TaskView, cost_json
from stormproof.store.base import RunInfo

TaskState = Literal[
    "waiting", "ready", "backoff", "running", "succeeded", "failed", "skipped", "cancelled"
]
#: Task states a filter may name (docs/cli.md says what each means).
TASK_STATES: tuple[str, ...] = get_args(TaskState)


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
    matching: int  # tasks that match the filters, before offset and limit


def select(view: RunView, query: TaskQuery) -> Page:
    """The page of a view that holds every task (``tasks`` is in workflow order)."""
    matching = [t for t in view.tasks.values() if query.matches(t)]
    end = None if query.limit is None else query.offset + query.limit
    return Page(matching[query.offset : end], len(matching))


def check_stage(view: RunView, query: TaskQuery) -> None:
    """A stage the run does not have is a mistake, not an empty page."""
    stages = max(len(view.stages()), 1)
    if query.stage is not None and query.stage + 1 > stages:
        raise StormproofError(f"run {view.name!r} has {stages} stage(s), not {query.stage + 1}")


def page_json(query: TaskQuery, page: Page) -> dict[str, Any]:
    """``{offset, limit, total, next_offset}``: ``total`` tasks match, ``next_offset`` is
    where the next page starts (``None`` on the last)."""
    end = query.offset + len(page.tasks)
    return {
        "offset": query.offset,
        "limit": query.limit,
        "total": page.matching,
        "next_offset": end if end < page.matching else None,
    }


def run_json(view: RunView, query: TaskQuery, page: Page, now: float) -> dict[str, Any]:
    """``status NAME --json`` and ``GET /api/runs/NAME``: the run and one page of its tasks."""
    return {**view.to_json(now, page.tasks), "page": page_json(query, page)}


def shown_state(view: RunView, driven: bool) -> str:
    """The log says ``stopped`` until ``RunFinished``; a run whose lease is held is running."""
    if view.ended is None:
        return "running" if driven else "stopped"
    return view.state


def run_summary_json(info: RunInfo, view: RunView, now: float) -> dict[str, Any]:
    """One line of the runs list, as ``status --json`` and ``GET /api/runs`` show it."""
    counts = view.counts()
    at = view.ended if view.ended is not None else now
    return {
        "name": info.name,
        "workflow": info.workflow_name,
        "created": info.created_at,
        "state": view.state,
        "started": view.started,
        "ended": view.ended,
        "counts": counts,
        "progress": {"done": counts.get("succeeded", 0), "total": view.total()},
        "cost": cost_json(view.cost(at)),
        "interruptions": view.interruptions(),
        "running_attempts": view.running_attempts(),
    }
