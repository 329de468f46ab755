"""Placement: which ready task runs next, on which pool and instances, at what price.

Rules:

1. Readiness is incremental: a task becomes ready when its last parent succeeds
   (or its backoff ends) and waits in one heap per resource shape, highest upward
   rank first. A placement looks at the heads of the heaps only; a heap entry of
   a task that is no longer ready is stale and dropped when seen. Nothing
   rescans the DAG.
2. ``handle`` places only when something placement needs changed (``_changed``:
   capacity freed, a task ready, a breaker or the mode moved), and only while
   the run is running and the fleet's first answer is in (``fleet`` rule 1).
3. Pools are tried spot first (in the order of the run's ``spot_strategy``),
   then on-demand by price; a pool whose breaker is open is skipped. Whether a
   task may use spot, on-demand now, or must wait (a deadline policy) is
   ``markets``; fallback to on-demand after interruptions is ``on_demand_only``
   (unless no on-demand pool could ever hold the task: then it stays on spot).
4. Free capacity is taken first, for every waiting task; only then may a task
   queue behind a running attempt (``successors``). ``max_parallel`` counts the
   places held.
5. A task that no pool could ever hold, even empty, fails ``Capacity.Unavailable``
   once nothing runs; the others wait for capacity.
6. An attempt's price per hour is ``capacity.hourly_price``: its share of the
   instance (its largest dimension) at the pool's price, or its vCPUs at a price
   per vCPU-hour (``price_per``), times its nodes; what it would cost on the
   cheapest fitting on-demand pool is carried along, for the savings.
7. A delegated pool (a Slurm partition, a Batch queue) is tried in the same order,
   behind the same breakers, and takes a task while fewer than its ``max_jobs``
   attempts are outstanding there and its node shape could hold the task
   (``Capacity.find_in``): the launch names no instance, the batch system picks
   the node (``fleet`` rule 8). No successor ever queues there.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING

from stormproof.core import fleet, outcomes, successors
from stormproof.core.attempt import CAPACITY_UNAVAILABLE, Attempt
from stormproof.core.capacity import Placement, hourly_price
from stormproof.core.decisions import Decision, LaunchAttempt, StartTimer, TaskEnded, TaskReady
from stormproof.core.defs import Market, PoolDef, Resources, SpotPolicy
from stormproof.core.events import Event
from stormproof.core.policy import Choice, Situation, decide, wait_until
from stormproof.core.states import AttemptState, RunMode, TaskState

if TYPE_CHECKING:
    from stormproof.core.machine import Workflow

ShapeKey = tuple[float, int, int, int, bool]

_NO_FAULTS: dict[str, int] = {}
# Enum members the hot paths test, bound once (see ``core.machine``).
_READY, _RUNNING = TaskState.READY, TaskState.RUNNING
_PLACED = AttemptState.PLACED
_MODE_RUNNING = RunMode.RUNNING
_ON_DEMAND = Market.ON_DEMAND
_POLICY_ON_DEMAND = SpotPolicy.ON_DEMAND


def make_ready(wf: Workflow, i: int, event: Event, out: list[Decision], why: str) -> None:
    wf._move(i, _READY, event)
    task = wf.tasks[i]
    r = need(wf, i)
    key: ShapeKey = (r.vcpus, r.memory_mib, r.gpus, task.nodes, task.spot_enabled)
    heapq.heappush(wf._queues.setdefault(key, []), (-task.priority, i))
    wf._ready += 1
    wf._changed = True
    if wf._narrate:
        out.append(TaskReady(task.id, why))


def dispatch(wf: Workflow, event: Event, out: list[Decision]) -> None:
    """Place what is ready; ``handle`` calls it only when something placement needs changed."""
    if wf.mode is not _MODE_RUNNING:
        return
    if wf._fleet_pending and not fleet.fleet_answered(wf):
        return
    wf._changed = False
    limit = wf.options.max_parallel
    while wf._ready:
        # Queued successors run no sooner than a place frees: max_parallel counts places.
        free_ok = limit is None or len(wf.attempts) - wf._queued < limit
        if not (free_ok or wf._hosts) or not _place_best(wf, event, out, free_ok):
            break
    if wf._queued:
        successors.withdraw_stuck(wf, out)
    if wf._ready and not wf.attempts:
        # All capacity is free and still nothing fits: those tasks never will.
        _fail_unplaceable(wf, event, out)


def _place_best(wf: Workflow, event: Event, out: list[Decision], free_ok: bool = True) -> bool:
    """Launch the highest-ranked ready task that fits now; False if none fits.

    Free capacity first, for every task; only then a successor's place behind a
    running attempt (``successors.find_host``), never instead of free capacity.
    """
    queues, state = wf._queues, wf.state
    heads: list[tuple[float, int, ShapeKey]] = []
    emptied: list[ShapeKey] = []
    for key, heap in queues.items():
        while heap and state[heap[0][1]] is not _READY:
            heapq.heappop(heap)  # stale: the task was skipped or cancelled meanwhile
        if heap:
            top = heap[0]
            heads.append((top[0], top[1], key))
        else:
            emptied.append(key)
    for key in emptied:
        del queues[key]
    if len(heads) > 1:  # most workflows have one shape of task, so one queue
        heads.sort()
    if free_ok:
        for _, i, key in heads:
            placement = _find(wf, i, out)
            if placement is not None:
                heapq.heappop(queues[key])
                launch(wf, i, placement, event, out)
                return True
    if wf._hosts:
        for _, i, key in heads:
            host = successors.find_host(wf, i)
            if host is not None:
                heapq.heappop(queues[key])
                inst = wf.capacity.instances[host.instances[0]]
                launch(wf, i, Placement(inst.pool, (inst,)), event, out, host)
                return True
    return False


def need(wf: Workflow, i: int) -> Resources:
    """What one node of task ``i``'s next attempt asks for (memory escalated after OOM)."""
    r = wf.tasks[i].resources
    if not wf.memory_scale:
        return r
    scale = wf.memory_scale.get(i)
    return r if scale is None else Resources(r.vcpus, math.ceil(r.memory_mib * scale), r.gpus)


def on_demand_only(wf: Workflow, i: int) -> str | None:
    """Why task ``i`` may not use spot now (fallback, DESIGN §4), or None if it may."""
    task = wf.tasks[i]
    if not task.spot_enabled:
        return "spot_enabled is false"
    k = wf.options.fallback_after_interruptions
    if k is not None and wf.interruptions[i] >= k:
        why = f"interrupted {wf.interruptions[i]} times (fallback after {k})"
    elif wf.options.last_attempt_on_demand and wf.interruptions[i] >= task.max_interruptions:
        why = "the last attempt its interruption budget allows"
    else:
        return None
    if not wf.capacity.could_ever_fit(need(wf, i), task.nodes, False):
        return None  # no on-demand pool could ever hold it: spot is its only way to finish
    return why


def markets(wf: Workflow, i: int) -> tuple[bool, bool, float | None]:
    """May task ``i`` use spot now, on-demand now, and if not on-demand, from when.

    With a deadline, the run's ``SpotPolicy`` decides by the one rule of
    ``core.policy`` (the one ``bench/cant_be_late.py`` measures), for this task: work
    left is its rank (the critical path from it to the end), the job's whole work the
    workflow's critical path, and one interruption costs its ``at_risk``. Placement
    tries spot pools first, so the rule is asked twice: with spot free (spot allowed?)
    and without (on-demand now, or wait, and until when).
    """
    if on_demand_only(wf, i) is not None or not wf._has_spot:
        return False, True, None
    policy = wf.options.spot_policy
    deadline = wf.options.deadline_s
    if deadline is None:  # no deadline logic: spot if free, else on-demand at once
        return policy is not _POLICY_ON_DEMAND, True, None
    elapsed = wf.now - wf.run_start
    task = wf.tasks[i]
    situation = Situation(
        elapsed_s=elapsed,
        remaining_work_s=task.priority,
        remaining_time_s=deadline - elapsed,
        spot_available=True,
        market=Choice.IDLE,
        changeover_s=0.0,
        at_risk_s=task.at_risk_s,
        tick_s=0.0,
        compute_s=wf._critical_s,
        deadline_s=deadline,
        spot_streak_s=0.0,
    )
    spot = decide(policy, situation) is Choice.SPOT
    situation = situation._replace(spot_available=False)
    if decide(policy, situation) is Choice.ON_DEMAND:
        return spot, True, None
    od_from = wf.run_start + wait_until(policy, situation)
    if wf.now >= od_from:  # the rule's last moment to wait: on-demand from now on
        return spot, True, None
    return spot, False, od_from


def on_policy_due(wf: Workflow, key: str, event: Event, out: list[Decision]) -> None:
    """``policy:<task>``: a task waiting for spot may now use on-demand; look again."""
    wf._changed = True


def _find(wf: Workflow, i: int, out: list[Decision]) -> Placement | None:
    task = wf.tasks[i]
    spot, on_demand, wake_at = markets(wf, i)
    placement = free_placement(wf, i, need(wf, i), spot, on_demand)
    if placement is not None:
        return placement
    if wake_at is not None:
        timer = f"policy:{task.id}"
        if wf.timers.get(timer, math.inf) > wake_at:
            wf.timers[timer] = wake_at
            out.append(StartTimer(timer, wake_at, f"{task.id} may use on-demand"))
    return None


def free_placement(
    wf: Workflow, i: int, need: Resources, spot: bool, on_demand: bool
) -> Placement | None:
    """Free capacity for task ``i`` on the pools it may use, best pool first."""
    task = wf.tasks[i]
    faults = (
        {name: len(b.faults) for name, b in wf.breakers.items() if "/" not in name}
        if spot and wf._ranks_by_faults
        else _NO_FAULTS
    )
    for pool in wf.capacity.pool_order(spot, wf.options.spot_strategy, faults):
        if pool.market is _ON_DEMAND and not on_demand:
            break  # on-demand pools come last: nothing more to try
        if fleet.pool_allows(wf, pool.name, task.kind):
            placement = wf.capacity.find_in(pool, need, task.nodes)
            if placement is not None:
                return placement
    return None


def launch(
    wf: Workflow,
    i: int,
    placement: Placement,
    event: Event,
    out: list[Decision],
    host: Attempt | None = None,
) -> None:
    task = wf.tasks[i]
    pool = placement.pool
    chosen = placement.instances
    instances = (chosen[0].id,) if len(chosen) == 1 else tuple([x.id for x in chosen])
    att_need = need(wf, i)
    wf._ready -= 1
    wf._move(i, _RUNNING, event)
    number = wf.attempts_made[i] = wf.attempts_made[i] + 1
    usd_per_h, od_usd_per_h = _rates(wf, pool, att_need, task.nodes)
    att_id = f"{task.id}/{number}"
    # positional: the hot path of every placement (fields in declaration order)
    att = Attempt(att_id, i, number, instances, pool.name, att_need, _PLACED, None,
                  event.at, None, None, False, usd_per_h, od_usd_per_h)  # fmt: skip
    wf.attempts[att_id] = att
    wf.current[i] = att
    if host is None:
        if pool.delegated:  # the batch system picks the node: a job slot is all it takes
            wf.capacity.submitted(pool)
        else:
            wf.capacity.take(att_id, att_need, instances)
    else:
        att.after, att.holds = host.id, False
        host.successor = att_id
        wf._hosts.pop(host.id, None)
        wf._queued += 1
    if wf.options.successors:
        successors.offer(wf, att)
    wf.breakers[pool.name].placed(att_id)
    typed = fleet.type_breaker(wf, pool.name, task.kind)
    if typed is not None:
        typed.placed(att_id)
    why = "placed on " + ", ".join(instances) if instances else f"submitted to {pool.name}"
    if host is not None:
        why += f", to start when {host.id} ends"
    if pool.market is Market.ON_DEMAND and task.spot_enabled:
        forced = on_demand_only(wf, i)
        if forced is not None:
            why += f" (on-demand: {forced})"
    restore = tuple(reversed(wf.checkpoints.get(i, ()))) if task.checkpoint_enabled else ()
    out.append(
        LaunchAttempt(
            att_id,
            task.id,
            number,
            instances,
            pool.name,
            why,
            restore,
            att_need.memory_mib,
            wf._market_names[pool.name],
            usd_per_h,
            od_usd_per_h,
            att.after,
        )
    )


def _rates(wf: Workflow, pool: PoolDef, need: Resources, nodes: int) -> tuple[float, float]:
    """An attempt's price per hour on ``pool``, and on the cheapest on-demand pool that
    could hold it (what the same work would have cost without spot). Cached by shape:
    every placement asks, and a workflow has few shapes."""
    key = (pool.name, need.vcpus, need.memory_mib, need.gpus, nodes)
    rates = wf._rate_cache.get(key)
    if rates is None:
        usd_per_h = hourly_price(pool, need, nodes)
        rates = wf._rate_cache[key] = (usd_per_h, _on_demand_rate(wf, need, nodes, usd_per_h))
    return rates


def _on_demand_rate(wf: Workflow, need: Resources, nodes: int, fallback: float) -> float:
    """The attempt's price per hour on the cheapest on-demand pool that could hold it."""
    rates = [
        hourly_price(p, need, nodes)
        for p in wf.capacity.pools
        if p.market is Market.ON_DEMAND and need.fits_in(p.capacity)
    ]
    return min(rates, default=fallback)


def _fail_unplaceable(wf: Workflow, event: Event, out: list[Decision]) -> None:
    """Nothing runs, yet tasks wait: end those no pool could ever hold.

    The others wait for capacity: instances being launched, a breaker
    that will half-open, or a user who scales a pool up.
    """
    for key, heap in list(wf._queues.items()):
        waiting: list[tuple[float, int]] = []
        while heap:
            entry = heapq.heappop(heap)
            i = entry[1]
            if wf.state[i] is not TaskState.READY:
                continue
            task = wf.tasks[i]
            if wf.capacity.could_ever_fit(need(wf, i), task.nodes, task.spot_enabled):
                waiting.append(entry)
            else:
                wf._ready -= 1
                wf._move(i, TaskState.FAILED, event)
                wf.any_failed = True
                if wf._narrate:
                    why = "no pool can ever hold this task"
                    out.append(TaskEnded(wf.tasks[i].id, "failed", CAPACITY_UNAVAILABLE, why))
                outcomes.skip_descendants(wf, i, event, out)
        if waiting:
            heapq.heapify(waiting)
            wf._queues[key] = waiting
        else:
            del wf._queues[key]
