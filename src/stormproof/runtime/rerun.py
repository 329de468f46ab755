"""What a re-run will do, task by task, and why — decided before anything runs.

Two questions, one answer shape (``RerunPlan``: a ``Verdict`` per task):

* ``redrive`` (``plan_redrive``): a task that succeeded in the run is **kept** if its
  definition did not change, no parent reruns and its declared outputs are still there;
  every other task **runs**: failed, cancelled, skipped or unfinished ones, changed ones,
  and everything downstream of one that runs.
* ``run --reuse`` (``plan_reuse``): a task is **reused** from the newest earlier run in
  the home with the same fingerprint, if it declares outputs and they are all still there
  as that run left them; otherwise it **runs**, and so does everything downstream.

Verdicts are decided in topological order, so "a parent reruns" is known for every task
when its turn comes. Each reason names one cause a person can act on, the first that
applies: the task's own change (``command changed``), its outputs (``output missing:
x.nc``), its past (``failed in r1``), its parent (``parent 'prep' reruns``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stormproof.plan.graph import Dag, gc_paused
from stormproof.runtime.fingerprint import Definition, definitions, what_changed
from stormproof.runtime.redrive import UNFINISHED, TaskPast, carried
from stormproof.runtime.reuse import missing_outputs, outputs_problem
from stormproof.runtime.runs import RunContext
from stormproof.spec.model import WorkflowSpec
from stormproof.store.base import EventLog

Action = Literal["kept", "reused", "run"]


@dataclass(frozen=True, slots=True)
class Verdict:
    task_id: str
    action: Action
    reason: str
    #: The run whose result is kept or reused.
    from_run: str | None = None

    @property
    def words(self) -> str:
        """``kept``, ``reused from run r0`` or ``will run``: the table's verdict column."""
        if self.action == "reused":
            return f"reused from run {self.from_run}"
        return "kept" if self.action == "kept" else "will run"

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task_id,
            "verdict": self.action,
            "reason": self.reason,
            "from_run": self.from_run,
        }


@dataclass
class RerunPlan:
    """Every task's verdict, in the workflow's order, and how the run then starts."""

    kind: Literal["redrive", "reuse"]
    workflow: str
    verdicts: list[Verdict]
    #: The run being redriven (redrive), or the runs results are reused from (reuse).
    run: str | None = None
    #: Redrive: tasks of the run's workflow that the new file no longer has.
    removed: list[str] = field(default_factory=list)
    #: How the run starts (``RunContext.start``): kept, kept_why, carried, copy.
    start: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out = {"kept": 0, "reused": 0, "run": 0}
        for v in self.verdicts:
            out[v.action] += 1
        return out

    @property
    def reruns(self) -> int:
        return self.counts()["run"]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "workflow": self.workflow,
            "run": self.run,
            "counts": self.counts(),
            "tasks": [v.to_json() for v in self.verdicts],
            "removed": list(self.removed),
        }


# ---------------------------------------------------------------------- redrive
def plan_redrive(
    ctx: RunContext,
    past: dict[str, TaskPast],
    spec: WorkflowSpec,
    input_hashes: dict[str, str],
    data_dir: Path,
) -> RerunPlan:
    """What a redrive of the run (``ctx``, as of its current segment) with ``spec`` does."""
    runtime = ctx.container.get("runtime")
    before_defs = definitions(ctx.spec, ctx.input_hashes, runtime)
    old = {t.id: d for t, d in zip(ctx.spec.tasks, before_defs, strict=True)}
    old_parents = {t.id: set(t.depends_on) for t in ctx.spec.tasks}
    dag = Dag.from_spec(spec)
    new = definitions(spec, input_hashes, runtime, dag)
    verdicts: list[Verdict | None] = [None] * len(spec.tasks)
    changed: set[str] = set()
    for i in dag.order:
        task = spec.tasks[i]
        before = old.get(task.id)
        reasons: list[str] = []
        if before is None:
            reasons.append("new task")
        else:
            reasons += what_changed(before, new[i])
            if old_parents[task.id] != set(task.depends_on):
                reasons.append("depends_on changed")
        if reasons:
            changed.add(task.id)
        reasons += _parent_reruns(spec, dag, i, verdicts)
        p = past.get(task.id, TaskPast())
        if p.state != "succeeded":
            reasons.append(_past_words(p, ctx.name))
        gone = missing_outputs(data_dir, task.outputs)
        reasons += [gone] if gone else []
        if reasons:
            verdicts[i] = Verdict(task.id, "run", reasons[0])
        else:
            verdicts[i] = Verdict(task.id, "kept", f"succeeded in {ctx.name}", ctx.name)
    done = [v for v in verdicts if v is not None]
    kept = [(i, v) for i, v in enumerate(verdicts) if v is not None and v.action == "kept"]
    reruns = [v.task_id for v in done if v.action == "run"]
    ids = {t.id for t in spec.tasks}
    unchanged = ids - changed
    return RerunPlan(
        "redrive",
        spec.name,
        done,
        ctx.name,
        removed=[t.id for t in ctx.spec.tasks if t.id not in ids],
        start={
            "kept": [v.task_id for _, v in _topological(dag, kept)],
            "kept_why": [v.reason for _, v in _topological(dag, kept)],
            "carried": carried(past, unchanged, reruns),
        },
    )


def _past_words(p: TaskPast, run: str) -> str:
    if p.state in UNFINISHED:
        return f"not finished in {run}"
    return f"{p.state} in {run}"


def _parent_reruns(
    spec: WorkflowSpec, dag: Dag, i: int, verdicts: Sequence[Verdict | None]
) -> list[str]:
    for p in dag.parents[i]:
        v = verdicts[p]
        if v is not None and v.action == "run":
            return [f"parent {spec.tasks[p].id!r} reruns"]
    return []


# ---------------------------------------------------------------------- reuse
def plan_reuse(
    spec: WorkflowSpec, input_hashes: dict[str, str], runtime: str | None, store: EventLog
) -> RerunPlan:
    """What ``run --reuse`` of ``spec`` reuses from earlier runs in ``store``, and why not."""
    with gc_paused():  # tens of thousands of small objects, none of them in a cycle
        return _plan_reuse(spec, input_hashes, runtime, store)


def _plan_reuse(
    spec: WorkflowSpec, input_hashes: dict[str, str], runtime: str | None, store: EventLog
) -> RerunPlan:
    dag = Dag.from_spec(spec)
    defs = definitions(spec, input_hashes, runtime, dag)
    wanted = [defs[i].fingerprint for i, t in enumerate(spec.tasks) if t.outputs]
    found = store.find_results(wanted)
    verdicts: list[Verdict | None] = [None] * len(spec.tasks)
    unmatched: list[int] = []
    for i in dag.order:
        task = spec.tasks[i]
        parent = _parent_reruns(spec, dag, i, verdicts)
        if not task.outputs:
            verdicts[i] = Verdict(task.id, "run", "declares no outputs, so it is never reused")
            continue
        if parent:
            verdicts[i] = Verdict(task.id, "run", parent[0])
            continue
        result = found.get(defs[i].fingerprint)
        if result is None:
            unmatched.append(i)
            verdicts[i] = Verdict(task.id, "run", "")  # explained below, in one lookup
            continue
        problem = outputs_problem(result, task.outputs)
        if problem is not None:
            verdicts[i] = Verdict(task.id, "run", problem)
        else:
            why = f"same fingerprint; outputs as run {result.run} left them"
            verdicts[i] = Verdict(task.id, "reused", why, result.run)
    _explain_unmatched(spec, defs, unmatched, verdicts, store)
    done = [v for v in verdicts if v is not None]
    reused = [(i, v) for i, v in enumerate(verdicts) if v is not None and v.action == "reused"]
    sources = sorted({v.from_run for _, v in reused if v.from_run})
    return RerunPlan(
        "reuse",
        spec.name,
        done,
        ", ".join(sources) or None,
        start={
            "kept": [v.task_id for _, v in _topological(dag, reused)],
            "kept_why": [v.reason for _, v in _topological(dag, reused)],
            "copy": [
                {
                    "task": v.task_id,
                    "run": v.from_run,
                    "data_dir": found[defs[i].fingerprint].data.get("data_dir"),
                    "outputs": list(spec.tasks[i].outputs),
                }
                for i, v in reused
            ],
        },
    )


def _topological(dag: Dag, items: list[tuple[int, Verdict]]) -> list[tuple[int, Verdict]]:
    """Kept tasks in an order where parents come first (what ``RunStarted.kept`` asks)."""
    rank = {i: k for k, i in enumerate(dag.order)}
    return sorted(items, key=lambda item: rank[item[0]])


def _explain_unmatched(
    spec: WorkflowSpec,
    defs: list[Definition],
    unmatched: list[int],
    verdicts: list[Verdict | None],
    store: EventLog,
) -> None:
    """Say why tasks that matched no earlier result did not: compared with their last one."""
    if not unmatched:
        return
    last = store.last_results(spec.name, [spec.tasks[i].id for i in unmatched])
    for i in unmatched:
        task = spec.tasks[i]
        before = last.get(task.id)
        if before is None:
            reason = "no earlier run in this home has a result for it"
        else:
            changes = what_changed(before.definition or {}, defs[i])
            head, _, what = (changes[0] if changes else "a parent changed").partition(": ")
            reason = f"{head} since run {before.run}" + (f": {what}" if what else "")
        verdicts[i] = Verdict(task.id, "run", reason)
