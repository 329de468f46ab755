"""Task results across runs: what a succeeded task left, checked and copied for reuse.

* When a task that declares ``outputs`` succeeds (or is kept), the driver records a
  result in the store's index (``EventLog.put_results``): its fingerprint, the run's data
  dir, each output's size and modification time then, and its definition.
* ``run --reuse`` reuses a result only if every declared output is still there with the
  size and modification time it had (a stat, not a read: outputs can be large, and a
  changed file almost always has a new mtime); anything else reruns the task, saying which
  output is missing or changed.
* A reused task's outputs are **copied** into the new run's data dir before the run starts
  (with their times, so the new run records the same stats): not linked, because a task that
  rewrites a file in place would then change the earlier run's result too.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from stat import S_ISDIR
from typing import Any

from stormproof.core.decisions import Decision, TaskEnded
from stormproof.errors import StormproofError
from stormproof.runtime.fingerprint import Definition, definitions
from stormproof.runtime.home import Home
from stormproof.runtime.runs import RunContext
from stormproof.store.base import EventLog, TaskResult

#: An output as recorded: [kind ("file" | "dir"), bytes, newest mtime in ns, files], or None
#: when it did not exist.
Stat = list[Any] | None


def output_stats(data_dir: Path, outputs: Iterable[str]) -> dict[str, Stat]:
    base = str(data_dir)
    return {path: _stat(os.path.join(base, path)) for path in outputs}


def _stat(path: str) -> Stat:
    """One ``stat`` for a file (a 10,000-task plan makes 10,000: plain strings, no ``Path``)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not S_ISDIR(st.st_mode):
        return ["file", st.st_size, st.st_mtime_ns, 1]
    size, newest, files = 0, st.st_mtime_ns, 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                f = os.stat(os.path.join(root, name))
            except OSError:
                continue
            size += f.st_size
            newest = max(newest, f.st_mtime_ns)
            files += 1
    return ["dir", size, newest, files]


def outputs_problem(result: TaskResult, outputs: Sequence[str]) -> str | None:
    """Why the result's outputs cannot be reused now (None: they can), in words."""
    data_dir = str(result.data.get("data_dir", ""))
    recorded: Mapping[str, Stat] = result.data.get("outputs") or {}
    for path in outputs:
        then = recorded.get(path)
        if then is None:
            return f"output missing in run {result.run}: {path}"
        now = _stat(os.path.join(data_dir, path))
        if now is None:
            return f"output missing: {path}"
        if now != then:
            return f"output changed since run {result.run}: {path}"
    return None


def missing_outputs(data_dir: Path, outputs: Sequence[str]) -> str | None:
    """The first declared output that is not in ``data_dir`` (a redrive keeps only tasks
    whose outputs are still there)."""
    for path in outputs:
        if not (data_dir / path).exists():
            return f"output missing: {path}"
    return None


def copy_outputs(source_dir: Path, target_dir: Path, outputs: Sequence[str]) -> None:
    """Copy the outputs, with their times; again after a crash part-way, harmlessly."""
    for path in outputs:
        source, target = source_dir / path, target_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)


def result_of(
    run: str,
    workflow: str,
    task_id: str,
    definition: Definition,
    data_dir: Path,
    outputs: Sequence[str],
    at: float,
) -> TaskResult:
    """What the index records of a task that succeeded (or was kept) in ``run``."""
    return TaskResult(
        definition.fingerprint,
        run,
        task_id,
        workflow,
        at,
        {"data_dir": str(data_dir), "outputs": output_stats(data_dir, outputs)},
        {"parts": definition.parts, "inputs": definition.inputs},
    )


def copy_reused(start: Mapping[str, Any], data_dir: Path, run: str = "") -> None:
    """Copy the outputs of every task the run reuses (``RunContext.start["copy"]``)."""
    for item in start.get("copy", ()):
        try:
            copy_outputs(Path(item["data_dir"]), data_dir, item["outputs"])
        except OSError as err:
            raise StormproofError(
                f"cannot copy the outputs of task {item['task']!r} from run {item['run']!r} "
                f"({err.strerror or err}: {err.filename}), gone since the run was planned; "
                f"delete this run (`stormproof clean {run}`) and start it again with --reuse, "
                "which reruns what is gone"
            ) from None


class TaskResults:
    """The driver's side of the index: after each flush, record the tasks that succeeded
    (or were kept) and declare outputs. ``None`` for a run where no task declares any."""

    def __init__(self, store: EventLog, ctx: RunContext, home: Home) -> None:
        self.store = store
        self.run = ctx.name
        self.workflow = ctx.spec.name
        self.data_dir = home.data_dir(ctx.name)
        self.outputs = {t.id: t.outputs for t in ctx.spec.tasks if t.outputs}
        defs = definitions(ctx.spec, ctx.input_hashes, ctx.container.get("runtime"))
        self.defs = {t.id: d for t, d in zip(ctx.spec.tasks, defs, strict=True) if t.outputs}

    @classmethod
    def for_run(cls, store: EventLog, ctx: RunContext, home: Home) -> TaskResults | None:
        if not any(t.outputs for t in ctx.spec.tasks):
            return None
        return cls(store, ctx, home)

    def record(self, decisions: Iterable[Decision], at: float) -> None:
        results = [
            result_of(
                self.run,
                self.workflow,
                d.task_id,
                self.defs[d.task_id],
                self.data_dir,
                self.outputs[d.task_id],
                at,
            )
            for d in decisions
            if isinstance(d, TaskEnded) and d.state == "succeeded" and d.task_id in self.outputs
        ]
        if results:
            self.store.put_results(results)
