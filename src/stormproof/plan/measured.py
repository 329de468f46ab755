"""Figures a run measured, in place of the declared ones: what ``plan --from-run RUN`` uses.

A workflow declares how long each task takes (``estimated_runtime``) and what a checkpoint
costs (``checkpoint_cost``); a run *measures* both. ``runtime.measured`` reads a run's log
and gives, for each task of the planned workflow whose definition did not change since the
run (same fingerprint, ``runtime.fingerprint``), the wall time of its successful attempt and
the mean time its checkpoints took to save. This module is the plan's side: the figures as
data, put into the plan's graph (``with_runtimes``), and the one line that says where the
figures came from. Every task without a measured runtime keeps its declared one, with the
reason (``Declared``), so a plan never mixes figures silently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from stormproof.plan.graph import Dag
from stormproof.spec.model import WorkflowSpec


class Why(str, Enum):
    """Why a task's runtime is the declared one; the values are a stable JSON API."""

    CHANGED = "changed"  # its definition (or a parent's) differs from the run's
    NEW = "new"  # the run has no task of that id
    UNFINISHED = "no successful attempt"  # the run never finished it under this definition


@dataclass(frozen=True, slots=True)
class Declared:
    """A task whose runtime stays declared, and why (``words``: ``command changed``)."""

    why: Why
    words: str


@dataclass(frozen=True, slots=True)
class TaskMeasure:
    """What the run measured of one unchanged task."""

    #: Wall time of its successful attempt, from its start to its exit; None: none succeeded.
    runtime_s: float | None
    #: Mean seconds its checkpoints took to save (every attempt's); None: none measured.
    save_s: float | None = None


@dataclass(frozen=True, slots=True)
class Measured:
    """The figures of run ``run`` for the tasks of the planned workflow."""

    run: str
    measures: Mapping[str, TaskMeasure] = field(default_factory=dict)
    #: Every task of the planned workflow without a measured runtime, and why.
    declared: Mapping[str, Declared] = field(default_factory=dict)

    def runtime_s(self, task_id: str) -> float | None:
        m = self.measures.get(task_id)
        return None if m is None else m.runtime_s

    def save_s(self, task_id: str) -> float | None:
        m = self.measures.get(task_id)
        return None if m is None else m.save_s

    def with_runtimes(self, spec: WorkflowSpec, dag: Dag) -> Dag:
        """``dag`` (built from ``spec``) with the measured runtimes in place of the declared
        or assumed ones; a measured task no longer counts as missing its runtime."""
        runtime = list(dag.runtime_s)
        missing = 0
        for i, task in enumerate(spec.tasks):
            measured = self.runtime_s(task.id)
            if measured is not None:
                runtime[i] = measured
            elif task.estimated_runtime is None:
                missing += 1
        return dataclasses.replace(
            dag,
            runtime_s=tuple(runtime),
            missing_runtime=missing,
            assumed_runtime_s=dag.assumed_runtime_s if missing else 0.0,
        )

    def summary(self, total: int) -> str:
        """``runtime: measured in r1 for 37 of 40 tasks, declared for 3 (changed: a, b;
        new: c)``."""
        measured = total - len(self.declared)
        text = f"runtime: measured in {self.run} for {measured:,} of {total:,} tasks"
        if not self.declared:
            return text
        by_why: dict[Why, list[str]] = {}
        for task_id, d in self.declared.items():
            by_why.setdefault(d.why, []).append(task_id)
        parts = [f"{why.value}: {_some(ids)}" for why, ids in by_why.items()]
        return f"{text}, declared for {len(self.declared):,} ({'; '.join(parts)})"

    def saves_measured(self) -> int:
        return sum(1 for m in self.measures.values() if m.save_s is not None)

    def to_json(self, total: int) -> dict[str, Any]:
        """``plan --json``'s ``from_run``: the counts, and why each declared task is."""
        return {
            "run": self.run,
            "runtime_measured": total - len(self.declared),
            "runtime_declared": len(self.declared),
            "checkpoint_save_measured": self.saves_measured(),
            "declared": {
                task_id: {"why": d.why.value, "reason": d.words}
                for task_id, d in self.declared.items()
            },
        }


def _some(ids: Sequence[str], shown: int = 5) -> str:
    """``a, b, c`` or ``a, b, c, d, e and 12 more``."""
    if len(ids) <= shown:
        return ", ".join(ids)
    return f"{', '.join(ids[:shown])} and {len(ids) - shown:,} more"
