"""What a run looks like, folded from its log rows — for ``status``, the live display and JSON.

The core's notes (``TaskReady``, ``AttemptEnded``, ``TaskEnded``, …) already
say every conclusion, so this fold is a plain projection: it never decides
anything, and it needs no replay of the core.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stormproof.store.base import Row


@dataclass
class AttemptView:
    number: int
    state: str = "placed"
    exit_code: int | None = None
    started: float | None = None
    ended: float | None = None
    error: str | None = None
    pool: str | None = None
    instances: list[str] = field(default_factory=list)
    budget: str | None = None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state,
            "exit_code": self.exit_code,
            "started": self.started,
            "ended": self.ended,
            "error": self.error,
            "pool": self.pool,
            "instance": self.instances[0] if self.instances else None,
            "instances": self.instances,
            "budget": self.budget,
        }


@dataclass
class TaskView:
    id: str
    name: str
    stage: int
    state: str = "waiting"
    error: str | None = None
    reason: str = ""
    attempts: list[AttemptView] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "stage": self.stage + 1,
            "state": self.state,
            "error": self.error,
            "attempts": [a.to_json() for a in self.attempts],
        }


@dataclass
class RunView:
    name: str
    workflow: str
    state: str = "stopped"
    started: float | None = None
    ended: float | None = None
    tasks: dict[str, TaskView] = field(default_factory=dict)
    last_seq: int = 0
    _by_attempt: dict[str, AttemptView] = field(default_factory=dict)

    def apply(self, rows: Iterable[Row]) -> RunView:
        for row in rows:
            self.last_seq = row.seq
            handler = _HANDLERS.get(row.kind)
            if handler is not None:
                handler(self, row)
        return self

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tasks.values():
            out[t.state] = out.get(t.state, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "workflow": self.workflow,
            "state": self.state,
            "started": self.started,
            "ended": self.ended,
            "counts": self.counts(),
            "tasks": {tid: t.to_json() for tid, t in self.tasks.items()},
        }


def _run_started(v: RunView, row: Row) -> None:
    if v.started is None:
        v.started = row.at


def _launch(v: RunView, row: Row) -> None:
    d = row.data
    task = v.tasks[d["task_id"]]
    att = AttemptView(int(d["number"]), pool=d.get("pool"), instances=list(d.get("instances", [])))
    task.attempts.append(att)
    task.state = "running"
    v._by_attempt[d["attempt_id"]] = att


def _started(v: RunView, row: Row) -> None:
    att = v._by_attempt.get(row.data["attempt_id"])
    if att is not None and att.state == "placed":
        att.state = "running"
        att.started = row.at


def _attempt_ended(v: RunView, row: Row) -> None:
    d = row.data
    att = v._by_attempt.pop(d["attempt_id"], None)
    if att is None:
        return
    att.state = d["state"]
    att.error = d.get("error")
    att.exit_code = d.get("exit_code")
    att.budget = d.get("budget")
    att.reason = d.get("reason", "")
    att.ended = row.at


def _task_ready(v: RunView, row: Row) -> None:
    v.tasks[row.data["task_id"]].state = "ready"


def _task_retrying(v: RunView, row: Row) -> None:
    task = v.tasks[row.data["task_id"]]
    task.state = "backoff" if row.data.get("delay_s", 0) > 0 else "ready"
    task.reason = row.data.get("reason", "")


def _task_ended(v: RunView, row: Row) -> None:
    task = v.tasks[row.data["task_id"]]
    task.state = row.data["state"]
    task.error = row.data.get("error")
    task.reason = row.data.get("reason", "")


def _run_finished(v: RunView, row: Row) -> None:
    v.state = row.data["state"]
    v.ended = row.at


_HANDLERS = {
    "RunStarted": _run_started,
    "LaunchAttempt": _launch,
    "AttemptStarted": _started,
    "AttemptEnded": _attempt_ended,
    "TaskReady": _task_ready,
    "TaskRetrying": _task_retrying,
    "TaskEnded": _task_ended,
    "RunFinished": _run_finished,
}


def empty_view(name: str, meta: dict[str, Any], stages: list[list[str]]) -> RunView:
    spec = meta["spec"]
    names = {t["id"]: t.get("name") or t["id"] for t in spec["tasks"]}
    view = RunView(name=name, workflow=spec["name"])
    for level, ids in enumerate(stages):
        for tid in ids:
            view.tasks[tid] = TaskView(tid, names[tid], level)
    # keep file order, which is what people wrote
    view.tasks = {t["id"]: view.tasks[t["id"]] for t in spec["tasks"]}
    return view
