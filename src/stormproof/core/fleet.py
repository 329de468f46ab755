"""The fleet: instances coming and going, notices, losses, scaling, and the breakers' wiring.

Rules:

1. Every instance starts ``pending``; the fleet's initial ones are asked for when
   the run starts (``LaunchInstance`` each, like the recipe's Spot Fleet request),
   and placement waits until all of them are answered or the ``fleet`` timer
   fires, so the first wave spreads over the whole fleet.
2. A notice (the two-minute warning) drains its instance: what is queued there
   is dropped, what runs gets ``KillAttempt`` with the notice as grace and ends
   ``Capacity.Interrupted``; the instance is reclaimed when the grace is over.
3. A loss (no warning) ends what ran there at once: ``Node.Lost`` (or
   cancelled, if it was being cancelled anyway), and removes the instance.
4. Notices, losses and refused launches are faults of the pool's breaker, never
   of a task's retry budget. A refused launch is retried after
   ``launch_retry_s`` (the ``relaunch`` timer).
5. A pool is kept at its target (a fleet of type "maintain") except while its
   breaker is open, a relaunch is pending, or the run is finishing or cancelling.
6. Scaling down gives back what costs nothing to lose first (pending, then
   idle, newest first); a busy instance retires once its last attempt ends.
7. Breakers: one per pool (and one per pool and task type when
   ``per_task_type``); an open one arms its ``breaker`` timer to half-open, a
   closed one lets its pool be topped up again. Placement asks ``pool_allows``.
8. A delegated pool's nodes are the batch system's: nothing is launched,
   maintained, scaled or terminated there. The nodes attempts report
   (``AttemptStarted.nodes``) become its instances (``learn_nodes``); a notice
   or a loss naming one acts on the run's attempts there as on an instance's
   (rules 2 and 3) and is a fault of each pool those attempts ran in (the
   node's pool when none did). The node is ``gone`` once reclaimed or lost, and
   ``up`` again if the batch system runs another attempt there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stormproof.core import outcomes, successors
from stormproof.core.attempt import CAPACITY_UNAVAILABLE, NODE_LOST
from stormproof.core.breaker import Breaker, BreakerState, Transition
from stormproof.core.capacity import Instance, InstanceState
from stormproof.core.decisions import (
    BreakerChanged,
    Decision,
    InstanceChanged,
    KillAttempt,
    LaunchInstance,
    StartTimer,
    TerminateInstance,
)
from stormproof.core.events import (
    Event,
    FleetScaleRequested,
    InstanceLaunchFailed,
    InstanceLost,
    InstanceUp,
    InterruptionNotice,
)
from stormproof.core.states import RunMode

if TYPE_CHECKING:
    from stormproof.core.attempt import Attempt
    from stormproof.core.machine import Workflow


def on_notice(wf: Workflow, event: InterruptionNotice, out: list[Decision]) -> None:
    """The two-minute warning: drain the instance, SIGTERM what runs, reclaim at the end."""
    inst = wf.capacity.instances.get(event.instance_id)
    if inst is None or inst.state is not InstanceState.UP:
        return
    inst.state = InstanceState.DRAINING
    grace = max(0.0, event.notice_s)
    why = f"interruption notice ({event.source or 'provider'}): reclaimed in {grace:g}s"
    instance_note(inst, why, out)
    successors.kill_successors(wf, inst, f"{inst.id}: {why}", out)
    killed: list[str] = []
    for aid in sorted(inst.attempts):
        att = wf.attempts.get(aid)
        if att is not None and att.kill_reason in (None, "timeout", "withdrawn"):
            att.kill_reason = "interrupted"
            out.append(KillAttempt(aid, grace, f"{inst.id}: {why}"))
            killed.append(att.pool)
    timer = f"reclaim:{inst.id}"
    wf.timers[timer] = event.at + grace
    out.append(StartTimer(timer, event.at + grace, f"{inst.id} is reclaimed"))
    for pool in _faulted_pools(inst, killed):
        fault(wf, pool, event.at, f"interruption of {inst.id}", out)
    wf._changed = True


def on_instance_lost(wf: Workflow, event: InstanceLost, out: list[Decision]) -> None:
    """No warning: whatever ran there is lost now (``Node.Lost``), and killed to be sure."""
    inst = wf.capacity.instances.get(event.instance_id)
    if inst is None or inst.state in (InstanceState.GONE, InstanceState.FAILED):
        return
    why = f"{inst.id} lost" + (f": {event.reason}" if event.reason else "")
    ended: list[str] = []
    for aid in sorted(inst.attempts):
        att = wf.attempts.get(aid)
        if att is None:
            continue
        ended.append(att.pool)
        for queued in reversed(successors.chain(wf, att)):  # the last first: each unlinks itself
            out.append(KillAttempt(queued.id, 0.0, why))
            if queued.kill_reason in ("cancel", "failing"):
                outcomes.end_cancelled(wf, queued, None, event, out, why, why)
            else:
                outcomes.drop(wf, queued, event, out, why)
        out.append(KillAttempt(aid, 0.0, why))
        if att.kill_reason in ("cancel", "failing"):
            outcomes.end_cancelled(wf, att, None, event, out, why, why)
        else:
            outcomes.failed_attempt(wf, att, NODE_LOST, None, event, out, why)
    for pool in _faulted_pools(inst, ended):
        fault(wf, pool, event.at, why, out)
    remove_instance(wf, inst, why, out)


def _faulted_pools(inst: Instance, pools: list[str]) -> list[str]:
    """Whose fault a notice or loss of ``inst`` is: its pool's; for a node of a batch
    system (which partitions may share), each pool whose attempts it took (rule 8)."""
    if not inst.pool.delegated or not pools:
        return [inst.pool.name]
    return sorted(set(pools))


def learn_nodes(wf: Workflow, att: Attempt, nodes: tuple[str, ...], out: list[Decision]) -> None:
    """The batch system runs ``att`` (of a delegated pool) on ``nodes``: they are the pool's
    instances from now on, so notices and losses can name them (rule 8)."""
    pool = wf.capacity.by_name[att.pool]
    known: list[str] = []
    for node_id in dict.fromkeys(nodes):  # once each, in the order given
        learned = wf.capacity.node(pool, node_id)
        if learned is None:
            continue  # the name of an instance of a modelled pool: not a node of this pool
        inst, fresh = learned
        inst.attempts.add(att.id)
        known.append(node_id)
        if fresh:
            instance_note(inst, f"runs {att.id} (placed there by the batch system)", out)
    att.instances = tuple(known)


def on_instance_up(wf: Workflow, event: InstanceUp, out: list[Decision]) -> None:
    inst = wf.capacity.instances.get(event.instance_id)
    if inst is None or inst.state is not InstanceState.PENDING:
        return
    inst.state = InstanceState.UP
    instance_note(inst, "launched", out)
    wf._changed = True


def on_launch_failed(wf: Workflow, event: InstanceLaunchFailed, out: list[Decision]) -> None:
    inst = wf.capacity.instances.get(event.instance_id)
    if inst is None or inst.state is not InstanceState.PENDING:
        return
    pool = inst.pool.name
    wf.capacity.remove(inst, InstanceState.FAILED)
    why = f"{CAPACITY_UNAVAILABLE}: {event.reason or 'no capacity'}"
    instance_note(inst, why, out)
    fault(wf, pool, event.at, f"launch of {inst.id} failed", out)
    timer = f"relaunch:{pool}"
    if timer not in wf.timers:
        fire_at = event.at + wf.options.launch_retry_s
        wf.timers[timer] = fire_at
        out.append(StartTimer(timer, fire_at, f"launch in {pool} again"))


def on_scale(wf: Workflow, event: FleetScaleRequested, out: list[Decision]) -> None:
    capacity = wf.capacity
    if event.pool not in capacity.target or event.count < 0 or event.pool in wf._delegated:
        return  # the CLI checks names and kinds; an old log may still name a removed pool
    capacity.target[event.pool] = event.count
    excess = capacity.counted(event.pool) - event.count
    # Give back what costs nothing to lose first: pending, then idle, newest first.
    members = capacity.members(event.pool)
    order = sorted(
        (i for i in members if i.state.counts),
        key=lambda i: (i.state is InstanceState.UP, bool(i.attempts), -members.index(i)),
    )
    for inst in order[: max(0, excess)]:
        if inst.attempts:
            successors.kill_successors(wf, inst, f"{inst.id} scaled down", out)
            inst.state = InstanceState.DRAINING
            inst.retiring = True
            instance_note(inst, f"scaled down to {event.count}: retires when idle", out)
        else:
            remove_instance(wf, inst, f"scaled down to {event.count}", out)
    maintain(wf, event.pool, out)
    wf._changed = True


def create_fleet(wf: Workflow, out: list[Decision]) -> None:
    """Ask for every pool's initial instances, like the recipe's Spot Fleet request.

    Each is ``pending`` until the backend answers ``InstanceUp`` (or
    ``InstanceLaunchFailed``, which the fleet then retries like any launch).
    """
    for pool in wf.capacity.pools:
        count = wf.capacity.target[pool.name]
        units = f"{count * pool.weight:g} unit(s) at weight {pool.weight:g}"
        why = f"fleet created: {count} x {pool.instance_type} in {pool.name} ({units})"
        for _ in range(count):
            inst = wf.capacity.add(pool, InstanceState.PENDING)
            wf._fleet_pending.add(inst.id)
            instance_note(inst, why, out)
            out.append(LaunchInstance(inst.id, pool.name, why))
    if wf._fleet_pending:
        timer = "fleet:created"
        fire_at = wf.now + wf.options.launch_retry_s
        wf.timers[timer] = fire_at
        out.append(StartTimer(timer, fire_at, "place on what is up by then"))


def fleet_answered(wf: Workflow) -> bool:
    """Whether every initial instance is up or refused (then the wait timer is dropped)."""
    instances = wf.capacity.instances
    wf._fleet_pending = {
        iid for iid in wf._fleet_pending if instances[iid].state is InstanceState.PENDING
    }
    if wf._fleet_pending:
        return False
    wf.timers.pop("fleet:created", None)
    return True


def maintain(wf: Workflow, pool: str, out: list[Decision]) -> None:
    """Keep the pool at its target, like a fleet of type "maintain"; not while it is open."""
    if wf.breakers[pool].state is BreakerState.OPEN or f"relaunch:{pool}" in wf.timers:
        return
    if pool in wf._delegated:
        return  # its nodes are the batch system's
    if wf.mode in (RunMode.FINISHED, RunMode.CANCELLING):
        return
    capacity = wf.capacity
    missing = capacity.target[pool] - capacity.counted(pool)
    for _ in range(max(0, missing)):
        inst = capacity.add(capacity.by_name[pool], InstanceState.PENDING)
        instance_note(inst, f"keep {pool} at {capacity.target[pool]}", out)
        out.append(LaunchInstance(inst.id, pool, f"{pool} below its target"))


def remove_instance(wf: Workflow, inst: Instance, why: str, out: list[Decision]) -> None:
    pool = inst.pool.name
    wf.capacity.remove(inst, InstanceState.GONE)
    wf.timers.pop(f"reclaim:{inst.id}", None)
    if inst.pool.delegated:  # a node the run no longer counts on: nothing to give back
        instance_note(inst, why, out)
        return
    out.append(TerminateInstance(inst.id, why))
    instance_note(inst, why, out)
    if wf.mode is RunMode.FINISHED:
        return
    breaker = wf.breakers[pool]
    target = wf.capacity.target[pool]
    breaker_moved(wf, breaker, breaker.healthy(wf.now, wf.capacity.up(pool), target), out)
    maintain(wf, pool, out)


def instance_note(inst: Instance, why: str, out: list[Decision]) -> None:
    pool = inst.pool
    out.append(InstanceChanged(inst.id, pool.name, pool.market.value, inst.state.value, why))


# ---------------------------------------------------------------------- timers
def on_reclaim(wf: Workflow, key: str, event: Event, out: list[Decision]) -> None:
    """``reclaim:<instance>``: the notice's grace is over, the provider takes it."""
    inst = wf.capacity.instances.get(key)
    if inst is not None and inst.state is InstanceState.DRAINING:
        remove_instance(wf, inst, "reclaimed by the provider", out)


def on_cooled(wf: Workflow, key: str, event: Event, out: list[Decision]) -> None:
    """``breaker:<pool>``: an open breaker's cool-down is over."""
    breaker = wf.breakers.get(key)
    if breaker is not None:
        breaker_moved(wf, breaker, breaker.cooled(event.at), out)


def on_relaunch(wf: Workflow, key: str, event: Event, out: list[Decision]) -> None:
    """``relaunch:<pool>``: launch again where a launch was refused."""
    if key in wf.breakers:
        maintain(wf, key, out)


def on_fleet_wait(wf: Workflow, key: str, event: Event, out: list[Decision]) -> None:
    """``fleet:created``: not every initial instance answered in time; place on what is up."""
    wf._fleet_pending.clear()
    wf._changed = True


# ---------------------------------------------------------------------- breakers
def fault(wf: Workflow, pool: str, at: float, what: str, out: list[Decision]) -> None:
    breaker = wf.breakers[pool]
    breaker_moved(wf, breaker, breaker.fault(at, what), out)


def breaker_moved(
    wf: Workflow, breaker: Breaker, moved: Transition | None, out: list[Decision]
) -> None:
    if moved is None:
        return
    out.append(
        BreakerChanged(breaker.pool, moved.state.value, moved.until, breaker.trips, moved.reason)
    )
    wf._changed = True
    if moved.until is not None:
        timer = f"breaker:{breaker.pool}"
        wf.timers[timer] = moved.until
        out.append(StartTimer(timer, moved.until, f"half-open {breaker.pool}"))
    elif breaker.pool in wf.capacity.target:
        maintain(wf, breaker.pool, out)


def type_breaker(wf: Workflow, pool: str, kind: str) -> Breaker | None:
    """The breaker of tasks of type ``kind`` on ``pool``, when those are on."""
    if not wf._typed_breakers:
        return None
    name = f"{pool}/{kind}"
    breaker = wf.breakers.get(name)
    if breaker is None:
        breaker = wf.breakers[name] = Breaker(name, wf.options.breaker)
    return breaker


def pool_allows(wf: Workflow, pool: str, kind: str) -> bool:
    """Whether the pool's breakers (and its breaker for this task type) let work on."""
    if not wf.breakers[pool].allows():
        return False
    typed = type_breaker(wf, pool, kind)
    return typed is None or typed.allows()
