"""What a run looks like, folded from its log rows — for ``status``, the live display and JSON.

The core's notes (``TaskReady``, ``AttemptEnded``, ``TaskEnded``, …) already
say every conclusion, so this fold is a plain projection: it never decides
anything, and it needs no replay of the core.

The fold is incremental and need not hold every task: the run's totals (counts per state
and per stage, money settled, interruptions, the fleet) are kept as counters, so a view
restored from its stored summary (``from_summary``) with only the tasks a few new rows
touch (``add_task``, or ``loader`` on demand) folds those rows as exactly as a fold from
the start would. ``runtime/view_store.py`` keeps such a view in the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from stormproof.core.machine import Cost
from stormproof.runtime.view_records import (
    AttemptView,
    CheckpointTotals,
    InstanceView,
    TaskView,
    attempt_cost,
    checkpoint_json,
    cost_json,
)
from stormproof.store.base import Row


@dataclass
class RunView:
    name: str
    workflow: str
    state: str = "stopped"
    started: float | None = None
    ended: float | None = None
    #: The tasks this view holds: all of them after a fold from the start, else those
    #: loaded (``add_task``, ``loader``); the totals below always cover every task.
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
    #: Tasks per state, and per stage (0-based) and state, over every task of the run.
    state_counts: dict[str, int] = field(default_factory=dict)
    stage_counts: dict[int, dict[str, int]] = field(default_factory=dict)
    #: Money of ended attempts, and attempts taken away (``Capacity.Interrupted``, ``Node.Lost``).
    settled: Cost = field(default_factory=Cost)
    taken_away: int = 0
    #: Attempts placed or running now, by pool ("" for none).
    running: dict[str, int] = field(default_factory=dict)
    #: CPU seconds of the measured attempts, how many were measured, the largest peak RSS.
    cpu_s: float = 0.0
    measured: int = 0
    peak_rss_mib: float | None = None
    #: Checkpoints committed over the whole run (each attempt's are in its ``checkpoints``).
    checkpoints: CheckpointTotals = field(default_factory=CheckpointTotals)
    #: Tasks with an attempt not yet ended (their cost grows with time).
    live: set[str] = field(default_factory=set)
    #: Tasks changed since ``dirty`` was last cleared (what a save must write).
    dirty: set[str] = field(default_factory=set)
    #: The tasks were reshaped (a redrive): a save writes them all and drops any other.
    reshaped: bool = False
    #: Where a task not held is found (a stored view); ``None``: every task is held.
    loader: Callable[[str], TaskView | None] | None = None
    #: Where every task not held is found, for a redrive, which reshapes them all.
    load_rest: Callable[[], Iterable[TaskView]] | None = None
    _by_attempt: dict[str, AttemptView] = field(default_factory=dict)

    def add_task(self, task: TaskView, counted: bool = False) -> None:
        """Hold ``task``; ``counted``: it is in the totals already (loaded from a summary)."""
        self.tasks[task.id] = task
        if not counted:
            self._count(task, 1)
        for att in task.live_attempts():
            self._by_attempt[f"{task.id}/{att.number}"] = att

    def task(self, task_id: str) -> TaskView:
        found = self.tasks.get(task_id)
        if found is None and self.loader is not None:
            found = self.loader(task_id)
            if found is not None:
                self.add_task(found, counted=True)
        if found is None:
            raise KeyError(task_id)
        return found

    def hold_all(self) -> None:
        """Load every task not held yet: from then on the view holds the whole run."""
        if self.load_rest is not None:
            for task in self.load_rest():
                if task.id not in self.tasks:
                    self.add_task(task, counted=True)
        self.loader = self.load_rest = None

    def set_state(self, task: TaskView, state: str) -> None:
        if task.state != state:
            self._count(task, -1)
            task.state = state
            self._count(task, 1)
        self.dirty.add(task.id)

    def _count(self, task: TaskView, n: int) -> None:
        self.state_counts[task.state] = self.state_counts.get(task.state, 0) + n
        stage = self.stage_counts.setdefault(task.stage, {})
        stage[task.state] = stage.get(task.state, 0) + n

    def apply(self, rows: Iterable[Row]) -> RunView:
        for row in rows:
            self.last_seq = row.seq
            self.last_at = max(self.last_at, row.at)
            handler = _HANDLERS.get(row.kind)
            if handler is not None:
                handler(self, row)
        return self

    def counts(self) -> dict[str, int]:
        return {state: n for state, n in self.state_counts.items() if n}

    def stages(self) -> list[dict[str, int]]:
        """Tasks per state in each stage, first stage first."""
        last = max(self.stage_counts, default=-1)
        return [
            {k: n for k, n in self.stage_counts.get(i, {}).items() if n} for i in range(last + 1)
        ]

    def total(self) -> int:
        return sum(self.state_counts.values())

    def outstanding(self, pool: str) -> int:
        """The run's attempts placed or running in ``pool`` now."""
        return self.running.get(pool, 0)

    def running_attempts(self) -> int:
        """Attempts placed or running right now (the recipe's ``RunningJobs``)."""
        return sum(self.running.values())

    def resources(self) -> dict[str, Any]:
        """CPU seconds of every measured attempt and the largest peak RSS (the recipe's CPU)."""
        return {
            "cpu_s": round(self.cpu_s, 3) if self.measured else None,
            "max_rss_mib": self.peak_rss_mib,
            "attempts_measured": self.measured,
        }

    def interruptions(self) -> int:
        """Attempts taken away (``Capacity.Interrupted``, ``Node.Lost``): what cost work.

        Not the notices: a notice to an idle instance interrupts nothing.
        """
        return self.taken_away

    def cost(self, now: float) -> Cost:
        total = Cost()
        total.add(self.settled)
        for task_id in self.live:
            for att in self.task(task_id).live_attempts():
                total.add(att.cost(now))
        return total

    def summary(self) -> dict[str, Any]:
        """The run without its tasks, for ``from_summary``: what the store keeps of it."""
        s = self.settled
        return {
            "format": VIEW_FORMAT,
            "workflow": self.workflow,
            "state": self.state,
            "started": self.started,
            "ended": self.ended,
            "instances": [i.__dict__ for i in self.instances.values()],
            "breakers": self.breakers,
            "delegated": self.delegated,
            "instance_notices": self.instance_notices,
            "notices": self.notices,
            "last_seq": self.last_seq,
            "last_at": self.last_at,
            "state_counts": self.state_counts,
            "stage_counts": {str(k): v for k, v in self.stage_counts.items()},
            "settled": [s.spent, s.on_demand_equivalent, s.wasted, s.wasted_s],
            "taken_away": self.taken_away,
            "running": self.running,
            "resources": [self.cpu_s, self.measured, self.peak_rss_mib],
            "checkpoints": self.checkpoints.to_list(),
            "live": sorted(self.live),
        }

    @classmethod
    def from_summary(cls, name: str, summary: dict[str, Any]) -> RunView:
        """A view of every total, holding no task yet (``add_task`` or ``loader`` them)."""
        view = cls(name=name, workflow=summary["workflow"], state=summary["state"])
        view.started, view.ended = summary["started"], summary["ended"]
        view.instances = {i["id"]: InstanceView(**i) for i in summary["instances"]}
        view.breakers = dict(summary["breakers"])
        view.delegated = dict(summary["delegated"])
        view.instance_notices = int(summary["instance_notices"])
        view.notices = list(summary["notices"])
        view.last_seq, view.last_at = int(summary["last_seq"]), float(summary["last_at"])
        view.state_counts = dict(summary["state_counts"])
        view.stage_counts = {int(k): dict(v) for k, v in summary["stage_counts"].items()}
        view.settled = Cost(*summary["settled"])
        view.taken_away = int(summary["taken_away"])
        view.running = dict(summary["running"])
        view.cpu_s, view.measured, view.peak_rss_mib = summary["resources"]
        view.checkpoints = CheckpointTotals(*summary["checkpoints"])
        view.live = set(summary["live"])
        return view

    def to_json(
        self, now: float | None = None, tasks: Iterable[TaskView] | None = None
    ) -> dict[str, Any]:
        """``now`` prices attempts still running (default: the last thing the log says);
        ``tasks`` are the ones listed (default: every task held)."""
        at = self.ended if self.ended is not None else (now or self.last_at)
        listed = self.tasks.values() if tasks is None else tasks
        return {
            "name": self.name,
            "workflow": self.workflow,
            "state": self.state,
            "started": self.started,
            "ended": self.ended,
            "counts": self.counts(),
            "stages": [{"stage": i + 1, "counts": c} for i, c in enumerate(self.stages())],
            "cost": cost_json(self.cost(at)),
            "interruptions": self.interruptions(),
            "instance_notices": self.instance_notices,
            "running_attempts": self.running_attempts(),
            "resources": self.resources(),
            "checkpoints": self.checkpoints.to_json(),
            "last_seq": self.last_seq,
            "breakers": dict(self.breakers),
            "fleet": [i.to_json() for i in self.instances.values()],
            "notices": list(self.notices),
            "tasks": {t.id: t.to_json(at) for t in listed},
        }


#: The shape of ``RunView.summary`` and of the task records; a stored view of another
#: format is not read (the log is folded instead, and the view saved anew).
VIEW_FORMAT = 3  # 3: attempts' checkpoints, the run's checkpoint totals


def _run_started(v: RunView, row: Row) -> None:
    if v.started is None:
        v.started = row.at


def _launch(v: RunView, row: Row) -> None:
    d = row.data
    task = v.task(d["task_id"])
    att = AttemptView(
        int(d["number"]),
        pool=d.get("pool"),
        market=d.get("market") or None,
        instances=list(d.get("instances") or []),
        launched=row.at,
        usd_per_h=float(d.get("usd_per_h", 0.0)),
        on_demand_usd_per_h=float(d.get("on_demand_usd_per_h", 0.0)),
        reason=d.get("reason", ""),
        billed_from_start=d.get("pool") in v.delegated,
        queued=task.ready_at,
    )
    task.attempts.append(att)
    v.set_state(task, "running")
    v.live.add(task.id)
    v._by_attempt[d["attempt_id"]] = att
    pool = att.pool or ""
    v.running[pool] = v.running.get(pool, 0) + 1
    for iid in att.instances:
        inst = v.instances.get(iid)
        if inst is not None:
            inst.attempts.append(d["attempt_id"])


def _attempt(v: RunView, attempt_id: str) -> AttemptView | None:
    """A live attempt, its task loaded if this view does not hold it yet."""
    att = v._by_attempt.get(attempt_id)
    if att is None and v.loader is not None:
        task_id = attempt_id.rpartition("/")[0]
        if task_id not in v.tasks and task_id in v.live:
            v.task(task_id)
            att = v._by_attempt.get(attempt_id)
    return att


def _started(v: RunView, row: Row) -> None:
    att = _attempt(v, row.data["attempt_id"])
    if att is not None and att.state == "placed":
        v.dirty.add(row.data["attempt_id"].rpartition("/")[0])
        att.state = "running"
        att.started = row.at
        if not att.instances and row.data.get("nodes"):
            att.instances = list(row.data["nodes"])  # a delegated pool: the backend chose
            for node in att.instances:  # known nodes list it; new ones find it (_instance)
                inst = v.instances.get(node)
                if inst is not None:
                    inst.attempts.append(row.data["attempt_id"])


def _exited(v: RunView, row: Row) -> None:
    att = _attempt(v, row.data["attempt_id"])
    if att is None:
        return
    v.dirty.add(row.data["attempt_id"].rpartition("/")[0])
    cpu, rss = row.data.get("cpu_s"), row.data.get("max_rss_mib")
    if att.cpu_s is not None:  # measured twice: the later figure replaces the first
        v.cpu_s -= att.cpu_s
        v.measured -= 1
    att.cpu_s = None if cpu is None else float(cpu)
    att.max_rss_mib = None if rss is None else float(rss)
    if att.cpu_s is not None:
        v.cpu_s += att.cpu_s
        v.measured += 1
    if att.max_rss_mib is not None:
        v.peak_rss_mib = max(v.peak_rss_mib or 0.0, att.max_rss_mib)


def _attempt_ended(v: RunView, row: Row) -> None:
    d = row.data
    _attempt(v, d["attempt_id"])
    att = v._by_attempt.pop(d["attempt_id"], None)
    if att is None:
        return
    task = v.task(d["attempt_id"].rpartition("/")[0])
    v.dirty.add(task.id)
    pool = att.pool or ""
    v.running[pool] -= 1
    att.state = d["state"]
    att.error = d.get("error")
    att.exit_code = d.get("exit_code")
    att.budget = d.get("budget")
    att.reason = d.get("reason", "")
    att.ended = row.at
    att.final_cost = attempt_cost(d)
    v.settled.add(att.final_cost)
    if att.budget == "interruptions":
        v.taken_away += 1
    if not task.live_attempts():
        v.live.discard(task.id)
    for iid in att.instances:
        inst = v.instances.get(iid)
        if inst is not None and d["attempt_id"] in inst.attempts:
            inst.attempts.remove(d["attempt_id"])


def _restored(v: RunView, row: Row) -> None:
    att = _attempt(v, row.data["attempt_id"])
    if att is not None and row.data.get("seq"):
        v.dirty.add(row.data["attempt_id"].rpartition("/")[0])
        att.restored_from = int(row.data["seq"])


def _committed(v: RunView, row: Row) -> None:
    """A checkpoint saved: listed under its attempt (ended already when a batch backend
    reports its commits with its end) and counted in the run's totals."""
    attempt_id = row.data["attempt_id"]
    task_id, _, number = attempt_id.rpartition("/")
    att = _attempt(v, attempt_id)
    if att is None:
        try:
            task = v.task(task_id)
        except KeyError:  # not a task of the run (a stray commit): nothing to list it under
            return
        att = next((a for a in task.attempts if str(a.number) == number), None)
        if att is None:
            return
    checkpoint = checkpoint_json(row.data, row.at)
    att.checkpoints.append(checkpoint)
    v.checkpoints.add(checkpoint)
    v.dirty.add(task_id)


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
    task = v.task(row.data["task_id"])
    v.set_state(task, "ready")
    task.retry_at = None
    task.ready_at = row.at


def _task_retrying(v: RunView, row: Row) -> None:
    task = v.task(row.data["task_id"])
    delay = float(row.data.get("delay_s", 0))
    v.set_state(task, "backoff" if delay > 0 else "ready")
    task.retry_at = row.at + delay if delay > 0 else None
    task.reason = row.data.get("reason", "")
    if task.state == "ready":
        task.ready_at = row.at


def _task_ended(v: RunView, row: Row) -> None:
    task = v.task(row.data["task_id"])
    v.set_state(task, row.data["state"])
    task.retry_at = None
    task.error = row.data.get("error")
    task.reason = row.data.get("reason", "")


def _run_finished(v: RunView, row: Row) -> None:
    v.state = row.data["state"]
    v.ended = row.at


def _redriven(v: RunView, row: Row) -> None:
    """A redrive (``runtime.redrive``): the run now has the new workflow's tasks, in its
    order and stages; a task it had keeps its attempts, and waits again until told.

    A redrive is refused while attempts still run, so none is live here. What earlier
    attempts cost stays in the run's money (``settled``), a task the new workflow dropped
    included: it was spent (``history``'s ``RunFinished`` counts it too).
    """
    v.hold_all()
    v.state, v.ended = "stopped", None
    v._by_attempt.clear()
    v.live.clear()
    v.running.clear()
    spec = row.data["spec"]["tasks"]
    names = {t["id"]: t.get("name") or t["id"] for t in spec}
    level = {
        tid: i for i, ids in enumerate(row.data.get("stages") or stages_of(spec)) for tid in ids
    }
    tasks: dict[str, TaskView] = {}
    for position, tid in enumerate(names):
        task = v.tasks.get(tid) or TaskView(tid, names[tid], level[tid])
        task.name, task.stage, task.position = names[tid], level[tid], position
        task.state, task.error, task.reason, task.retry_at = "waiting", None, "", None
        task.ready_at = None
        tasks[tid] = task
    v.tasks = tasks
    v.state_counts, v.stage_counts = {}, {}
    for task in tasks.values():
        v._count(task, 1)
    v.dirty = set(tasks)
    v.reshaped = True


def stages_of(tasks: list[dict[str, Any]]) -> list[list[str]]:
    """Task ids by stage (a task's is one more than its deepest dependency's), in file order
    within each. The stages come straight from a recorded spec's ids and ``depends_on``
    (validated, and acyclic, when the run was created): no second validation of a
    100,000-task spec."""
    level = levels_of(tasks)
    stages: list[list[str]] = [[] for _ in range(max(level.values(), default=0) + 1)]
    for t in tasks:
        stages[level[t["id"]]].append(t["id"])
    return stages


def levels_of(tasks: list[dict[str, Any]]) -> dict[str, int]:
    """Each task's stage (0-based): one more than its deepest dependency's."""
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
    return level


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
    "CheckpointCommitted": _committed,
    "InstanceChanged": _instance,
    "InterruptionNotice": _notice,
    "InstanceLost": _notice,
    "BreakerChanged": _breaker,
}
