"""What a run measured of each task, read from its log, for ``plan --from-run RUN``.

A figure is only used for a task whose definition has not changed since it was measured:
the same rule ``run --reuse`` applies to results, with the same fingerprints
(``runtime.fingerprint``), so a task whose command, environment, container, inputs or
parents changed keeps its declared figures. A redriven run has one workflow per segment
(``runtime.redrive``): each attempt is matched against the definition its task had in the
segment it ran in, so a task changed by the redrive is measured by its attempts after it.

* **runtime**: the wall time, from ``AttemptStarted`` to ``AttemptExited`` (or its end,
  without one), of the newest successful attempt under the same definition; none (a run not
  finished, cancelled, or failed there) leaves the declared runtime. An attempt that began
  from a restored checkpoint did only the rest of the work: the work before that checkpoint
  is added, as its own attempt measured it (from its start, or its own restore, to the
  commit request), so the figure is what the task takes from scratch;
* **checkpoint save**: the mean ``CheckpointCommitted.save_s`` of every attempt under the
  same definition, succeeded or not (a log from before it was recorded has none).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stormproof.errors import StormproofError
from stormproof.plan.measured import Declared, Measured, TaskMeasure, Why
from stormproof.runtime.fingerprint import Definition, definitions, hash_inputs, what_changed
from stormproof.runtime.redrive import REDRIVEN
from stormproof.runtime.runs import RunContext
from stormproof.spec.model import WorkflowSpec
from stormproof.store.base import EventLog, Row


@dataclass
class _Attempt:
    task_id: str
    segment: int
    started: float | None = None
    exited: float | None = None
    ended: float | None = None
    succeeded: bool = False
    saves_s: list[float] = field(default_factory=list)
    #: The checkpoint it began from (0: none), and when each of its commits was asked for.
    restored_seq: int = 0
    requested_at: dict[int, float] = field(default_factory=dict)

    def wall_s(self) -> float | None:
        end = self.exited if self.exited is not None else self.ended
        if self.started is None or end is None:
            return None
        return max(0.0, end - self.started)


@dataclass
class _Segment:
    """One workflow the run ran (the first, or a redrive's), and its tasks' definitions."""

    spec: WorkflowSpec
    input_hashes: dict[str, str]
    defs: dict[str, Definition] | None = None

    def definitions(self, runtime: str | None) -> dict[str, Definition]:
        if self.defs is None:
            found = definitions(self.spec, self.input_hashes, runtime)
            self.defs = {t.id: d for t, d in zip(self.spec.tasks, found, strict=True)}
        return self.defs


@dataclass
class _RunLog:
    """What the log says: the run's workflows, one per segment, every attempt it launched,
    and the tasks it kept without running them (reused, or kept by a redrive), with why."""

    segments: list[_Segment]
    attempts: dict[str, _Attempt] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)

    def attempts_by_task(self) -> dict[str, list[_Attempt]]:
        by_task: dict[str, list[_Attempt]] = {}
        for att in self.attempts.values():  # in launch order
            by_task.setdefault(att.task_id, []).append(att)
        return by_task


def measure_run(
    store: EventLog,
    run: str,
    spec: WorkflowSpec,
    workflow_file: Path,
    container_runtime: str | None,
) -> Measured:
    """The figures ``run`` measured for the tasks of ``spec`` (read from ``workflow_file``).

    ``RunNotFound`` (naming the runs it might be) without the run; ``StormproofError`` when
    the run has no task in common with ``spec``: nothing could be measured.
    """
    base = RunContext.from_meta(run, store.get_run(run).meta)
    log = _fold(base, store.read(run))
    known = {t.id for s in log.segments for t in s.spec.tasks}
    if not known & {t.id for t in spec.tasks}:
        raise StormproofError(
            f"--from-run {run}: run {run!r} ran workflow {base.spec.name!r}, which has no task "
            f"in common with {workflow_file} (workflow {spec.name!r}), so it measured nothing "
            "for it; name a run of this workflow (`stormproof status` lists runs)"
        )
    hashes = hash_inputs(spec, workflow_file.parent, str(workflow_file), strict=False)
    new = definitions(spec, hashes, container_runtime)
    new_defs = {t.id: d for t, d in zip(spec.tasks, new, strict=True)}
    return _figures(log, spec, new_defs, base.container.get("runtime"), run)


def _figures(
    log: _RunLog,
    spec: WorkflowSpec,
    new_defs: Mapping[str, Definition],
    runtime: str | None,
    run: str,
) -> Measured:
    """Each task's figures from its attempts under the definition it has in ``spec``."""
    by_task = log.attempts_by_task()
    measures: dict[str, TaskMeasure] = {}
    declared: dict[str, Declared] = {}
    for task in spec.tasks:
        mine = [
            a
            for a in by_task.get(task.id, [])
            if (d := log.segments[a.segment].definitions(runtime).get(task.id)) is not None
            and d.fingerprint == new_defs[task.id].fingerprint
        ]
        measure = _measure(mine)
        if measure is not None:
            measures[task.id] = measure
        if measure is None or measure.runtime_s is None:
            declared[task.id] = (
                Declared(Why.UNFINISHED, f"no successful attempt in run {run}")
                if mine  # it ran as it is defined now, and never succeeded
                else _why_declared(task.id, spec, new_defs, log, runtime, run)
            )
    return Measured(run, measures, declared)


def _fold(base: RunContext, rows: Iterable[Row]) -> _RunLog:
    """The run's workflows, the attempts with what the log says of their start, exit, end
    and checkpoints, and the tasks kept without running."""
    log = _RunLog([_Segment(base.spec, dict(base.input_hashes))])
    for row in rows:
        kind, d = row.kind, row.data
        if row.category == "event" and kind == REDRIVEN:
            spec = WorkflowSpec.model_validate(d["spec"])
            log.segments.append(_Segment(spec, dict(d.get("input_hashes") or {})))
        elif row.category == "event" and kind == "RunStarted":
            log.kept.update(zip(d.get("kept") or (), d.get("kept_why") or (), strict=False))
        elif kind == "LaunchAttempt":
            log.attempts[d["attempt_id"]] = _Attempt(d["task_id"], len(log.segments) - 1)
        elif (att := log.attempts.get(d.get("attempt_id", ""))) is not None:
            _note(att, kind, row)
    return log


def _note(att: _Attempt, kind: str, row: Row) -> None:
    if kind == "AttemptStarted" and att.started is None:
        att.started = row.at
    elif kind == "AttemptExited":
        att.exited = row.at
    elif kind == "AttemptEnded":
        att.ended = row.at
        att.succeeded = row.data.get("state") == "succeeded"
    elif kind == "CheckpointRestored":
        att.restored_seq = int(row.data.get("seq") or 0)
    elif kind == "CheckpointCommitted":
        save_s = float(row.data.get("save_s") or 0.0)
        if save_s > 0:  # 0: a log from before save times were recorded
            att.saves_s.append(save_s)
        att.requested_at[int(row.data.get("seq") or 0)] = row.at - save_s


def _measure(attempts: list[_Attempt]) -> TaskMeasure | None:
    """The newest successful attempt's wall time (with the work before the checkpoint it
    began from), and the mean save over all of them."""
    runtime_s = None
    for att in attempts:  # in launch order: the newest success wins
        wall = att.wall_s()
        if att.succeeded and wall is not None:
            runtime_s = wall + _work_before(att.restored_seq, attempts)
    saves = [s for att in attempts for s in att.saves_s]
    save_s = sum(saves) / len(saves) if saves else None
    if runtime_s is None and save_s is None:
        return None
    return TaskMeasure(runtime_s, save_s)


def _work_before(seq: int, attempts: list[_Attempt]) -> float:
    """Seconds of work in checkpoint ``seq``: from the start of the attempt that committed it
    to its commit request, plus the work in the checkpoint that attempt began from (0 for
    none, or for one whose attempt is not in ``attempts``: nothing to add)."""
    seen: set[int] = set()
    total = 0.0
    while seq and seq not in seen:
        seen.add(seq)
        maker = next((a for a in attempts if seq in a.requested_at), None)
        if maker is None or maker.started is None:
            break
        total += max(0.0, maker.requested_at[seq] - maker.started)
        seq = maker.restored_seq
    return total


def _why_declared(
    task_id: str,
    spec: WorkflowSpec,
    new_defs: Mapping[str, Definition],
    log: _RunLog,
    runtime: str | None,
    run: str,
) -> Declared:
    """Why a task that never ran in the run as it is defined now keeps its declared runtime,
    compared with its newest definition there: changed (and what), new, kept without running
    (reused from an earlier run), or never started."""
    old_defs = next(
        (defs for s in reversed(log.segments) if task_id in (defs := s.definitions(runtime))),
        None,
    )
    if old_defs is None:
        return Declared(Why.NEW, f"not in run {run}")
    old, new = old_defs[task_id], new_defs[task_id]
    if old.fingerprint == new.fingerprint:
        if task_id in log.kept:  # it did not run there: its measure is in the run it came from
            why = log.kept[task_id]
            return Declared(Why.UNFINISHED, f"kept in run {run} without running ({why})")
        return Declared(Why.UNFINISHED, f"no successful attempt in run {run}")  # never launched
    words = what_changed(old, new)
    if not words:  # the task is the same; what differs is upstream
        changed = [
            p
            for p in _parents(spec, task_id)
            if p not in old_defs or old_defs[p].fingerprint != new_defs[p].fingerprint
        ]
        words = [f"parent {changed[0]!r} changed"] if changed else ["depends_on changed"]
    return Declared(Why.CHANGED, words[0])


def _parents(spec: WorkflowSpec, task_id: str) -> list[str]:
    return next(list(t.depends_on) for t in spec.tasks if t.id == task_id)
