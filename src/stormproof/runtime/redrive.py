"""Redrive: carry on a failed, cancelled or stopped run, its workflow edited or not.

A run has one history, its event log. A redrive appends a ``RunRedriven`` row to it, which
begins a new *segment*: the row holds the workflow the segment runs (the edited file, or
the same one), the hashes of its declared inputs, what each task will do and why, and how
the segment starts (``RunContext.start``): the tasks it keeps (they succeeded and their
definition did not change) and the tasks it carries over (attempt numbers and checkpoint
seqs continue after the earlier ones). The rows after it are the segment's events.

The rules:

* The core of a segment is built from the segment's workflow and replays only the
  segment's events (the ``RunRedriven`` row is the replay boundary); it starts with a
  ``RunStarted`` that keeps and carries what the row says. Replay stays deterministic:
  the row is in the log before anything of the segment happens.
* ``status``, ``history`` and ``logs`` read the whole log: the attempts of every segment
  stay where they were, numbered on from one segment to the next.
* The row is not a core event: only the driver reads it (``segment_start``), and the run
  view (``runtime.view``) reshapes the run's tasks at it.
* The pools, executor, policy, seed and container runtime stay the run's own; only the
  workflow changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stormproof.errors import StormproofError
from stormproof.runtime.runs import RunContext
from stormproof.spec.model import WorkflowSpec
from stormproof.store.base import EventLog, Row

#: The kind of the row that begins a segment.
REDRIVEN = "RunRedriven"
#: What a task was, in the segment before a redrive, when it did not end.
UNFINISHED = frozenset({"waiting", "ready", "backoff", "running"})


def current_context(base: RunContext, rows: Iterable[Row]) -> RunContext:
    """``base`` (the run as created) as of its last ``RunRedriven`` row, if any."""
    last: Row | None = None
    segment = 0
    for row in rows:
        if row.kind == REDRIVEN and row.category == "event":
            last = row
            segment += 1
    if last is None:
        return base
    data = last.data
    return dataclasses.replace(
        base,
        spec=WorkflowSpec.model_validate(data["spec"]),
        workflow_path=str(data.get("workflow_path") or base.workflow_path),
        workflow_dir=str(data.get("workflow_dir") or base.workflow_dir),
        input_hashes=dict(data.get("input_hashes") or {}),
        start=dict(data.get("start") or {}),
        segment=segment,
        segment_seq=last.seq,
    )


def begin(store: EventLog, name: str, data: dict[str, Any], after_seq: int, at: float) -> int:
    """Append the ``RunRedriven`` row and flush it, if the log still ends at ``after_seq`` (what
    the redrive was planned on); its seq. The caller holds the run's lease."""
    later = next(iter(store.read(name, after_seq)), None)
    if later is not None:
        raise StormproofError(
            f"run {name!r} changed while its redrive was planned (row {later.seq}, "
            f"{later.kind}); plan it again: stormproof redrive {name} --plan"
        )
    (written,) = store.append(name, [Row(0, "event", REDRIVEN, at, None, data)])
    store.flush()
    return written.seq


def segment_rows(rows: Sequence[Row], ctx: RunContext) -> Sequence[Row]:
    """The rows of the run's current segment: those after its ``RunRedriven`` row."""
    if not ctx.segment_seq:
        return rows
    for k, row in enumerate(rows):
        if row.seq == ctx.segment_seq:
            return rows[k + 1 :]
    return rows  # pragma: no cover - the context was read from these rows


@dataclass
class TaskPast:
    """What one task did in the run so far, as the log says (``fold_past``)."""

    #: Its state at the end of the last segment: succeeded, failed, …, or one of UNFINISHED.
    state: str = "waiting"
    reason: str = ""
    #: Attempts it made in every segment: the next one is numbered after them.
    attempts: int = 0
    live: set[str] = field(default_factory=set)
    #: Committed checkpoints not pruned or found corrupt, and the highest seq ever used.
    checkpoints: set[int] = field(default_factory=set)
    top_seq: int = 0


def fold_past(rows: Iterable[Row]) -> tuple[dict[str, TaskPast], str]:
    """Every task's past, and the state the run ended in (``stopped`` if it did not)."""
    past: dict[str, TaskPast] = {}
    final = "stopped"

    def of(task_id: str) -> TaskPast:
        found = past.get(task_id)
        if found is None:
            found = past[task_id] = TaskPast()
        return found

    for row in rows:
        kind, d = row.kind, row.data
        if kind == REDRIVEN:
            final = "stopped"
            for p in past.values():
                p.state, p.reason, p.live = "waiting", "", set()
        elif kind == "LaunchAttempt":
            p = of(d["task_id"])
            p.attempts = max(p.attempts, int(d["number"]))
            p.state = "running"
            p.live.add(d["attempt_id"])
        elif kind == "AttemptEnded":
            of(d["task_id"]).live.discard(d["attempt_id"])
        elif kind in ("TaskReady", "TaskRetrying", "TaskEnded"):
            p = of(d["task_id"])
            p.state = d.get("state", "ready") if kind == "TaskEnded" else "ready"
            if kind == "TaskRetrying" and d.get("delay_s", 0) > 0:
                p.state = "backoff"
            p.reason = d.get("reason", "")
        elif kind == "RunFinished":
            final = d["state"]
        else:
            _fold_checkpoint(of, kind, d)
    return past, final


def _fold_checkpoint(of: Any, kind: str, d: dict[str, Any]) -> None:
    if kind == "CheckpointCommitted":
        p = of(d["attempt_id"].rsplit("/", 1)[0])
        p.checkpoints.add(int(d["seq"]))
        p.top_seq = max(p.top_seq, int(d["seq"]))
    elif kind == "PruneCheckpoints":
        p = of(d["task_id"])
        p.checkpoints &= set(d.get("keep") or ())
    elif kind == "CheckpointCorrupt":
        p = of(d["task_id"])
        p.checkpoints.discard(int(d["seq"]))
        p.top_seq = max(p.top_seq, int(d["seq"]))


def carried(past: dict[str, TaskPast], unchanged: set[str], reruns: Iterable[str]) -> list[Any]:
    """``RunStarted.carried`` for the tasks that run again: attempts and checkpoints go on
    after the earlier ones; only a task whose definition did not change restores its own."""
    out: list[Any] = []
    for task_id in reruns:
        p = past.get(task_id)
        if p is None or not (p.attempts or p.top_seq):
            continue
        seqs = sorted(p.checkpoints) if task_id in unchanged else []
        out.append([task_id, p.attempts, seqs, p.top_seq])
    return out
