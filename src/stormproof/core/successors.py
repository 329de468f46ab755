"""Successors: a ready task queued behind a running attempt, to start the moment it ends.

Rules (``RunOptions.successors``):

1. A ready task that fits in no free capacity may be queued behind a live
   single-node attempt on an uninterruptible on-demand instance whose
   reservation is at least its need. It holds no capacity (``Attempt.holds`` is
   false) until its predecessor ends; then, in the same ``handle``, it takes its
   predecessor's place.
2. If it cannot (the instance is going, it was killed, its predecessor never
   held a place), it ends ``dropped`` and its task is ready again at no cost to
   any budget. Only the executor says a queued successor ended without starting
   (``AttemptDropped``), except when its instance is lost, where the core ends
   it itself, as it ends everything else there.
3. More than one may queue behind an attempt (up to ``successors``) only while
   attempts run shorter than ``successor_patience_s`` (a moving average of the
   run times of attempts that held a place): a deep queue hides the round trip
   for tasks that last milliseconds, and would only hold ready tasks back behind
   long ones.
4. Checkpointed and multi-node tasks never queue: a checkpoint's restore runs in
   the orchestrator before the submit, long before a successor could start. Nor
   does anything queue on a delegated pool: a host is an attempt placed on one
   instance, and a launch there names none (the batch system picks the node).
5. A queued successor that could run on free capacity now is withdrawn once its
   predecessor has held the place for ``successor_patience_s``.

``_hosts`` are the live attempts that may take a successor now (no successor
yet, shallow enough), oldest first; ``_queued`` counts the live attempts that
hold no place; ``_steady`` are the pools where successors may queue.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from stormproof.core import fleet, placement
from stormproof.core.decisions import Decision, KillAttempt, StartTimer, WithdrawAttempt
from stormproof.core.events import Event
from stormproof.core.states import AttemptState

if TYPE_CHECKING:
    from stormproof.core.attempt import Attempt
    from stormproof.core.capacity import Instance
    from stormproof.core.machine import Workflow


def _can_host(wf: Workflow, att: Attempt) -> bool:
    """Whether a successor may ever queue behind ``att`` (its pool, its shape)."""
    return len(att.instances) == 1 and att.pool in wf._steady


def _depth(wf: Workflow, att: Attempt) -> int:
    """How many queued attempts stand between ``att`` and the one holding the place."""
    depth = 0
    while not att.holds:
        pred = wf.attempts.get(att.after)
        if pred is None:
            return wf.options.successors  # orphaned: it will never take a place
        att = pred
        depth += 1
    return depth


def find_host(wf: Workflow, i: int) -> Attempt | None:
    """A live attempt task ``i`` may queue behind, or None (rules 1 and 4)."""
    task = wf.tasks[i]
    if task.nodes != 1 or task.checkpoint_enabled:
        return None
    need = placement.need(wf, i)
    if not placement.markets(wf, i)[1]:
        return None  # may not use on-demand now; the only pools successors queue on
    for host in wf._hosts.values():
        if host.kill_reason is not None or not need.fits_in(host.need):
            continue
        if not fleet.pool_allows(wf, host.pool, task.kind):
            continue
        if not wf.capacity.instances[host.instances[0]].alive:
            continue
        return host
    return None


def chain(wf: Workflow, att: Attempt) -> list[Attempt]:
    """The successors queued behind ``att``, nearest first."""
    queued: list[Attempt] = []
    while att.successor is not None:
        nxt = wf.attempts.get(att.successor)
        if nxt is None:
            break
        queued.append(nxt)
        att = nxt
    return queued


def _depth_limit(wf: Workflow) -> int:
    """How many successors may queue behind one place now (rule 3)."""
    deep = wf._typical_run_s < wf.options.successor_patience_s
    return wf.options.successors if deep else min(1, wf.options.successors)


def offer(wf: Workflow, att: Attempt) -> None:
    """Let successors queue behind ``att`` if it may take one."""
    if (
        att.successor is None
        and att.kill_reason is None
        and _can_host(wf, att)
        and _depth(wf, att) < _depth_limit(wf)
    ):
        wf._hosts[att.id] = att
        wf._changed = True


def unlink(wf: Workflow, att: Attempt) -> None:
    """A queued successor ended: its predecessor may take another."""
    pred = wf.attempts.get(att.after)
    if pred is not None and pred.successor == att.id:
        pred.successor = None
        offer(wf, pred)


def note_run_time(wf: Workflow, seconds: float) -> None:
    last = wf._typical_run_s
    wf._typical_run_s = seconds if last == math.inf else 0.75 * last + 0.25 * seconds


def hand_over(wf: Workflow, att: Attempt, event: Event, out: list[Decision]) -> None:
    """``att`` ended: its successor takes its place, or is dropped if it cannot."""
    nxt = wf.attempts.get(att.successor or "")
    att.successor = None
    if nxt is None:
        return
    inst = wf.capacity.instances[nxt.instances[0]]
    if att.holds and nxt.kill_reason in (None, "withdrawn") and inst.alive:
        nxt.holds = True
        wf._queued -= 1
        nxt.launched_at = event.at  # billed from when it holds the place
        wf.capacity.take(nxt.id, nxt.need, nxt.instances)
        tail = [nxt, *chain(wf, nxt)][-1]
        offer(wf, tail)
        return
    drop_queued(wf, [nxt, *chain(wf, nxt)], f"{att.id} ended without a place to pass on", out)


def withdraw_stuck(wf: Workflow, out: list[Decision]) -> None:
    """Queued successors that could run on free capacity now, behind a predecessor that
    has held its place for ``successor_patience_s``, are withdrawn: a long attempt must
    not keep a task waiting while a place stands free. The executor drops one that has
    not started (``AttemptDropped``: ready again, placed afresh) and ignores the request
    for one that has. Shorter waits are left alone (that churn would cost more than
    it saves); a timer looks again once the patience of the oldest is over.
    """
    limit = wf.options.max_parallel
    if limit is not None and len(wf.attempts) - wf._queued >= limit:
        return  # no place is free: max_parallel holds them all
    patience = wf.options.successor_patience_s
    recheck = math.inf
    for att in list(wf.attempts.values()):
        if att.holds or att.kill_reason is not None or att.state is not AttemptState.PLACED:
            continue
        pred = wf.attempts.get(att.after)
        if pred is None or not pred.holds:
            continue
        if not _fits_free(wf, att):
            continue
        since = pred.started_at if pred.started_at is not None else pred.launched_at
        if wf.now - since < patience:
            recheck = min(recheck, since + patience)
            continue
        att.kill_reason = "withdrawn"
        wf._hosts.pop(att.id, None)
        why = f"a place is free and {pred.id} has held it for {wf.now - since:.0f}s"
        out.append(WithdrawAttempt(att.id, why))
    if recheck < wf.timers.get("withdraw", math.inf):
        wf.timers["withdraw"] = recheck
        out.append(StartTimer("withdraw", recheck, "look again at queued successors"))


def on_withdraw_due(wf: Workflow, key: str, event: Event, out: list[Decision]) -> None:
    """``withdraw``: a queued successor's patience is over: look again."""
    wf._changed = True


def _fits_free(wf: Workflow, att: Attempt) -> bool:
    """Whether free capacity of a pool the task may use now could hold it."""
    spot, on_demand, _ = placement.markets(wf, att.task)
    return placement.free_placement(wf, att.task, att.need, spot, on_demand) is not None


def kill_successors(wf: Workflow, inst: Instance, why: str, out: list[Decision]) -> None:
    """The instance is going: nothing queued on it may start (they end ``dropped``)."""
    for aid in sorted(inst.attempts):
        att = wf.attempts.get(aid)
        if att is None:
            continue
        drop_queued(wf, chain(wf, att), why, out)
        wf._hosts.pop(att.id, None)


def drop_queued(wf: Workflow, queued: list[Attempt], why: str, out: list[Decision]) -> None:
    """Queued successors that must never start: killed, to end ``dropped``."""
    for att in queued:
        wf._hosts.pop(att.id, None)
        if att.kill_reason in (None, "withdrawn"):
            att.kill_reason = "dropped"
            out.append(KillAttempt(att.id, 0.0, why))


def check_queued(wf: Workflow, att: Attempt) -> None:
    """Invariant of a queued successor: behind a live attempt at least its size, within the
    depth, on a pool where successors may queue (``Workflow.validate`` asks)."""
    if att.kill_reason is not None:
        return  # being dropped: its predecessor may be gone already
    pred = wf.attempts.get(att.after)
    if pred is None or pred.successor != att.id:
        raise AssertionError(f"{att.id} is queued behind {att.after!r}, which is not live")
    if pred.instances != att.instances or not att.need.fits_in(pred.need):
        raise AssertionError(f"{att.id} does not fit the place of {pred.id}")
    if _depth(wf, att) > wf.options.successors or wf.tasks[att.task].nodes != 1:
        raise AssertionError(f"{att.id} is queued deeper than {wf.options.successors}")
    if att.pool not in wf._steady:
        raise AssertionError(f"{att.id} is queued on {att.pool}, which may be interrupted")
