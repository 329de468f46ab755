"""How attempts end, what that does to their task, and what the work cost.

Rules:

1. An attempt's end is named by what the backend reported and why the core
   killed it (``kill_reason``): exit 0 succeeds; a kill for a notice is
   ``Capacity.Interrupted``; a timeout ``Task.Timeout``; out of memory
   ``Task.OutOfMemory``; a kill for a cancel or a failing run ends the task
   cancelled; any other exit is ``Task.Failed``. ``AttemptLost`` is
   ``Node.Lost``, ``AttemptPreempted`` ``Capacity.Interrupted``. A preemption
   is a fault of its pool (unless a notice already counted it); so is a loss on
   a delegated pool (the batch system lost the node: NODE_FAIL), while on a
   modelled pool the instance's own loss is what counts (``fleet``).
2. Two budgets: the provider's errors (``PROVIDER_ERRORS``) draw on the task's
   ``max_interruptions`` and are retried at once; the task's own errors draw on
   the first matching retrier, after its backoff (jitter from the run's seed).
   An exhausted budget fails the task; so does memory escalated past every pool.
3. A failed task fails the run (``on_failure: fail`` kills what runs, ``finish``
   lets it end) or, with ``continue``, skips only its descendants. Nothing new
   starts while the run fails or is cancelled; unstarted tasks end skipped or
   cancelled.
4. A queued successor that ends without having run is ``dropped``: its task is
   ready again at no cost to any budget.
5. A run may start with tasks *kept*: they succeeded before a redrive, or in an earlier
   run whose outputs it reuses (``RunStarted.kept``). They end succeeded at once, without
   an attempt, and count for their children like any success; their parents must be kept
   too. Tasks *carried* over a redrive number their attempts after those they made before.
6. Every attempt that held a place is billed per second (rounded up) at its
   price (``placement`` rule 6) from its launch, or on a delegated pool from
   its start (a job waiting in the batch system's queue holds nothing); an
   interruption wastes the work since the last commit, a restore the time it
   took (on a delegated pool the restore precedes the job: not billed).
   Breakers hear the outcome (a probe's success closes its pool's; a task's own
   errors count on its type's breaker).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from stormproof.core import fleet, placement, rng, successors
from stormproof.core.attempt import (
    CAPACITY_INTERRUPTED,
    NODE_LOST,
    PROVIDER_ERRORS,
    TASK_ERRORS,
    TASK_FAILED,
    TASK_OUT_OF_MEMORY,
    TASK_TIMEOUT,
    Attempt,
    Cost,
)
from stormproof.core.capacity import InstanceState
from stormproof.core.decisions import (
    AttemptEnded,
    Decision,
    KillAttempt,
    StartTimer,
    TaskEnded,
    TaskRetrying,
)
from stormproof.core.defs import OnFailure, TaskDef
from stormproof.core.events import (
    AttemptDropped,
    AttemptExited,
    AttemptLost,
    AttemptPreempted,
    AttemptSubmitFailed,
    Event,
    RunStarted,
)
from stormproof.core.states import AttemptState, RunMode, TaskState

if TYPE_CHECKING:
    from stormproof.core.machine import Workflow

# Enum members the hot paths test, bound once (see ``core.machine``).
_WAITING, _SUCCEEDED = TaskState.WAITING, TaskState.SUCCEEDED
_ATTEMPT_SUCCEEDED = AttemptState.SUCCEEDED
_TAKEN_AWAY = frozenset({AttemptState.INTERRUPTED, AttemptState.LOST})
#: An attempt state's name, without ``Enum.value`` (a Python-level property) per attempt.
_STATE_NAMES = {s: s.value for s in AttemptState}
_ERROR_STATES = {
    TASK_TIMEOUT: AttemptState.TIMED_OUT,
    NODE_LOST: AttemptState.LOST,
    CAPACITY_INTERRUPTED: AttemptState.INTERRUPTED,
}


# ---------------------------------------------------------------------- what the backend says
def on_exit(wf: Workflow, event: AttemptExited, out: list[Decision]) -> None:
    att = wf.attempts.get(event.attempt_id)
    if att is None:
        return
    code = event.exit_code
    if att.kill_reason == "dropped" and code != 0:
        drop(wf, att, event, out, f"killed as a queued successor (exit {code})")
        return
    if code == 0:
        end_attempt(wf, att, _ATTEMPT_SUCCEEDED, None, code, None, event, out)
        succeed(wf, att.task, event, out)
    elif att.kill_reason == "interrupted":
        failed_attempt(wf, att, CAPACITY_INTERRUPTED, code, event, out)
    elif event.out_of_memory and att.kill_reason is None:
        failed_attempt(wf, att, TASK_OUT_OF_MEMORY, code, event, out)
    elif att.kill_reason == "timeout" or (event.timed_out and att.kill_reason is None):
        failed_attempt(wf, att, TASK_TIMEOUT, code, event, out)
    elif att.kill_reason in ("cancel", "failing"):
        end_cancelled(wf, att, code, event, out, att.kill_reason)
    else:
        failed_attempt(wf, att, TASK_FAILED, code, event, out)


def on_lost(wf: Workflow, event: AttemptLost, out: list[Decision]) -> None:
    att = wf.attempts.get(event.attempt_id)
    if att is None:
        return
    if att.kill_reason in ("cancel", "failing"):
        end_cancelled(wf, att, None, event, out, att.kill_reason)
        return
    if att.kill_reason == "dropped":
        drop(wf, att, event, out, f"lost as a queued successor: {event.reason}")
        return
    error = CAPACITY_INTERRUPTED if att.kill_reason == "interrupted" else NODE_LOST
    if error is NODE_LOST and att.pool in wf._delegated:
        fleet.fault(wf, att.pool, event.at, f"loss of {att.id}", out)
    failed_attempt(wf, att, error, None, event, out, event.reason)


def on_preempted(wf: Workflow, event: AttemptPreempted, out: list[Decision]) -> None:
    """The batch system reclaimed the attempt: an interruption, and a fault of its pool
    (unless a notice already counted it: then the kill was ours, on the provider's word)."""
    att = wf.attempts.get(event.attempt_id)
    if att is None:
        return
    if att.kill_reason in ("cancel", "failing"):
        end_cancelled(wf, att, None, event, out, att.kill_reason)
        return
    if att.kill_reason == "dropped":
        drop(wf, att, event, out, f"preempted as a queued successor: {event.reason}")
        return
    if att.kill_reason != "interrupted":
        fleet.fault(wf, att.pool, event.at, f"preemption of {att.id}", out)
    failed_attempt(wf, att, CAPACITY_INTERRUPTED, None, event, out, event.reason)


def on_dropped(wf: Workflow, event: AttemptDropped, out: list[Decision]) -> None:
    att = wf.attempts.get(event.attempt_id)
    if att is None:
        return
    if att.kill_reason in ("cancel", "failing"):
        why = f"dropped before it started: {event.reason}"
        end_cancelled(wf, att, None, event, out, att.kill_reason, why)
        return
    drop(wf, att, event, out, event.reason or "dropped before it started")


def on_submit_failed(wf: Workflow, event: AttemptSubmitFailed, out: list[Decision]) -> None:
    att = wf.attempts.get(event.attempt_id)
    if att is not None:
        failed_attempt(wf, att, TASK_FAILED, None, event, out, event.message)


def on_retry_due(wf: Workflow, key: str, event: Event, out: list[Decision]) -> None:
    """``retry:<task>:<attempt number>``: the backoff is over."""
    i = wf.index[key.rsplit(":", 1)[0]]
    if wf.state[i] is TaskState.BACKOFF:
        placement.make_ready(wf, i, event, out, "backoff ended")


# ---------------------------------------------------------------------- tasks
def keep(wf: Workflow, event: RunStarted, out: list[Decision]) -> None:
    """End the kept tasks succeeded before anything is placed (rule 5); the caller makes
    ready what then waits on nothing."""
    index, state, waiting_on = wf.index, wf.state, wf.waiting_on
    whys = event.kept_why
    for k, task_id in enumerate(event.kept):
        i = index[task_id]
        task = wf.tasks[i]
        for p in task.parents:
            if state[p] is not _SUCCEEDED:  # the caller's bug, with the evidence
                raise AssertionError(
                    f"task {task_id!r} is kept but its parent {wf.tasks[p].id!r} is not "
                    f"(kept: {', '.join(event.kept)})"
                )
        wf._move(i, _SUCCEEDED, event)
        for c in task.children:
            waiting_on[c] -= 1
        if wf._narrate:
            out.append(TaskEnded(task_id, "succeeded", None, whys[k] if k < len(whys) else "kept"))
    for task_id, made, _seqs, _top in event.carried:
        if task_id in index:
            wf.attempts_made[index[task_id]] = made


def succeed(wf: Workflow, i: int, event: Event, out: list[Decision]) -> None:
    wf._move(i, _SUCCEEDED, event)
    task = wf.tasks[i]
    narrate = wf._narrate
    if narrate:
        out.append(TaskEnded(task.id, "succeeded", None, f"attempt {wf.attempts_made[i]}"))
    waiting_on, state = wf.waiting_on, wf.state
    for c in task.children:
        left = waiting_on[c] = waiting_on[c] - 1
        if left == 0 and state[c] is _WAITING:
            why = f"parents done (last: {task.id})" if narrate else ""
            placement.make_ready(wf, c, event, out, why)


def failed_attempt(
    wf: Workflow,
    att: Attempt,
    error: str,
    code: int | None,
    event: Event,
    out: list[Decision],
    detail: str = "",
) -> None:
    """An attempt ended badly: retry by the right budget, or fail the task for good."""
    i = att.task
    task = wf.tasks[i]
    state = _ERROR_STATES.get(error, AttemptState.FAILED)
    if error in PROVIDER_ERRORS:
        wf.interruptions[i] += 1
        budget = "interruptions"
        allowed = wf.interruptions[i] <= task.max_interruptions
        delay, retrier = 0.0, None
        reason = f"{wf.interruptions[i]}/{task.max_interruptions} interruptions"
    else:
        budget = "retry"
        rule = _next_retry_rule(wf, i, error)
        allowed = rule is not None
        delay, reason = 0.0, "no retrier left for " + error
        retrier = None if rule is None else rule + 1
        if rule is not None:
            used = wf.retries_used[i]
            used[rule] += 1
            r = task.retry[rule]
            delay = r.delay_s(used[rule], rng.unit(wf.options.seed, i, att.number))
            reason = f"retrier {rule + 1}: retry {used[rule]}/{r.max_attempts}"
    why = f"{error}" + (f" (exit {code})" if code is not None else "")
    why += f": {detail}" if detail else ""
    end_attempt(wf, att, state, error, code, budget, event, out, why)
    if allowed and error == TASK_OUT_OF_MEMORY and task.memory_escalation > 1:
        scale = wf.memory_scale.get(i, 1.0) * task.memory_escalation
        wf.memory_scale[i] = scale
        need = placement.need(wf, i)
        reason += f"; memory escalated to {need.memory_mib} MiB"
        if not wf.capacity.could_ever_fit(need, task.nodes, task.spot_enabled):
            allowed = False
            reason = f"escalated memory {need.memory_mib} MiB fits no pool"
    if allowed and wf.mode in (RunMode.RUNNING, RunMode.STOPPING):
        out.append(TaskRetrying(task.id, error, delay, budget, retrier, reason))
        if delay > 0:
            wf._move(i, TaskState.BACKOFF, event)
            timer = f"retry:{task.id}:{att.number}"
            wf.timers[timer] = wf.now + delay
            out.append(StartTimer(timer, wf.now + delay, f"retry {task.id} after {delay:g}s"))
        else:
            placement.make_ready(wf, i, event, out, f"retry after {error}")
        return
    fail_task(wf, i, error, event, out, reason if not allowed else "the workflow is failing")


def _next_retry_rule(wf: Workflow, i: int, error: str) -> int | None:
    rules = wf.tasks[i].retry
    used = wf.retries_used.setdefault(i, [0] * len(rules))
    for k, rule in enumerate(rules):
        if rule.matches(error) and used[k] < rule.max_attempts:
            return k
    return None


def fail_task(
    wf: Workflow, i: int, error: str, event: Event, out: list[Decision], why: str
) -> None:
    wf._move(i, TaskState.FAILED, event)
    wf.any_failed = True
    task = wf.tasks[i]
    if wf._narrate:
        out.append(TaskEnded(task.id, "failed", error, why))
    if task.on_failure is OnFailure.CONTINUE:
        skip_descendants(wf, i, event, out)
    else:
        _start_failing(wf, task, event, out)


def _start_failing(wf: Workflow, task: TaskDef, event: Event, out: list[Decision]) -> None:
    if wf.mode in (RunMode.FAILING, RunMode.CANCELLING):
        return
    wf.mode = RunMode.FAILING
    why = f"workflow failing: task {task.id} failed"
    if task.on_failure is OnFailure.FAIL:
        kill_live(wf, "failing", why, out)
    else:  # finish: what runs carries on, but nothing new starts
        for att in list(wf.attempts.values()):
            if not att.holds and att.kill_reason in (None, "withdrawn"):
                att.kill_reason = "failing"
                out.append(KillAttempt(att.id, 0.0, why))
    for j, st in enumerate(wf.state):
        if st in (TaskState.WAITING, TaskState.READY, TaskState.BACKOFF):
            end_unstarted(wf, j, TaskState.SKIPPED, event, out, why)


def on_cancel(wf: Workflow, event: Event, out: list[Decision]) -> None:
    if wf.mode in (RunMode.CANCELLING, RunMode.FINISHED):
        return
    wf.mode = RunMode.CANCELLING
    kill_live(wf, "cancel", "the run was cancelled", out)
    for i, st in enumerate(wf.state):
        if st in (TaskState.WAITING, TaskState.READY, TaskState.BACKOFF):
            end_unstarted(wf, i, TaskState.CANCELLED, event, out, "the run was cancelled")


def skip_descendants(wf: Workflow, i: int, event: Event, out: list[Decision]) -> None:
    stack = list(wf.tasks[i].children)
    why = f"upstream task {wf.tasks[i].id} failed"
    while stack:
        c = stack.pop()
        if wf.state[c] is TaskState.WAITING:
            end_unstarted(wf, c, TaskState.SKIPPED, event, out, why)
            stack.extend(wf.tasks[c].children)


def end_unstarted(
    wf: Workflow, i: int, new: TaskState, event: Event, out: list[Decision], why: str
) -> None:
    if wf.state[i] is TaskState.READY:
        wf._ready -= 1  # its heap entry goes stale and is dropped when seen
    elif wf.state[i] is TaskState.BACKOFF:
        wf.timers.pop(f"retry:{wf.tasks[i].id}:{wf.attempts_made[i]}", None)
    wf._move(i, new, event)
    if wf._narrate:
        out.append(TaskEnded(wf.tasks[i].id, new.value, None, why))


def kill_live(wf: Workflow, reason: str, why: str, out: list[Decision]) -> None:
    # Queued successors first, so that none starts as its predecessor dies of the kill.
    for att in sorted(wf.attempts.values(), key=lambda a: a.holds):
        if att.kill_reason in (None, "timeout", "withdrawn"):
            att.kill_reason = reason
            out.append(KillAttempt(att.id, wf.tasks[att.task].kill_grace_s, why))


# ---------------------------------------------------------------------- attempts
def end_cancelled(
    wf: Workflow,
    att: Attempt,
    code: int | None,
    event: Event,
    out: list[Decision],
    why: str,
    attempt_why: str = "",
) -> None:
    """An attempt killed because the run is cancelled or failing ends its task cancelled."""
    end_attempt(wf, att, AttemptState.CANCELLED, None, code, None, event, out, attempt_why)
    wf._move(att.task, TaskState.CANCELLED, event)
    if wf._narrate:
        out.append(TaskEnded(wf.tasks[att.task].id, "cancelled", None, why))


def drop(wf: Workflow, att: Attempt, event: Event, out: list[Decision], why: str) -> None:
    """A queued successor ends without having run: its task is ready again, no budget used."""
    end_attempt(wf, att, AttemptState.DROPPED, None, None, None, event, out, why)
    i = att.task
    if wf.mode in (RunMode.RUNNING, RunMode.STOPPING):
        placement.make_ready(wf, i, event, out, f"{att.id} dropped: {why}")
    else:  # cancelling or failing: nothing more starts
        wf._move(i, TaskState.CANCELLED, event)
        if wf._narrate:
            why = f"the run is {wf.mode.value}"
            out.append(TaskEnded(wf.tasks[i].id, "cancelled", None, why))


def end_attempt(
    wf: Workflow,
    att: Attempt,
    state: AttemptState,
    error: str | None,
    code: int | None,
    budget: str | None,
    event: Event,
    out: list[Decision],
    why: str = "",
) -> None:
    task = wf.tasks[att.task]
    del wf.attempts[att.id]
    del wf.current[att.task]
    # only the timers it can have (building a key costs as much as the lookup)
    if task.timeout_s is not None:
        wf.timers.pop(f"timeout:{att.id}", None)
    if task.checkpoint_enabled:
        wf.timers.pop(f"checkpoint:{att.id}", None)
    if wf._hosts:
        wf._hosts.pop(att.id, None)
    delegated = att.pool in wf._delegated if wf._delegated else False
    if delegated:
        wf.capacity.settled(att.pool, att.id, att.instances)
    elif att.holds:
        wf.capacity.release(att.id, att.need, att.instances)
        if wf.options.successors > 1 and att.pool in wf._steady:
            began = att.started_at if att.started_at is not None else att.launched_at
            successors.note_run_time(wf, event.at - began)
    else:
        wf._queued -= 1
        successors.unlink(wf, att)
    if att.successor is not None:
        successors.hand_over(wf, att, event, out)
    wf._changed = True
    cost = charge(wf, att, state, event.at, delegated) if att.holds else Cost()
    began = att.launched_at
    if delegated:
        began = att.started_at if att.started_at is not None else event.at
    out.append(
        AttemptEnded(
            att.id,
            task.id,
            _STATE_NAMES[state],
            error,
            code,
            budget,
            why,
            att.pool,
            round(max(0.0, event.at - began), 3),
            cost.spent,
            cost.on_demand_equivalent,
            round(cost.wasted_s, 3),
            cost.wasted,
        )
    )
    ok = state is _ATTEMPT_SUCCEEDED
    breaker = wf.breakers.get(att.pool)
    if breaker is not None and breaker.probe is not None and error not in PROVIDER_ERRORS:
        fleet.breaker_moved(wf, breaker, breaker.ended(event.at, att.id, ok), out)
    typed = fleet.type_breaker(wf, att.pool, task.kind)
    if typed is not None and error not in PROVIDER_ERRORS:
        if error in TASK_ERRORS:
            moved = typed.fault(event.at, f"{error} of {att.id}")
        else:
            moved = typed.ended(event.at, att.id, ok)
        fleet.breaker_moved(wf, typed, moved, out)
    for iid in att.instances:
        inst = wf.capacity.instances[iid]
        if inst.retiring and not inst.attempts and inst.state is InstanceState.DRAINING:
            fleet.remove_instance(wf, inst, "scaled down: retired once idle", out)


def charge(
    wf: Workflow, att: Attempt, state: AttemptState, end: float, delegated: bool = False
) -> Cost:
    """Bill the attempt per second (rounded up) and split off what interruptions wasted."""
    began = att.launched_at
    wasted = 0.0
    if delegated:  # billed while it runs on a node, not while it waits in the queue
        began = att.started_at if att.started_at is not None else end
    elif att.restored and att.started_at is not None:
        wasted = att.started_at - att.launched_at  # restoring is the price of restarting
    seconds = float(math.ceil(max(0.0, end - began) - 1e-9))
    if state in _TAKEN_AWAY:
        since = att.last_commit_at if att.last_commit_at is not None else began
        wasted = end - since if att.last_commit_at is None else wasted + end - since
    wasted = min(seconds, max(0.0, wasted))
    rate = att.usd_per_h / 3600.0
    od = (seconds - wasted) * att.od_usd_per_h / 3600.0
    if wf._spot_pools.get(att.pool, False):
        cost = Cost(seconds * rate, od, wasted * rate, wasted, seconds, 0.0)
    else:
        cost = Cost(seconds * rate, od, wasted * rate, wasted, 0.0, seconds)
    wf.cost.add(cost)
    return cost
