"""Delegated pools in the core, scenario by scenario (DELEGATED.md): the batch system places,
the core bounds the jobs outstanding, learns the nodes, and keeps budgets, breakers,
fallback and cost as on modelled pools."""

from __future__ import annotations

import dataclasses

import pytest

from stormproof.core.decisions import (
    AttemptEnded,
    BreakerChanged,
    Decision,
    InstanceChanged,
    KillAttempt,
    LaunchAttempt,
    LaunchInstance,
    TaskEnded,
    TerminateInstance,
)
from stormproof.core.defs import (
    BreakerRule,
    Market,
    PoolDef,
    PricePer,
    Resources,
    RunOptions,
    TaskDef,
)
from stormproof.core.events import (
    AttemptExited,
    AttemptLost,
    AttemptPreempted,
    AttemptStarted,
    FleetScaleRequested,
    InstanceLost,
    InterruptionNotice,
    RunStarted,
    TimerFired,
)
from stormproof.core.machine import Workflow

from .builders import dag

#: Two partitions of 4-vCPU nodes: a preemptible one and a normal one.
SPOT = PoolDef(
    "spot", Market.SPOT, Resources(4, 8192), 3, 0.01, delegated=True, max_jobs=2,
    price_per=PricePer.VCPU_HOUR,
)  # fmt: skip
OD = PoolDef("od", Market.ON_DEMAND, Resources(4, 8192), 2, 0.04, delegated=True, max_jobs=5)


def of(kind: type[Decision], ds: list[Decision]) -> list[Decision]:
    return [d for d in ds if isinstance(d, kind)]


def launches(ds: list[Decision]) -> list[LaunchAttempt]:
    return [d for d in ds if isinstance(d, LaunchAttempt)]


def make(tasks: list[TaskDef], pools: tuple[PoolDef, ...] = (SPOT, OD), **opts: object) -> Workflow:
    return Workflow(tasks, RunOptions(pools=pools, **opts))  # type: ignore[arg-type]


def fan(n: int, **kw: object) -> list[TaskDef]:
    return dag({f"t{k}": [] for k in range(n)}, **kw)  # type: ignore[arg-type]


def checked(wf: Workflow, event: object) -> list[Decision]:
    out = wf.handle(event)  # type: ignore[arg-type]
    wf.validate()
    return out


def test_a_delegated_pool_takes_at_most_max_jobs_and_names_no_instance() -> None:
    wf = make(fan(9))
    out = checked(wf, RunStarted(0.0))
    assert not of(LaunchInstance, out)  # no fleet: the batch system has the nodes
    placed = launches(out)
    assert [d.pool for d in placed] == ["spot"] * 2 + ["od"] * 5  # spot first, then od
    assert all(d.instances == () for d in placed)
    assert wf.capacity.outstanding == {"spot": 2, "od": 5}
    # one ends: exactly one more is submitted, to the pool that freed a slot
    out = checked(wf, AttemptExited(1.0, placed[0].attempt_id, 0))
    assert [d.pool for d in launches(out)] == ["spot"]


def test_a_task_fits_a_delegated_pool_by_its_node_shape_and_node_count() -> None:
    tasks = dag(
        {"wide": [], "big": [], "ok": []},
        vcpus=4,
        memory=1024,
        overrides={"wide": {"nodes": 3}, "big": {"resources": Resources(8, 1024, 0)}},
    )
    wf = make(tasks)
    out = checked(wf, RunStarted(0.0))
    # 3 nodes fit spot (3 nodes) but not od (2); 8 vCPUs per node fit no node shape
    assert {d.task_id: d.pool for d in launches(out)} == {"wide": "spot", "ok": "spot"}
    assert wf.task_state("big").value == "ready"  # waits while something runs
    for d in launches(out):
        out = checked(wf, AttemptExited(1.0, d.attempt_id, 0))
    ended = {d.task_id: d.error for d in of(TaskEnded, out)}  # type: ignore[attr-defined]
    assert ended["big"] == "Capacity.Unavailable"


def test_nodes_learned_from_a_start_are_instances_that_notices_and_losses_name() -> None:
    wf = make(fan(2, max_interruptions=3))
    a, b = launches(checked(wf, RunStarted(0.0)))
    out = checked(wf, AttemptStarted(1.0, a.attempt_id, "101", nodes=("n1",)))
    (note,) = of(InstanceChanged, out)
    assert (note.instance_id, note.pool, note.state) == ("n1", "spot", "up")  # type: ignore[attr-defined]
    out = checked(wf, AttemptStarted(1.0, b.attempt_id, "102", nodes=("n1",)))
    assert not of(InstanceChanged, out), "n1 is up already: nothing to announce"
    assert wf.capacity.instances["n1"].attempts == {a.attempt_id, b.attempt_id}

    out = checked(wf, InterruptionNotice(2.0, "n1", 30.0, "cli"))
    kills = of(KillAttempt, out)
    assert {(k.attempt_id, k.grace_s) for k in kills} == {
        (a.attempt_id, 30.0),
        (b.attempt_id, 30.0),
    }  # type: ignore[attr-defined]
    assert not of(TerminateInstance, out)  # a node is not ours to give back
    out = checked(wf, AttemptExited(10.0, a.attempt_id, 143))  # it checkpointed and left
    (ended,) = of(AttemptEnded, out)
    assert (ended.error, ended.budget) == ("Capacity.Interrupted", "interruptions")  # type: ignore[attr-defined]
    assert sum(wf.retries_used.get(0, [])) == 0 and wf.interruptions[0] == 1
    # the batch system preempts the other one too: the notice already counted the fault
    out = checked(wf, AttemptPreempted(11.0, b.attempt_id, "PREEMPTED"))
    assert of(AttemptEnded, out)[0].error == "Capacity.Interrupted"  # type: ignore[attr-defined]
    assert len(wf.breakers["spot"].faults) == 1


def test_a_lost_node_ends_the_attempts_there_as_node_lost_and_counts_a_fault() -> None:
    wf = make(fan(1))
    (a,) = launches(checked(wf, RunStarted(0.0)))
    checked(wf, AttemptStarted(1.0, a.attempt_id, "7", nodes=("n2",)))
    out = checked(wf, InstanceLost(2.0, "n2", "NODE_FAIL"))
    assert [k.attempt_id for k in of(KillAttempt, out)] == [a.attempt_id]  # type: ignore[attr-defined]
    (ended,) = of(AttemptEnded, out)
    assert ended.error == "Node.Lost"  # type: ignore[attr-defined]
    assert wf.capacity.instances["n2"].state.value == "gone"
    assert len(wf.breakers["spot"].faults) == 1
    assert [d.pool for d in launches(out)] == ["spot"]  # retried at once
    # the batch system runs the retry on that node again: it is up again
    retry = launches(out)[0]
    out = checked(wf, AttemptStarted(3.0, retry.attempt_id, "8", nodes=("n2",)))
    assert [n.state for n in of(InstanceChanged, out)] == ["up"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("how", ["notice", "loss"])
def test_a_node_two_partitions_share_is_a_fault_of_each_whose_attempts_it_took(how: str) -> None:
    wf = make(fan(2, max_interruptions=3), pools=(dataclasses.replace(SPOT, max_jobs=1), OD))
    a, b = launches(checked(wf, RunStarted(0.0)))
    assert (a.pool, b.pool) == ("spot", "od")
    for d in (a, b):
        checked(wf, AttemptStarted(1.0, d.attempt_id, d.attempt_id, nodes=("n1",)))
    if how == "notice":
        checked(wf, InterruptionNotice(2.0, "n1", 0.0, "cli"))
    else:
        checked(wf, InstanceLost(2.0, "n1", "NODE_FAIL"))
    assert [len(wf.breakers[p].faults) for p in ("spot", "od")] == [1, 1]


@pytest.mark.parametrize("delegated", [True, False])
def test_an_attempt_lost_by_the_backend_is_a_fault_only_of_a_delegated_pool(
    delegated: bool,
) -> None:
    pool = dataclasses.replace(OD, delegated=delegated)
    rule = BreakerRule(threshold=1)
    wf = make(fan(1, vcpus=4, memory=8192), (pool,), breaker=rule)
    if not delegated:
        from stormproof.core.events import InstanceUp

        out = wf.handle(RunStarted(0.0))
        for d in of(LaunchInstance, out):
            out += wf.handle(InstanceUp(0.0, d.instance_id))  # type: ignore[attr-defined]
    else:
        out = wf.handle(RunStarted(0.0))
    (a,) = launches(out)
    out = checked(wf, AttemptLost(1.0, a.attempt_id, "NODE_FAIL"))
    assert of(AttemptEnded, out)[0].error == "Node.Lost"  # type: ignore[attr-defined]
    assert bool(of(BreakerChanged, out)) is delegated


def test_an_open_breaker_moves_work_to_the_on_demand_partition() -> None:
    rule = BreakerRule(threshold=1, cooldown_s=100.0)
    wf = make(fan(3), breaker=rule)
    first = launches(checked(wf, RunStarted(0.0)))
    spot = [d for d in first if d.pool == "spot"]
    out = checked(wf, AttemptPreempted(1.0, spot[0].attempt_id, "PREEMPTED"))
    assert of(BreakerChanged, out)[0].state == "open"  # type: ignore[attr-defined]
    assert [d.pool for d in launches(out)] == ["od"]  # the retry goes on-demand


def test_fallback_after_interruptions_goes_to_the_on_demand_partition() -> None:
    wf = make(fan(1), fallback_after_interruptions=1)
    (a,) = launches(checked(wf, RunStarted(0.0)))
    assert a.pool == "spot"
    out = checked(wf, AttemptPreempted(1.0, a.attempt_id, "PREEMPTED"))
    assert [(d.pool, d.instances) for d in launches(out)] == [("od", ())]


def test_vcpu_hour_pricing_bills_from_the_start_not_from_the_submit() -> None:
    wf = make(fan(1, vcpus=2, memory=1024, overrides={"t0": {"nodes": 2}}))
    (a,) = launches(checked(wf, RunStarted(0.0)))
    assert a.usd_per_h == pytest.approx(0.01 * 2 * 2)  # price x vCPUs x nodes
    # the on-demand equivalent: the od partition's instance-hour share (2/4 of a node) x 2
    assert a.on_demand_usd_per_h == pytest.approx(0.04 * 0.5 * 2)
    checked(wf, AttemptStarted(600.0, a.attempt_id, "1", nodes=("n1", "n2")))  # queued 10 min
    out = checked(wf, AttemptExited(600.0 + 3600.0, a.attempt_id, 0))
    (ended,) = of(AttemptEnded, out)
    assert ended.seconds == 3600.0  # type: ignore[attr-defined]
    assert ended.cost_usd == pytest.approx(0.04)  # type: ignore[attr-defined]
    assert wf.cost.spot_s == 3600.0


def test_an_attempt_that_never_started_costs_nothing() -> None:
    wf = make(fan(1))
    (a,) = launches(checked(wf, RunStarted(0.0)))
    out = checked(wf, AttemptPreempted(500.0, a.attempt_id, "requeued before it ran"))
    assert of(AttemptEnded, out)[0].cost_usd == 0.0  # type: ignore[attr-defined]


def test_no_successor_queues_on_a_delegated_pool() -> None:
    wf = make(fan(8), (OD,), successors=3)
    placed = launches(checked(wf, RunStarted(0.0)))
    assert len(placed) == 5 and all(d.after == "" for d in placed)


def test_scaling_a_delegated_pool_does_nothing_and_the_end_terminates_no_node() -> None:
    wf = make(fan(1))
    (a,) = launches(checked(wf, RunStarted(0.0)))
    checked(wf, AttemptStarted(1.0, a.attempt_id, "1", nodes=("n1",)))
    assert checked(wf, FleetScaleRequested(2.0, "spot", 0)) == []  # n1 is not ours to retire
    out = checked(wf, AttemptExited(3.0, a.attempt_id, 0))
    assert not of(TerminateInstance, out) and not of(LaunchInstance, out)
    assert [(n.instance_id, n.state) for n in of(InstanceChanged, out)] == [("n1", "gone")]  # type: ignore[attr-defined]


def test_a_node_kept_idle_is_still_known_and_a_reclaim_removes_it() -> None:
    wf = make(fan(2))
    a, b = launches(checked(wf, RunStarted(0.0)))
    checked(wf, AttemptStarted(1.0, a.attempt_id, "1", nodes=("n1",)))
    checked(wf, AttemptExited(2.0, a.attempt_id, 0))
    n1 = wf.capacity.instances["n1"]
    assert n1.state.value == "up" and not n1.attempts  # kept, idle: it forgot the attempt
    out = checked(wf, InterruptionNotice(3.0, "n1", 5.0, "cli"))
    assert not of(KillAttempt, out)
    checked(wf, TimerFired(8.0, "reclaim:n1"))
    assert n1.state.value == "gone" and n1 not in wf.capacity.members("spot")
    # the batch system runs an attempt there again: the node is back, once
    out = checked(wf, AttemptStarted(9.0, b.attempt_id, "2", nodes=("n1",)))
    assert [(c.instance_id, c.state) for c in of(InstanceChanged, out)] == [("n1", "up")]  # type: ignore[attr-defined]
    assert wf.capacity.members("spot").count(n1) == 1 and n1.attempts == {b.attempt_id}


def test_fallback_keeps_a_task_on_spot_when_no_on_demand_partition_could_hold_it() -> None:
    wf = make(fan(1, overrides={"t0": {"nodes": 3}}), fallback_after_interruptions=1)
    (a,) = launches(checked(wf, RunStarted(0.0)))
    out = checked(wf, AttemptPreempted(1.0, a.attempt_id, "PREEMPTED"))
    assert [d.pool for d in launches(out)] == ["spot"]  # od has 2 nodes: it would wait forever
