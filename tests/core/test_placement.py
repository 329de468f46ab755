"""Placement's choices that the fleet and policy tests leave open: which spot pool the
fault-ranking strategies pick, and the timer that wakes a task waiting for spot."""

from __future__ import annotations

import pytest

from stormproof.core.decisions import Decision, LaunchAttempt, StartTimer
from stormproof.core.defs import (
    BreakerRule,
    Market,
    PoolDef,
    Resources,
    RunOptions,
    SpotPolicy,
    SpotStrategy,
    TaskDef,
)
from stormproof.core.events import AttemptExited, AttemptStarted, InterruptionNotice, TimerFired
from stormproof.core.machine import Workflow

from .builders import begin, dag

#: A breaker that never opens in these tests: a pool is ranked by its faults, not skipped.
PATIENT = BreakerRule(threshold=50)


def launches(ds: list[Decision]) -> list[LaunchAttempt]:
    return [d for d in ds if isinstance(d, LaunchAttempt)]


@pytest.mark.parametrize(
    "strategy", [SpotStrategy.CAPACITY_OPTIMIZED, SpotStrategy.PRICE_CAPACITY_OPTIMIZED]
)
def test_the_fault_ranking_strategies_move_off_a_spot_pool_that_was_interrupted(
    strategy: SpotStrategy,
) -> None:
    # "a" wins every other criterion: two free instances against one, and cheaper.
    a = PoolDef("a", Market.SPOT, Resources(1, 1024), 2, price_usd_per_h=0.1)
    b = PoolDef("b", Market.SPOT, Resources(1, 1024), 1, price_usd_per_h=0.3)
    wf = Workflow(
        dag({"t": []}, vcpus=1, memory=1024),
        RunOptions(pools=(a, b), spot_strategy=strategy, breaker=PATIENT),
    )
    (first,) = launches(begin(wf))
    assert first.pool == "a"
    wf.handle(AttemptStarted(1, first.attempt_id, "pid"))
    wf.handle(InterruptionNotice(2, first.instances[0], 0, "cli"))  # one fault on "a"
    (second,) = launches(wf.handle(AttemptExited(3, first.attempt_id, 143)))
    assert second.pool == "b", "the pool with fewer recent faults comes first"


def test_capacity_optimized_prefers_the_spot_pool_with_the_most_free_instances() -> None:
    a = PoolDef("a", Market.SPOT, Resources(1, 1024), 2, price_usd_per_h=0.1)
    b = PoolDef("b", Market.SPOT, Resources(1, 1024), 3, price_usd_per_h=0.1)
    options = RunOptions(pools=(a, b), spot_strategy=SpotStrategy.CAPACITY_OPTIMIZED)
    wf = Workflow(dag({"t0": [], "t1": [], "t2": []}, vcpus=1, memory=1024), options)
    # b (3 free) → then a and b tie at 2 free, the first listed wins → then b (2 against 1).
    assert [d.pool for d in launches(begin(wf))] == ["b", "a", "b"]


def two_tasks_one_spot_instance(policy: SpotPolicy) -> Workflow:
    """Task a (rank 1,200 s: the critical path) and task b (rank 600 s), one spot and one
    on-demand instance, a deadline of 3,600 s: a takes spot, b waits for spot while ``policy``
    lets it."""
    r = Resources(1, 100)
    tasks = [
        TaskDef("a", 0, (), (), r, priority=1200.0, estimated_s=1200.0),
        TaskDef("b", 1, (), (), r, priority=600.0, estimated_s=600.0),
    ]
    pools = (
        PoolDef("spot", Market.SPOT, Resources(1, 100), 1),
        PoolDef("od", Market.ON_DEMAND, Resources(1, 100), 1),
    )
    return Workflow(tasks, RunOptions(pools=pools, spot_policy=policy, deadline_s=3600))


@pytest.mark.parametrize(
    ("policy", "waits_s"),
    [
        # as long as the slack lasts: 3,600 - 600 of b's own work
        (SpotPolicy.GREEDY, 3000.0),
        # until the schedule says b is due: 600 s of the 1,200 s path done, × 3,600 / 1,200
        (SpotPolicy.UNIFORM_PROGRESS, 1800.0),
    ],
)
def test_a_task_waiting_for_spot_gets_a_timer_for_the_moment_it_may_use_on_demand(
    policy: SpotPolicy, waits_s: float
) -> None:
    start = 2000.0  # the deadline counts from the run's start, not from 0
    wf = two_tasks_one_spot_instance(policy)
    out = begin(wf, at=start)
    assert [(d.task_id, d.pool) for d in launches(out)] == [("a", "spot")]
    timers = [d for d in out if isinstance(d, StartTimer) and d.timer_id.startswith("policy:")]
    assert [(d.timer_id, d.fire_at) for d in timers] == [("policy:b", start + waits_s)]
    assert wf.timers["policy:b"] == start + waits_s
    # Before its time the on-demand instance stays idle; at it, the task takes it.
    assert not launches(wf.handle(TimerFired(start + waits_s - 1, "no-such-timer")))
    (late,) = launches(wf.handle(TimerFired(start + waits_s, "policy:b")))
    assert (late.task_id, late.pool) == ("b", "od")
