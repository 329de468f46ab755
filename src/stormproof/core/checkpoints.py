"""Checkpoints, and the timers that run alongside an attempt: its timeout and its interval.

Rules:

1. A started attempt arms two timers, both named after it: ``timeout:<attempt>``
   (the task's ``timeout``) and ``checkpoint:<attempt>`` (the task's
   ``checkpoint_interval``, when it checkpoints). Both are dropped when the
   attempt ends (``outcomes.end_attempt``), so a timer that fires finds its
   attempt live or does nothing.
2. A timeout asks for a kill with the task's grace (``kill_reason`` "timeout":
   the attempt ends ``Task.Timeout``); an interval asks for a checkpoint and
   arms the next one. Neither acts on an attempt already being killed.
3. Committed checkpoints are kept per task as seqs, oldest first; a seq seen
   corrupt is never taken back. Past ``keep_checkpoints`` the oldest are pruned
   (``PruneCheckpoints`` names those kept). A new attempt restores the newest
   first (``placement.launch`` hands them over, newest first).
4. A new checkpoint's seq comes after every seq ever seen for the task, corrupt
   ones included, so no seq is ever written twice — before a redrive too
   (``RunStarted.carried``: the checkpoints a task carries over, and its highest seq).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stormproof.core import fleet
from stormproof.core.decisions import (
    Decision,
    KillAttempt,
    PruneCheckpoints,
    RequestCheckpoint,
    StartTimer,
)
from stormproof.core.events import (
    AttemptStarted,
    CheckpointCommitted,
    CheckpointCorrupt,
    CheckpointRestored,
    Event,
    RunStarted,
)
from stormproof.core.states import AttemptState

if TYPE_CHECKING:
    from stormproof.core.attempt import Attempt
    from stormproof.core.machine import Workflow

_PLACED, _ATTEMPT_RUNNING = AttemptState.PLACED, AttemptState.RUNNING


def on_started(wf: Workflow, event: AttemptStarted, out: list[Decision]) -> None:
    att = wf.attempts.get(event.attempt_id)
    if att is None:
        return  # news of an attempt that already ended
    if event.nodes and not att.instances and wf._delegated and att.pool in wf._delegated:
        fleet.learn_nodes(wf, att, event.nodes, out)  # where the batch system put it
    if att.state is not _PLACED:
        return  # adopted again after a restart
    att.state = _ATTEMPT_RUNNING
    att.started_at = event.at
    if att.kill_reason == "withdrawn":
        att.kill_reason = None  # it started before the withdrawal reached the executor
    task = wf.tasks[att.task]
    if task.checkpoint_enabled and task.checkpoint_interval_s:
        arm_checkpoint_timer(wf, att, event.at + task.checkpoint_interval_s, out)
    if task.timeout_s is not None:
        timer = f"timeout:{att.id}"
        fire_at = event.at + task.timeout_s
        wf.timers[timer] = fire_at
        out.append(StartTimer(timer, fire_at, f"timeout {task.timeout_s:g}s of {att.id}"))


def on_timeout(wf: Workflow, key: str, event: Event, out: list[Decision]) -> None:
    """``timeout:<attempt>`` fired: kill it with the task's grace (it ends ``Task.Timeout``)."""
    att = wf.attempts.get(key)
    if att is not None and att.kill_reason is None:
        att.kill_reason = "timeout"
        grace = wf.tasks[att.task].kill_grace_s
        out.append(KillAttempt(att.id, grace, "timeout reached"))


def on_interval(wf: Workflow, key: str, event: Event, out: list[Decision]) -> None:
    """``checkpoint:<attempt>`` fired: ask for a checkpoint, and again after the interval."""
    att = wf.attempts.get(key)
    if att is not None and att.kill_reason is None:
        task = wf.tasks[att.task]
        out.append(RequestCheckpoint(att.id, _every(wf, att.task)))
        arm_checkpoint_timer(wf, att, event.at + (task.checkpoint_interval_s or 0.0), out)


def arm_checkpoint_timer(wf: Workflow, att: Attempt, fire_at: float, out: list[Decision]) -> None:
    timer = "checkpoint:" + att.id
    wf.timers[timer] = fire_at
    out.append(StartTimer(timer, fire_at, "checkpoint interval"))  # whose: the timer's id


def _every(wf: Workflow, i: int) -> str:
    """Why task ``i``'s checkpoint is asked for (formatted once per task, not per ask)."""
    why = wf._every_why.get(i)
    if why is None:
        why = wf._every_why[i] = f"every {wf.tasks[i].checkpoint_interval_s:g}s"
    return why


def on_restored(wf: Workflow, event: CheckpointRestored, out: list[Decision]) -> None:
    att = wf.attempts.get(event.attempt_id)
    if att is not None and event.seq:
        att.restored = True


def on_committed(wf: Workflow, event: CheckpointCommitted, out: list[Decision]) -> None:
    live = wf.attempts.get(event.attempt_id)
    if live is not None:
        live.last_commit_at = event.at
    task_id = event.attempt_id.rsplit("/", 1)[0]
    i = wf.index.get(task_id)
    if i is None:
        return
    seqs = wf.checkpoints.setdefault(i, [])
    if event.seq in seqs or (wf.corrupt and event.seq in wf.corrupt.get(i, ())):
        return
    seqs.append(event.seq)
    if len(seqs) > 1 and seqs[-2] > event.seq:
        seqs.sort()
    keep = wf.tasks[i].keep_checkpoints
    if keep > 0 and len(seqs) > keep:
        kept = tuple(seqs[-keep:])
        del seqs[:-keep]
        out.append(PruneCheckpoints(task_id, kept, f"keep the last {keep}"))


def on_corrupt(wf: Workflow, event: CheckpointCorrupt, out: list[Decision]) -> None:
    i = wf.index.get(event.task_id)
    if i is None:
        return
    wf.corrupt.setdefault(i, set()).add(event.seq)
    seqs = wf.checkpoints.get(i, [])
    if event.seq in seqs:
        seqs.remove(event.seq)


def carry(wf: Workflow, event: RunStarted) -> None:
    """What tasks that ran before a redrive carry over: committed checkpoints to restore,
    and the highest seq they used (rule 4)."""
    for task_id, _made, seqs, top in event.carried:
        i = wf.index.get(task_id)
        if i is None:
            continue
        if seqs and wf.tasks[i].checkpoint_enabled:
            wf.checkpoints[i] = sorted(seqs)
        if top:
            wf._seq_floor[i] = top


def next_seq(wf: Workflow, i: int) -> int:
    """The seq the next checkpoint of task ``i`` gets: after every seq ever seen (rule 4)."""
    seqs = wf.checkpoints.get(i)
    top = seqs[-1] if seqs else 0  # kept sorted
    corrupt = wf.corrupt.get(i)
    if corrupt:
        top = max(top, max(corrupt))
    if wf._seq_floor:
        top = max(top, wf._seq_floor.get(i, 0))
    return top + 1
