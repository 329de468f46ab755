"""What a run looks like, folded from its log rows — for ``status``, the live display and JSON.

The core's notes (``TaskReady``, ``AttemptEnded``, ``TaskEnded``, …) already
say every conclusion, so this fold is a plain projection: it never decides
anything, and it needs no replay of the core.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stormproof.core.machine import Cost
from stormproof.store.base import Row, RunInfo


def attempt_cost(data: dict[str, Any]) -> Cost:
    """What an ended attempt cost, from its ``AttemptEnded`` note."""
    return Cost(
        float(data.get("cost_usd", 0.0)),
        float(data.get("on_demand_usd", 0.0)),
        float(data.get("wasted_usd", 0.0)),
        float(data.get("wasted_s", 0.0)),
    )


def closed_breaker() -> dict[str, Any]:
    """A pool's breaker before its first transition: closed, never tripped."""
    return {"state": "closed", "until": None, "trips": 0, "reason": "no trips yet"}


def cost_json(c: Cost) -> dict[str, float]:
    """Money in USD (DESIGN §5), in the core's own type, as ``status --json`` shows it."""
    return {
        "spent": round(c.spent, 6),
        "on_demand_equivalent": round(c.on_demand_equivalent, 6),
        "saved": round(c.saved, 6),
        "wasted": round(c.wasted, 6),
        "wasted_seconds": round(c.wasted_s, 3),
    }


@dataclass
class AttemptView:
    number: int
    state: str = "placed"
    exit_code: int | None = None
    started: float | None = None
    ended: float | None = None
    error: str | None = None
    pool: str | None = None
    market: str | None = None
    instances: list[str] = field(default_factory=list)
    budget: str | None = None
    reason: str = ""
    launched: float = 0.0
    usd_per_h: float = 0.0
    on_demand_usd_per_h: float = 0.0
    restored_from: int | None = None
    final_cost: Cost | None = None
    #: On a delegated pool an attempt is billed from its start, not while it waits queued.
    billed_from_start: bool = False
    #: When the task became ready for this attempt (queue wait = started - queued).
    queued: float | None = None
    #: CPU seconds and peak RSS the backend measured (``AttemptExited``); ``None``: unknown.
    cpu_s: float | None = None
    max_rss_mib: float | None = None

    def cost(self, now: float) -> Cost:
        """The billed cost once ended; while it runs, what it has cost so far."""
        if self.final_cost is not None:
            return self.final_cost
        began = self.launched
        if self.billed_from_start:
            began = self.started if self.started is not None else now
        seconds = max(0.0, now - began)
        return Cost(seconds * self.usd_per_h / 3600, seconds * self.on_demand_usd_per_h / 3600)

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state,
            "exit_code": self.exit_code,
            "started": self.started,
            "ended": self.ended,
            "error": self.error,
            "pool": self.pool,
            "market": self.market,
            "instance": self.instances[0] if self.instances else None,
            "instances": self.instances,
            "budget": self.budget,
            "reason": self.reason,
            "restored_from": self.restored_from,
            "cost": cost_json(self.cost(now)),
            "launched": self.launched,
            "queued": self.queued,
            "cpu_s": self.cpu_s,
            "max_rss_mib": self.max_rss_mib,
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
    ready_at: float | None = None
    #: When a task in backoff is retried (its retry timer is due), epoch seconds.
    retry_at: float | None = None

    def cost(self, now: float) -> Cost:
        total = Cost()
        for att in self.attempts:
            total.add(att.cost(now))
        return total

    def budgets(self) -> dict[str, int]:
        """How many ended attempts drew on each budget (retry, interruptions)."""
        used = {"retry": 0, "interruptions": 0}
        for att in self.attempts:
            if att.budget in used:
                used[att.budget] += 1
        return used

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "stage": self.stage + 1,
            "state": self.state,
            "error": self.error,
            "retry_at": self.retry_at,
            "budgets_used": self.budgets(),
            "cost": cost_json(self.cost(now)),
            "attempts": [a.to_json(now) for a in self.attempts],
        }


@dataclass
class InstanceView:
    id: str
    pool: str
    market: str
    state: str
    reason: str = ""
    attempts: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pool": self.pool,
            "market": self.market,
            "state": self.state,
            "attempts": list(self.attempts),
            "reason": self.reason,
        }


@dataclass
class RunView:
    name: str
    workflow: str
    state: str = "stopped"
    started: float | None = None
    ended: float | None = None
    tasks: dict[str, TaskView] = field(default_factory=dict)
    instances: dict[str, InstanceView] = field(default_factory=dict)
    breakers: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Delegated pools (a batch system places there) and their ``max_jobs``.
    delegated: dict[str, int] = field(default_factory=dict)
    #: Notices and losses of instances that were up, busy or idle (what the provider did).
    instance_notices: int = 0
    #: Every notice and loss counted above: ``{at, instance, pool, kind, source}`` (timeline marks).
    notices: list[dict[str, Any]] = field(default_factory=list)
    last_seq: int = 0
    last_at: float = 0.0
    _by_attempt: dict[str, AttemptView] = field(default_factory=dict)

    def apply(self, rows: Iterable[Row]) -> RunView:
        for row in rows:
            self.last_seq = row.seq
            self.last_at = max(self.last_at, row.at)
            handler = _HANDLERS.get(row.kind)
            if handler is not None:
                handler(self, row)
        return self

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tasks.values():
            out[t.state] = out.get(t.state, 0) + 1
        return out

    def outstanding(self, pool: str) -> int:
        """The run's attempts placed or running in ``pool`` now."""
        return sum(1 for att in self._by_attempt.values() if att.pool == pool)

    def interruptions(self) -> int:
        """Attempts taken away (``Capacity.Interrupted``, ``Node.Lost``): what cost work.

        Not the notices: a notice to an idle instance interrupts nothing.
        """
        return sum(t.budgets()["interruptions"] for t in self.tasks.values())

    def cost(self, now: float) -> Cost:
        total = Cost()
        for t in self.tasks.values():
            total.add(t.cost(now))
        return total

    def running_attempts(self) -> int:
        """Attempts placed or running right now (the recipe's ``RunningJobs``)."""
        return len(self._by_attempt)

    def resources(self) -> dict[str, Any]:
        """CPU seconds of every measured attempt and the largest peak RSS (the recipe's CPU)."""
        measured = [a for t in self.tasks.values() for a in t.attempts if a.cpu_s is not None]
        peaks = [
            a.max_rss_mib
            for t in self.tasks.values()
            for a in t.attempts
            if a.max_rss_mib is not None
        ]
        return {
            "cpu_s": round(sum(a.cpu_s or 0.0 for a in measured), 3) if measured else None,
            "max_rss_mib": max(peaks) if peaks else None,
            "attempts_measured": len(measured),
        }

    def to_json(self, now: float | None = None, page: TaskPage | None = None) -> dict[str, Any]:
        """``now`` prices attempts still running (default: the last thing the log says).

        ``page`` selects the tasks shown (``select_tasks``); without it, every task.
        """
        at = self.ended if self.ended is not None else (now or self.last_at)
        if page is None:
            shown, extra = list(self.tasks.values()), {}
        else:
            shown, matched = select_tasks(self, page)
            extra = {"page": page.to_json(matched, len(self.tasks))}
        return {
            "name": self.name,
            "workflow": self.workflow,
            "state": self.state,
            "started": self.started,
            "ended": self.ended,
            "counts": self.counts(),
            "cost": cost_json(self.cost(at)),
            "interruptions": self.interruptions(),
            "instance_notices": self.instance_notices,
            "running_attempts": self.running_attempts(),
            "resources": self.resources(),
            "last_seq": self.last_seq,
            "breakers": dict(self.breakers),
            "fleet": [i.to_json() for i in self.instances.values()],
            "notices": list(self.notices),
            "tasks": {t.id: t.to_json(at) for t in shown},
            **extra,
        }


@dataclass(frozen=True)
class TaskPage:
    """Which tasks a ``to_json`` shows: a slice of those in a state and stage (1-based)."""

    offset: int = 0
    limit: int | None = None
    state: str | None = None
    stage: int | None = None

    def to_json(self, matched: int, total: int) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "limit": self.limit,
            "state": self.state,
            "stage": self.stage,
            "matched": matched,
            "total": total,
        }


def select_tasks(view: RunView, page: TaskPage) -> tuple[list[TaskView], int]:
    """The page's tasks in file order, and how many matched its filters in all.

    The one place that pages a run's tasks (``status``, the API, the dashboard).
    """
    tasks: Iterable[TaskView] = view.tasks.values()
    if page.state is not None:
        tasks = (t for t in tasks if t.state == page.state)
    if page.stage is not None:
        level = page.stage - 1
        tasks = (t for t in tasks if t.stage == level)
    matched = list(tasks)
    end = None if page.limit is None else page.offset + page.limit
    return matched[page.offset : end], len(matched)


def _run_started(v: RunView, row: Row) -> None:
    if v.started is None:
        v.started = row.at


def _launch(v: RunView, row: Row) -> None:
    d = row.data
    task = v.tasks[d["task_id"]]
    att = AttemptView(
        int(d["number"]),
        pool=d.get("pool"),
        market=d.get("market") or None,
        instances=list(d.get("instances", [])),
        launched=row.at,
        usd_per_h=float(d.get("usd_per_h", 0.0)),
        on_demand_usd_per_h=float(d.get("on_demand_usd_per_h", 0.0)),
        reason=d.get("reason", ""),
        billed_from_start=d.get("pool") in v.delegated,
        queued=task.ready_at,
    )
    task.attempts.append(att)
    task.state = "running"
    v._by_attempt[d["attempt_id"]] = att
    for iid in att.instances:
        inst = v.instances.get(iid)
        if inst is not None:
            inst.attempts.append(d["attempt_id"])


def _started(v: RunView, row: Row) -> None:
    att = v._by_attempt.get(row.data["attempt_id"])
    if att is not None and att.state == "placed":
        att.state = "running"
        att.started = row.at
        if not att.instances and row.data.get("nodes"):
            att.instances = list(row.data["nodes"])  # a delegated pool: the backend chose
            for node in att.instances:  # known nodes list it; new ones find it (_instance)
                inst = v.instances.get(node)
                if inst is not None:
                    inst.attempts.append(row.data["attempt_id"])


def _exited(v: RunView, row: Row) -> None:
    att = v._by_attempt.get(row.data["attempt_id"])
    if att is not None:
        cpu, rss = row.data.get("cpu_s"), row.data.get("max_rss_mib")
        att.cpu_s = None if cpu is None else float(cpu)
        att.max_rss_mib = None if rss is None else float(rss)


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
    att.final_cost = attempt_cost(d)
    for iid in att.instances:
        inst = v.instances.get(iid)
        if inst is not None and d["attempt_id"] in inst.attempts:
            inst.attempts.remove(d["attempt_id"])


def _restored(v: RunView, row: Row) -> None:
    att = v._by_attempt.get(row.data["attempt_id"])
    if att is not None and row.data.get("seq"):
        att.restored_from = int(row.data["seq"])


def _instance(v: RunView, row: Row) -> None:
    d = row.data
    inst = v.instances.get(d["instance_id"])
    if inst is None:
        inst = v.instances[d["instance_id"]] = InstanceView(
            d["instance_id"], d["pool"], d["market"], d["state"]
        )
        if d["pool"] in v.delegated:  # a node learned from the attempts the backend ran there
            inst.attempts = [a for a, att in v._by_attempt.items() if inst.id in att.instances]
    inst.state = d["state"]
    inst.reason = d.get("reason", "")


def _notice(v: RunView, row: Row) -> None:
    # The core ignores a notice for an instance already going, and a loss of one already gone.
    inst = v.instances.get(row.data.get("instance_id", ""))
    counted = ("up", "draining") if row.kind == "InstanceLost" else ("up",)
    if inst is not None and inst.state in counted:
        v.instance_notices += 1
        v.notices.append(
            {
                "at": row.at,
                "instance": inst.id,
                "pool": inst.pool,
                "kind": "lost" if row.kind == "InstanceLost" else "notice",
                "source": row.data.get("source") or row.data.get("reason", ""),
            }
        )


def _breaker(v: RunView, row: Row) -> None:
    d = row.data
    v.breakers[d["pool"]] = {
        "state": d["state"],
        "until": d.get("until"),
        "trips": d.get("trips", 0),
        "reason": d.get("reason", ""),
    }


def _task_ready(v: RunView, row: Row) -> None:
    task = v.tasks[row.data["task_id"]]
    task.state, task.retry_at = "ready", None
    task.ready_at = row.at


def _task_retrying(v: RunView, row: Row) -> None:
    task = v.tasks[row.data["task_id"]]
    delay = float(row.data.get("delay_s", 0))
    task.state = "backoff" if delay > 0 else "ready"
    task.retry_at = row.at + delay if delay > 0 else None
    task.reason = row.data.get("reason", "")
    if task.state == "ready":
        task.ready_at = row.at


def _task_ended(v: RunView, row: Row) -> None:
    task = v.tasks[row.data["task_id"]]
    task.state, task.retry_at = row.data["state"], None
    task.error = row.data.get("error")
    task.reason = row.data.get("reason", "")


def _run_finished(v: RunView, row: Row) -> None:
    v.state = row.data["state"]
    v.ended = row.at


def _redriven(v: RunView, row: Row) -> None:
    """A redrive (``runtime.redrive``): the run now has the new workflow's tasks, in its
    order and stages; a task it had keeps its attempts, and waits again until told."""
    v.state, v.ended = "stopped", None
    v._by_attempt.clear()
    names = {t["id"]: t.get("name") or t["id"] for t in row.data["spec"]["tasks"]}
    tasks: dict[str, TaskView] = {}
    for level, ids in enumerate(row.data.get("stages") or stages_of(row.data["spec"]["tasks"])):
        for tid in ids:
            task = v.tasks.get(tid) or TaskView(tid, names[tid], level)
            task.name, task.stage = names[tid], level
            task.state, task.error, task.reason, task.retry_at = "waiting", None, "", None
            task.ready_at = None
            tasks[tid] = task
    v.tasks = {tid: tasks[tid] for tid in names}


_HANDLERS = {
    "RunStarted": _run_started,
    "LaunchAttempt": _launch,
    "AttemptStarted": _started,
    "AttemptExited": _exited,
    "AttemptEnded": _attempt_ended,
    "TaskReady": _task_ready,
    "TaskRetrying": _task_retrying,
    "TaskEnded": _task_ended,
    "RunFinished": _run_finished,
    "RunRedriven": _redriven,
    "CheckpointRestored": _restored,
    "InstanceChanged": _instance,
    "InterruptionNotice": _notice,
    "InstanceLost": _notice,
    "BreakerChanged": _breaker,
}


def empty_view(name: str, meta: dict[str, Any], stages: list[list[str]]) -> RunView:
    spec = meta["spec"]
    names = {t["id"]: t.get("name") or t["id"] for t in spec["tasks"]}
    view = RunView(name=name, workflow=spec["name"])
    # Every pool has a breaker from the start: closed until its first BreakerChanged.
    view.breakers = {p["name"]: closed_breaker() for p in meta.get("pools", [])}
    view.delegated = {
        p["name"]: int(p.get("max_jobs", 0)) for p in meta.get("pools", []) if p.get("delegated")
    }
    for level, ids in enumerate(stages):
        for tid in ids:
            view.tasks[tid] = TaskView(tid, names[tid], level)
    # keep file order, which is what people wrote
    view.tasks = {t["id"]: view.tasks[t["id"]] for t in spec["tasks"]}
    return view


def view_for_run(info: RunInfo) -> RunView:
    """A run's view before its log is applied: its tasks by stage, its pools' breakers.

    The stages come straight from the recorded spec's ids and ``depends_on`` (validated, and
    acyclic, when the run was created): no second validation of a 100,000-task spec.
    """
    return empty_view(info.name, info.meta, stages_of(info.meta["spec"]["tasks"]))


def stages_of(tasks: list[dict[str, Any]]) -> list[list[str]]:
    """Task ids by stage: a task's stage is one more than its deepest dependency's."""
    deps = {t["id"]: t.get("depends_on") or [] for t in tasks}
    level: dict[str, int] = {}
    for tid in deps:
        stack = [tid]
        while stack:
            top = stack[-1]
            if top in level:
                stack.pop()
                continue
            waiting = [d for d in deps[top] if d not in level]
            if waiting:
                stack.extend(waiting)
                continue
            level[top] = 1 + max((level[d] for d in deps[top]), default=-1)
            stack.pop()
    stages: list[list[str]] = [[] for _ in range(max(level.values(), default=0) + 1)]
    for tid in deps:
        stages[level[tid]].append(tid)
    return stages


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
        "progress": {"done": counts.get("succeeded", 0), "total": len(view.tasks)},
        "cost": cost_json(view.cost(at)),
        "interruptions": view.interruptions(),
        "running_attempts": view.running_attempts(),
    }
