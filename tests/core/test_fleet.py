"""Spot capacity in the core, scenario by scenario: notices, losses, budgets, breakers,
fallback, scaling, cost and memory escalation."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stormproof.core.breaker import Breaker, BreakerState
from stormproof.core.capacity import diversify
from stormproof.core.decisions import (
    AttemptEnded,
    BreakerChanged,
    Decision,
    InstanceChanged,
    KillAttempt,
    LaunchAttempt,
    LaunchInstance,
    StartTimer,
    TaskEnded,
    TaskRetrying,
    TerminateInstance,
)
from stormproof.core.defs import (
    BreakerRule,
    Market,
    PoolDef,
    Resources,
    RetryRule,
    RunOptions,
    SpotStrategy,
    TaskDef,
)
from stormproof.core.events import (
    AttemptExited,
    AttemptStarted,
    CancelRequested,
    CheckpointCommitted,
    CheckpointRestored,
    FleetScaleRequested,
    InstanceLaunchFailed,
    InstanceLost,
    InstanceUp,
    InterruptionNotice,
    RunStarted,
    TimerFired,
)
from stormproof.core.machine import Workflow

from .builders import begin, dag

SPOT = PoolDef("spot", Market.SPOT, Resources(4, 8192), 2, price_usd_per_h=0.36)
OD = PoolDef("od", Market.ON_DEMAND, Resources(4, 8192), 1, price_usd_per_h=0.72)


def of(kind: type[Decision], ds: list[Decision]) -> list[Decision]:
    return [d for d in ds if isinstance(d, kind)]


def launches(ds: list[Decision]) -> list[LaunchAttempt]:
    return [d for d in ds if isinstance(d, LaunchAttempt)]


def make(
    tasks: list[TaskDef] | None = None,
    pools: tuple[PoolDef, ...] = (SPOT, OD),
    **options: object,
) -> Workflow:
    tasks = tasks if tasks is not None else dag({"a": []}, vcpus=4, memory=8192)
    return Workflow(tasks, RunOptions(pools=pools, **options))  # type: ignore[arg-type]


def start(wf: Workflow, at: float = 0.0) -> LaunchAttempt:
    (launch,) = launches(begin(wf, at))
    wf.handle(AttemptStarted(at, launch.attempt_id, "pid"))
    return launch


def test_a_notice_sigterms_with_the_notice_as_grace_and_requeues_on_the_interruption_budget() -> (
    None
):
    tasks = dag({"a": []}, vcpus=4, memory=8192, retry=[RetryRule(("States.ALL",), 1, 1, 1)])
    wf = make(tasks)
    first = start(wf)
    assert first.market == "spot" and first.instances == ("spot-0",)
    out = wf.handle(InterruptionNotice(10, "spot-0", 120, "cli"))
    (kill,) = of(KillAttempt, out)
    assert kill.attempt_id == "a/1" and kill.grace_s == 120
    assert kill.reason == "spot-0: interruption notice (cli): reclaimed in 120s"
    assert [d.state for d in of(InstanceChanged, out)] == ["draining"]
    # the runtime learns when to reclaim it from this timer alone
    (reclaim,) = of(StartTimer, out)
    assert (reclaim.timer_id, reclaim.fire_at) == ("reclaim:spot-0", 130)
    out = wf.handle(AttemptExited(40, "a/1", 143))
    (ended,) = of(AttemptEnded, out)
    assert (ended.state, ended.error, ended.budget) == (
        "interrupted",
        "Capacity.Interrupted",
        "interruptions",
    )
    (retrying,) = of(TaskRetrying, out)
    assert retrying.budget == "interruptions" and retrying.delay_s == 0
    assert wf.retries_used.get(0, [0]) == [0] and wf.interruptions[0] == 1
    (second,) = launches(out)
    assert second.instances == ("spot-1",), "never the draining instance"


def test_a_task_that_finishes_within_the_notice_succeeds() -> None:
    wf = make()
    start(wf)
    wf.handle(InterruptionNotice(10, "spot-0", 120, "cli"))
    out = wf.handle(AttemptExited(20, "a/1", 0))
    assert [(d.state, d.error) for d in of(TaskEnded, out)] == [("succeeded", None)]


def test_the_reclaim_removes_the_instance_and_the_fleet_replaces_it() -> None:
    wf = make()
    start(wf)
    wf.handle(InterruptionNotice(10, "spot-0", 120, "cli"))
    out = wf.handle(TimerFired(130, "reclaim:spot-0"))
    assert [d.instance_id for d in of(TerminateInstance, out)] == ["spot-0"]
    (launch,) = of(LaunchInstance, out)
    assert launch.pool == "spot" and launch.instance_id == "spot-2", "ids are never reused"
    out = wf.handle(InstanceUp(131, "spot-2"))
    assert [d.state for d in of(InstanceChanged, out)] == ["up"]


def test_a_lost_instance_ends_its_attempts_now_as_node_lost_and_kills_them() -> None:
    wf = make()
    start(wf)
    out = wf.handle(InstanceLost(5, "spot-0", "vanished"))
    assert [k.grace_s for k in of(KillAttempt, out)] == [0.0]
    (ended,) = of(AttemptEnded, out)
    assert (ended.error, ended.budget) == ("Node.Lost", "interruptions")
    assert of(KillAttempt, out)[0].reason == "spot-0 lost: vanished"
    assert ended.reason == "Node.Lost: spot-0 lost: vanished"
    assert launches(out)[0].instances == ("spot-1",)


@pytest.mark.parametrize(("source", "notice_s", "grace"), [("", 30.0, 30.0), ("rate", -5.0, 0.0)])
def test_a_notice_names_its_source_and_never_gives_a_negative_grace(
    source: str, notice_s: float, grace: float
) -> None:
    wf = make()
    start(wf)
    out = wf.handle(InterruptionNotice(10, "spot-0", notice_s, source))
    (kill,) = of(KillAttempt, out)
    assert kill.grace_s == grace
    assert (
        kill.reason
        == f"spot-0: interruption notice ({source or 'provider'}): reclaimed in {grace:g}s"
    )
    assert wf.timers["reclaim:spot-0"] == 10 + grace


def test_a_notice_takes_over_a_timeout_kill_but_never_a_cancel() -> None:
    tasks = dag({"a": [], "b": []}, vcpus=2, memory=4096, timeout_s=5)
    wf = make(tasks, pools=(dataclasses.replace(SPOT, count=1), OD))
    (a, b) = launches(begin(wf))
    assert a.instances == b.instances == ("spot-0",)
    for d in (a, b):
        wf.handle(AttemptStarted(0, d.attempt_id, "pid"))
    wf.handle(TimerFired(5, f"timeout:{a.attempt_id}"))  # a is being killed for its timeout
    wf.attempts[b.attempt_id].kill_reason = "cancel"  # b is being cancelled
    out = wf.handle(InterruptionNotice(6, "spot-0", 60, "cli"))
    assert [k.attempt_id for k in of(KillAttempt, out)] == [a.attempt_id]
    assert wf.attempts[a.attempt_id].kill_reason == "interrupted"
    assert wf.attempts[b.attempt_id].kill_reason == "cancel"


@pytest.mark.parametrize("reason", ["", "the host stopped answering"])
def test_the_loss_s_reason_reaches_the_attempt_the_fault_and_the_instance(reason: str) -> None:
    wf = make(breaker=BreakerRule(threshold=1, cooldown_s=60))
    start(wf)
    out = wf.handle(InstanceLost(5, "spot-0", reason))
    why = "spot-0 lost" + (f": {reason}" if reason else "")
    (ended,) = of(AttemptEnded, out)
    (opened,) = of(BreakerChanged, out)  # its one fault opened the pool's breaker
    gone = [c for c in of(InstanceChanged, out) if c.instance_id == "spot-0"]
    assert ended.reason == f"Node.Lost: {why}" and why in opened.reason
    assert [(c.state, c.reason) for c in gone] == [("gone", why)]


def test_an_instance_lost_while_the_run_is_cancelled_ends_its_attempt_cancelled() -> None:
    wf = make()
    launch = start(wf)
    wf.handle(CancelRequested(1))
    out = wf.handle(InstanceLost(2, launch.instances[0], "gone"))
    (ended,) = of(AttemptEnded, out)
    assert (ended.state, ended.budget) == ("cancelled", None), "no retry, no budget: cancelled"
    assert not launches(out) and wf.interruptions[0] == 0
    assert wf.final == "cancelled"


def test_an_instance_lost_while_the_run_is_failing_ends_its_attempt_without_a_retry() -> None:
    tasks = dag({"a": [], "b": []}, vcpus=4, memory=8192, max_interruptions=3)
    wf = make(tasks)
    (a, b) = launches(begin(wf))
    for d in (a, b):
        wf.handle(AttemptStarted(0, d.attempt_id, "pid"))
    out = wf.handle(AttemptExited(1, a.attempt_id, 1))  # a fails for good: the run is failing
    assert [k.attempt_id for k in of(KillAttempt, out)] == [b.attempt_id]
    out = wf.handle(InstanceLost(2, b.instances[0], "gone"))  # b's instance goes first
    (ended,) = of(AttemptEnded, out)
    assert (ended.attempt_id, ended.state, ended.budget) == (b.attempt_id, "cancelled", None)
    assert not launches(out) and wf.interruptions[1] == 0
    assert wf.final == "failed"


def test_the_interruption_budget_ends_the_task_without_touching_retries() -> None:
    tasks = dag({"a": []}, vcpus=4, memory=8192, max_interruptions=1)
    wf = make(tasks)
    start(wf)
    wf.handle(InterruptionNotice(1, "spot-0", 0, "cli"))
    out = wf.handle(AttemptExited(2, "a/1", 143))
    (second,) = launches(out)
    wf.handle(AttemptStarted(2, second.attempt_id, "pid"))
    wf.handle(InterruptionNotice(3, second.instances[0], 0, "cli"))
    out = wf.handle(AttemptExited(4, second.attempt_id, 143))
    assert [(d.state, d.error) for d in of(TaskEnded, out)] == [("failed", "Capacity.Interrupted")]


def test_fallback_after_k_interruptions_goes_on_demand() -> None:
    wf = make(fallback_after_interruptions=1)
    start(wf)
    wf.handle(InterruptionNotice(1, "spot-0", 0, "cli"))
    (second,) = launches(wf.handle(AttemptExited(2, "a/1", 143)))
    assert second.market == "on_demand" and second.pool == "od"
    assert "interrupted 1 times" in second.reason


def test_the_last_attempt_the_budget_allows_runs_on_demand() -> None:
    tasks = dag({"a": []}, vcpus=4, memory=8192, max_interruptions=2)
    # Neither an open breaker nor a spot pool emptied by the notices may be why it moves:
    # a breaker that stays closed, and a third spot instance still free for the third attempt.
    spot = dataclasses.replace(SPOT, count=3)
    patient = BreakerRule(threshold=50)
    wf = make(tasks, (spot, OD), last_attempt_on_demand=True, breaker=patient)
    start(wf)
    wf.handle(InterruptionNotice(1, "spot-0", 0, "cli"))
    (second,) = launches(wf.handle(AttemptExited(2, "a/1", 143)))
    assert second.market == "spot"
    wf.handle(AttemptStarted(2, second.attempt_id, "pid"))
    wf.handle(InterruptionNotice(3, second.instances[0], 0, "cli"))
    (third,) = launches(wf.handle(AttemptExited(4, second.attempt_id, 143)))
    assert third.market == "on_demand"


def test_spot_disabled_tasks_never_use_spot() -> None:
    tasks = dag({"a": []}, vcpus=4, memory=8192, overrides={"a": {"spot_enabled": False}})
    (launch,) = launches(begin(make(tasks)))
    assert launch.pool == "od"


def test_breaker_opens_after_threshold_faults_and_placement_skips_the_pool() -> None:
    rule = BreakerRule(threshold=2, window_s=100, cooldown_s=50, max_cooldown_s=400)
    wf = make(breaker=rule)
    start(wf)
    wf.handle(InterruptionNotice(1, "spot-0", 0, "cli"))
    (second,) = launches(wf.handle(AttemptExited(2, "a/1", 143)))
    assert second.instances == ("spot-1",)
    wf.handle(AttemptStarted(2, second.attempt_id, "pid"))
    out = wf.handle(InterruptionNotice(3, "spot-1", 0, "cli"))
    (opened,) = of(BreakerChanged, out)
    assert (opened.state, opened.until, opened.trips) == ("open", 53, 1)
    # the runtime learns when to half-open it from this timer alone
    assert ("breaker:spot", 53) in [(t.timer_id, t.fire_at) for t in of(StartTimer, out)]
    (third,) = launches(wf.handle(AttemptExited(4, second.attempt_id, 143)))
    assert third.pool == "od", "the open spot pool is skipped"


def test_faults_outside_the_window_do_not_count() -> None:
    b = Breaker("p", BreakerRule(threshold=2, window_s=10))
    assert b.fault(0, "x") is None
    assert b.fault(11, "y") is None, "the first fault left the window"
    assert b.fault(12, "z") is not None


def test_a_task_failure_is_not_a_pool_fault() -> None:
    rule = BreakerRule(threshold=1)
    tasks = dag({"a": []}, vcpus=4, memory=8192, retry=[RetryRule(("States.ALL",), 0, 2, 1)])
    wf = make(tasks, breaker=rule)
    start(wf)
    out = wf.handle(AttemptExited(1, "a/1", 1))
    assert not of(BreakerChanged, out)
    assert launches(out)[0].pool == "spot"


def test_half_open_lets_one_probe_through_and_its_success_closes_back_to_spot() -> None:
    rule = BreakerRule(threshold=1, window_s=100, cooldown_s=50)
    od = PoolDef("od", Market.ON_DEMAND, Resources(4, 8192), 3, price_usd_per_h=0.72)
    tasks = dag({"a": [], "b": [], "c": ["a"], "d": ["a"]}, vcpus=4, memory=8192)
    wf = make(tasks, pools=(SPOT, od), breaker=rule)
    out = begin(wf)
    assert [d.pool for d in launches(out)] == ["spot", "spot"]
    wf.handle(AttemptStarted(0, "a/1", "p"))
    wf.handle(AttemptStarted(0, "b/1", "p"))
    wf.handle(InterruptionNotice(1, "spot-0", 0, "cli"))
    (a2,) = launches(wf.handle(AttemptExited(2, "a/1", 143)))
    assert a2.pool == "od" and wf.breakers["spot"].state is BreakerState.OPEN
    wf.handle(TimerFired(2, "reclaim:spot-0"))
    out = wf.handle(TimerFired(51, "breaker:spot"))
    assert [d.state for d in of(BreakerChanged, out)] == ["half_open"]
    # the replacement instance comes up; a finishes; c and d become ready
    (replacement,) = [d for d in out if isinstance(d, LaunchInstance)]
    wf.handle(InstanceUp(52, replacement.instance_id))
    wf.handle(AttemptStarted(52, a2.attempt_id, "p"))
    out = wf.handle(AttemptExited(60, a2.attempt_id, 0))
    placed = launches(out)
    assert [d.pool for d in placed].count("spot") == 1, "one probe while half-open"
    probe = next(d for d in placed if d.pool == "spot")
    wf.handle(AttemptStarted(61, probe.attempt_id, "p"))
    out = wf.handle(AttemptExited(70, probe.attempt_id, 0))
    assert [d.state for d in of(BreakerChanged, out)] == ["closed"]
    assert wf.breakers["spot"].allows()


def test_repeated_trips_double_the_cooldown_up_to_the_cap_no_flapping() -> None:
    b = Breaker("p", BreakerRule(threshold=1, window_s=10, cooldown_s=10, max_cooldown_s=35))
    cooldowns = []
    now = 0.0
    for _ in range(4):
        opened = b.fault(now, "x")
        assert opened is not None and opened.until is not None
        cooldowns.append(opened.until - now)
        now = opened.until
        assert b.cooled(now) is not None and b.state is BreakerState.HALF_OPEN
        b.placed("probe")
    assert cooldowns == [10, 20, 35, 35]
    # a pool that then stays healthy longer than the cap is forgiven
    b.ended(now, "probe", succeeded=True)
    opened = b.fault(now + 100, "y")
    assert opened is not None and opened.until == now + 110


def test_a_breaker_that_trips_thousands_of_times_stays_at_the_cap() -> None:
    b = Breaker("p", BreakerRule(threshold=1, cooldown_s=300.0, max_cooldown_s=3600.0))
    now, cooldowns = 0.0, []
    for _ in range(2000):  # a probe that keeps landing between the pool's capacity windows
        opened = b.fault(now, "launch refused")
        assert opened is not None and opened.until is not None
        cooldowns.append(opened.until - now)
        now = opened.until
        b.cooled(now)
    assert b.trips == 2000 and cooldowns[-1] == 3600


def test_the_probes_own_failure_lets_another_probe_try() -> None:
    b = Breaker("p", BreakerRule(threshold=1, cooldown_s=5))
    b.fault(0, "x")
    b.cooled(5)
    b.placed("t/1")
    assert not b.allows()
    assert b.ended(6, "t/1", succeeded=False) is None
    assert b.state is BreakerState.HALF_OPEN and b.allows()


def test_healthy_capacity_below_the_floor_opens_the_breaker() -> None:
    rule = BreakerRule(threshold=10, min_healthy=2)
    wf = make(breaker=rule)
    start(wf)
    out = wf.handle(InstanceLost(1, "spot-1", "gone"))
    (opened,) = of(BreakerChanged, out)
    assert opened.state == "open" and "healthy instances 1 < 2" in opened.reason
    assert not of(LaunchInstance, out), "no replacement into an open pool"


@pytest.mark.parametrize(
    ("reason", "said"), [("InsufficientInstanceCapacity", None), ("", "no capacity")]
)
def test_a_refused_launch_is_retried_after_launch_retry(reason: str, said: str | None) -> None:
    wf = make(launch_retry_s=30.0)
    start(wf)
    wf.handle(InstanceLost(1, "spot-1", "gone"))
    out = wf.handle(InstanceLaunchFailed(2, "spot-2", reason))
    (failed,) = [c for c in of(InstanceChanged, out) if c.instance_id == "spot-2"]
    assert (failed.state, failed.reason) == ("failed", f"Capacity.Unavailable: {said or reason}")
    (relaunch,) = [t for t in of(StartTimer, out) if t.timer_id == "relaunch:spot"]
    assert relaunch.fire_at == 32 and wf.timers["relaunch:spot"] == 32
    out = wf.handle(TimerFired(32, "relaunch:spot"))
    assert [d.instance_id for d in of(LaunchInstance, out)] == ["spot-3"]


def test_a_refused_launch_is_a_fault_of_its_pool_that_the_breaker_names() -> None:
    wf = make(breaker=BreakerRule(threshold=2))
    start(wf)
    wf.handle(InstanceLost(1, "spot-1", "gone"))  # the first fault; spot-2 is launched
    (opened,) = of(BreakerChanged, wf.handle(InstanceLaunchFailed(2, "spot-2", "none left")))
    assert opened.state == "open" and "(last: launch of spot-2 failed)" in opened.reason


def test_scale_down_removes_idle_first_and_retires_busy_ones_when_they_finish() -> None:
    tasks = dag({"a": [], "b": ["a"]}, vcpus=4, memory=8192)
    wf = make(tasks)
    start(wf)  # a runs on spot-0; spot-1 is idle
    out = wf.handle(FleetScaleRequested(1, "spot", 0))
    assert [d.instance_id for d in of(TerminateInstance, out)] == ["spot-1"]
    assert [(d.instance_id, d.state) for d in of(InstanceChanged, out)] == [
        ("spot-1", "gone"),
        ("spot-0", "draining"),
    ]
    out = wf.handle(AttemptExited(5, "a/1", 0))
    assert [d.instance_id for d in of(TerminateInstance, out)] == ["spot-0"]
    assert [d.pool for d in launches(out)] == ["od"], "b waits for no spot: the pool is at 0"


def test_scale_down_gives_back_pending_then_idle_newest_first_and_busy_last() -> None:
    wf = make()
    start(wf)  # a runs on spot-0; spot-1 is idle
    wf.handle(FleetScaleRequested(1, "spot", 4))  # spot-2 and spot-3 are pending
    wf.handle(InstanceUp(2, "spot-2"))  # now idle and newer than spot-1
    out = wf.handle(FleetScaleRequested(3, "spot", 2))
    assert [d.instance_id for d in of(TerminateInstance, out)] == ["spot-3", "spot-2"]
    out = wf.handle(FleetScaleRequested(4, "spot", 0))
    assert [d.instance_id for d in of(TerminateInstance, out)] == ["spot-1"]
    assert wf.capacity.instances["spot-0"].retiring, "the busy one goes when its attempt ends"


def test_scale_up_launches_instances() -> None:
    wf = make()
    begin(wf)
    out = wf.handle(FleetScaleRequested(1, "spot", 4))
    assert [d.instance_id for d in of(LaunchInstance, out)] == ["spot-2", "spot-3"]


def test_diversified_spreads_placements_over_spot_pools_by_weight() -> None:
    a = PoolDef("a", Market.SPOT, Resources(1, 1024), 10, 0.1, weight=1.0)
    b = PoolDef("b", Market.SPOT, Resources(1, 1024), 10, 0.1, weight=3.0)
    tasks = dag({f"t{i}": [] for i in range(8)}, vcpus=1, memory=1024)
    out = begin(Workflow(tasks, RunOptions(pools=(a, b))))
    pools = [d.pool for d in launches(out)]
    assert pools.count("b") == 6 and pools.count("a") == 2


def test_lowest_price_prefers_the_cheapest_vcpu_hour() -> None:
    a = PoolDef("a", Market.SPOT, Resources(2, 2048), 4, 0.3)
    b = PoolDef("b", Market.SPOT, Resources(2, 2048), 4, 0.1)
    tasks = dag({"t0": [], "t1": []}, vcpus=1, memory=512)
    options = RunOptions(pools=(a, b), spot_strategy=SpotStrategy.LOWEST_PRICE)
    assert {d.pool for d in launches(begin(Workflow(tasks, options)))} == {"b"}


def test_cost_bills_the_attempts_share_per_second_and_splits_off_the_waste() -> None:
    # half an instance (2 of 4 vCPUs); spot at 0.36/h, on-demand 0.72/h
    tasks = dag({"a": []}, vcpus=2, memory=1024, overrides={"a": {"checkpoint_enabled": True}})
    wf = make(tasks)
    first = start(wf)
    assert first.usd_per_h == pytest.approx(0.18)
    wf.handle(CheckpointCommitted(1000, "a/1", 1, 1, 10))
    wf.handle(InterruptionNotice(1500, "spot-0", 0, "cli"))
    out = wf.handle(AttemptExited(1800, "a/1", 143))
    (ended,) = of(AttemptEnded, out)
    assert ended.seconds == 1800 and ended.wasted_s == 800  # after the checkpoint at 1000
    assert ended.cost_usd == pytest.approx(1800 * 0.18 / 3600)
    assert ended.on_demand_usd == pytest.approx(1000 * 0.36 / 3600)
    (second,) = launches(out)
    assert second.restore_from == (1,)
    wf.handle(CheckpointRestored(1810, second.attempt_id, 1))
    wf.handle(AttemptStarted(1810, second.attempt_id, "p"))
    out = wf.handle(AttemptExited(3600, second.attempt_id, 0))
    (ended,) = of(AttemptEnded, out)
    assert ended.wasted_s == 10, "restoring is restart overhead"
    assert wf.cost.spent == pytest.approx(3600 * 0.18 / 3600)
    assert wf.cost.wasted_s == 810
    assert wf.cost.on_demand_equivalent == pytest.approx((3600 - 810) * 0.36 / 3600)
    assert wf.cost.saved == pytest.approx(wf.cost.on_demand_equivalent - wf.cost.spent)


def test_instance_time_is_billed_in_whole_seconds_and_counted_by_market() -> None:
    # the whole instance (4 of 4 vCPUs): spot at 0.36/h, on-demand 0.72/h
    wf = make(dag({"a": [], "b": ["a"]}, vcpus=4, memory=8192))
    first = start(wf)
    assert first.market == "spot"
    out = wf.handle(AttemptExited(10.2, first.attempt_id, 0))
    (ended,) = of(AttemptEnded, out)
    assert ended.seconds == 10.2  # as it was; the bill rounds up to 11 s
    assert ended.cost_usd == pytest.approx(11 * 0.36 / 3600)
    assert ended.on_demand_usd == pytest.approx(11 * 0.72 / 3600)
    assert (wf.cost.spot_s, wf.cost.on_demand_s) == (11.0, 0.0)
    (second,) = launches(out)
    wf.handle(AttemptStarted(10.2, second.attempt_id, "pid"))
    out = wf.handle(InterruptionNotice(20, second.instances[0], 0, "cli"))
    out = wf.handle(AttemptExited(30, second.attempt_id, 143))
    (ended,) = of(AttemptEnded, out)
    # no checkpoint: all of its time is wasted; only the rounding up was "useful"
    assert ended.wasted_s == ended.seconds == pytest.approx(19.8)
    assert ended.cost_usd == pytest.approx(20 * 0.36 / 3600)
    assert ended.wasted_usd == pytest.approx(19.8 * 0.36 / 3600)
    assert ended.on_demand_usd == pytest.approx(0.2 * 0.72 / 3600)
    assert wf.cost.spot_s == 31.0


def test_on_demand_time_is_counted_as_on_demand() -> None:
    wf = make(dag({"a": []}, vcpus=4, memory=8192), pools=(OD,))
    first = start(wf)
    wf.handle(AttemptExited(4.5, first.attempt_id, 0))
    assert (wf.cost.spot_s, wf.cost.on_demand_s) == (0.0, 5.0)
    assert wf.cost.spent == pytest.approx(5 * 0.72 / 3600)
    assert wf.cost.on_demand_equivalent == pytest.approx(wf.cost.spent)


def test_out_of_memory_escalates_memory_on_the_retry() -> None:
    tasks = dag(
        {"a": []},
        vcpus=1,
        memory=3000,
        retry=[RetryRule(("Task.OutOfMemory",), 0, 2, 1)],
        overrides={"a": {"memory_escalation": 2.0}},
    )
    wf = make(tasks)
    first = start(wf)
    assert first.memory_mib == 3000
    out = wf.handle(AttemptExited(5, first.attempt_id, 137, out_of_memory=True))
    (ended,) = of(AttemptEnded, out)
    assert ended.error == "Task.OutOfMemory" and ended.budget == "retry"
    (second,) = launches(out)
    assert second.memory_mib == 6000
    wf.handle(AttemptStarted(5, second.attempt_id, "p"))
    out = wf.handle(AttemptExited(6, second.attempt_id, 137, out_of_memory=True))
    (end,) = of(TaskEnded, out)
    assert end.state == "failed" and "12000 MiB fits no pool" in end.reason


def test_a_failure_never_escalates_memory() -> None:
    tasks = dag(
        {"a": []},
        vcpus=1,
        memory=3000,
        retry=[RetryRule(("States.ALL",), 0, 2, 1)],
        overrides={"a": {"memory_escalation": 2.0}},
    )
    wf = make(tasks)
    start(wf)
    (second,) = launches(wf.handle(AttemptExited(5, "a/1", 1)))
    assert second.memory_mib == 3000


def test_the_run_end_terminates_the_fleet() -> None:
    wf = make()
    start(wf)
    out = wf.handle(AttemptExited(5, "a/1", 0))
    assert sorted(d.instance_id for d in of(TerminateInstance, out)) == ["od-0", "spot-0", "spot-1"]


def typed_breakers() -> Workflow:
    """One multi_node task that fails and retries; a breaker per pool and task type."""
    rule = BreakerRule(threshold=2, window_s=100, cooldown_s=50, per_task_type=True)
    tasks = dag(
        {"a": []},
        vcpus=4,
        memory=8192,
        retry=[RetryRule(("States.ALL",), 0, 5, 1)],
        overrides={"a": {"kind": "multi_node"}},
    )
    return make(tasks, breaker=rule)


def test_a_task_type_that_keeps_failing_on_a_pool_moves_to_another() -> None:
    wf = typed_breakers()
    first = start(wf)
    assert first.pool == "spot"
    (second,) = launches(wf.handle(AttemptExited(1, "a/1", 1)))
    assert second.pool == "spot"
    wf.handle(AttemptStarted(1, second.attempt_id, "p"))
    out = wf.handle(AttemptExited(2, second.attempt_id, 1))
    (opened,) = of(BreakerChanged, out)
    assert (opened.pool, opened.state) == ("spot/multi_node", "open")
    assert wf.breakers["spot"].state is BreakerState.CLOSED, "the pool itself is fine"
    (third,) = launches(out)
    assert third.pool == "od"


def test_a_task_type_s_breaker_closes_when_its_probe_succeeds() -> None:
    wf = typed_breakers()
    start(wf)
    for n in (1, 2):  # two failures on spot open spot/multi_node
        (nxt,) = launches(wf.handle(AttemptExited(n, f"a/{n}", 1)))
        wf.handle(AttemptStarted(n, nxt.attempt_id, "p"))
    assert nxt.pool == "od" and wf.timers["breaker:spot/multi_node"] == 52
    out = wf.handle(TimerFired(52, "breaker:spot/multi_node"))
    assert [(c.pool, c.state) for c in of(BreakerChanged, out)] == [
        ("spot/multi_node", "half_open")
    ]
    (probe,) = launches(wf.handle(AttemptExited(53, nxt.attempt_id, 1)))
    assert probe.pool == "spot", "the half-open type lets one probe through"
    wf.handle(AttemptStarted(53, probe.attempt_id, "p"))
    out = wf.handle(AttemptExited(60, probe.attempt_id, 0))
    assert [(c.pool, c.state) for c in of(BreakerChanged, out)] == [("spot/multi_node", "closed")]


def test_without_per_task_type_breakers_task_failures_never_move_a_task() -> None:
    tasks = dag({"a": []}, vcpus=4, memory=8192, retry=[RetryRule(("States.ALL",), 0, 5, 1)])
    wf = make(tasks, breaker=BreakerRule(threshold=1))
    start(wf)
    for n in range(1, 4):
        (nxt,) = launches(wf.handle(AttemptExited(n, f"a/{n}", 1)))
        assert nxt.pool == "spot"
        wf.handle(AttemptStarted(n, nxt.attempt_id, "p"))


# ---------------------------------------------------------------------- fleet creation (G1)
def test_the_fleet_is_created_by_launch_decisions_and_placement_waits_for_all_of_it() -> None:
    wf = make()
    out = wf.handle(RunStarted(0))
    assert [(d.instance_id, d.pool) for d in of(LaunchInstance, out)] == [
        ("spot-0", "spot"),
        ("spot-1", "spot"),
        ("od-0", "od"),
    ]
    assert {d.state for d in of(InstanceChanged, out)} == {"pending"}
    assert "fleet created" in of(LaunchInstance, out)[0].reason
    assert not launches(out), "nothing is placed on instances that are not up"
    assert not launches(wf.handle(InstanceUp(1, "spot-0")))
    assert not launches(wf.handle(InstanceUp(1, "od-0"))), "spot-1 has not answered yet"
    out = wf.handle(InstanceUp(2, "spot-1"))
    assert [d.state for d in of(InstanceChanged, out)] == ["up"]
    (launch,) = launches(out)
    assert launch.pool == "spot" and "fleet:created" not in wf.timers


def test_a_refused_initial_launch_answers_it_and_is_retried_like_any_launch() -> None:
    wf = make(launch_retry_s=30.0)
    wf.handle(RunStarted(0))
    wf.handle(InstanceUp(1, "spot-0"))
    wf.handle(InstanceUp(1, "od-0"))
    out = wf.handle(InstanceLaunchFailed(2, "spot-1", "no capacity"))
    assert [d.instances for d in launches(out)] == [("spot-0",)]
    assert wf.timers["relaunch:spot"] == 32
    out = wf.handle(TimerFired(32, "relaunch:spot"))
    assert [d.instance_id for d in of(LaunchInstance, out)] == ["spot-2"]


def test_placement_waits_for_the_fleet_at_most_launch_retry() -> None:
    wf = make(launch_retry_s=45.0)
    out = wf.handle(RunStarted(0))
    assert [(d.timer_id, d.fire_at) for d in of(StartTimer, out)] == [("fleet:created", 45.0)]
    wf.handle(InstanceUp(1, "od-0"))
    wf.handle(InstanceUp(1, "spot-1"))
    out = wf.handle(TimerFired(45, "fleet:created"))
    assert [d.instances for d in launches(out)] == [("spot-1",)], "spot-0 never answered"


def test_a_fleet_without_instances_places_at_once() -> None:
    empty = PoolDef("spot", Market.SPOT, Resources(4, 8192), 0, price_usd_per_h=0.36)
    pools = (PoolDef("od", Market.ON_DEMAND, Resources(4, 8192), 1), empty)
    wf = make(pools=pools)
    out = wf.handle(RunStarted(0))
    assert [d.instance_id for d in of(LaunchInstance, out)] == ["od-0"]
    assert launches(wf.handle(InstanceUp(0, "od-0")))


def test_diversified_spreads_placements_by_units_of_capacity_not_by_pool() -> None:
    # same weight, 6 instances against 2: the bigger pool holds 3/4 of the units
    a = PoolDef("a", Market.SPOT, Resources(1, 1024), 6, 0.1)
    b = PoolDef("b", Market.SPOT, Resources(1, 1024), 2, 0.1)
    tasks = dag({f"t{i}": [] for i in range(4)}, vcpus=1, memory=1024)
    pools = [d.pool for d in launches(begin(Workflow(tasks, RunOptions(pools=(a, b)))))]
    assert (pools.count("a"), pools.count("b")) == (3, 1)


def test_diversify_is_the_recipes_spot_fleet_request() -> None:
    # the recipe: TargetCapacity 4, c5.large WeightedCapacity 1, c5.xlarge WeightedCapacity 2
    large = PoolDef("large", Market.SPOT, Resources(2, 4096), 1, weight=1.0)
    xlarge = PoolDef("xlarge", Market.SPOT, Resources(4, 8192), 1, weight=2.0)
    assert diversify(4, [large, xlarge]) == {"large": 2, "xlarge": 1}
    assert diversify(1, [large, xlarge]) == {"large": 1, "xlarge": 0}
    assert diversify(5, [large, xlarge]) == {"large": 3, "xlarge": 1}


@given(
    target=st.integers(1, 200),
    weights=st.lists(st.sampled_from([0.5, 1.0, 1.5, 2.0, 4.0, 8.0]), min_size=1, max_size=5),
)
def test_diversify_reaches_the_target_evenly_and_overshoots_by_less_than_an_instance(
    target: int, weights: list[float]
) -> None:
    pools = [
        PoolDef(f"p{i}", Market.SPOT, Resources(1, 1), 1, weight=w) for i, w in enumerate(weights)
    ]
    counts = diversify(target, pools)
    units = {p.name: counts[p.name] * p.weight for p in pools}
    total = sum(units.values())
    assert target <= total < target + max(weights), "overshoots by less than one instance"
    for p in pools:
        if counts[p.name]:
            # its last instance went to it when it held the fewest units of all pools
            assert all(units[p.name] - p.weight <= units[q.name] + 1e-9 for q in pools)


def test_after_the_breaker_closes_work_goes_back_to_spot_and_never_flaps_meanwhile() -> None:
    rule = BreakerRule(threshold=1, window_s=100, cooldown_s=50)
    od = PoolDef("od", Market.ON_DEMAND, Resources(4, 8192), 4, price_usd_per_h=0.72)
    deps = {
        "a": [],
        "b": [],
        "c1": ["b"],
        "c2": ["b"],
        "d1": ["c1"],
        "d2": ["c1"],
        "d3": ["c2"],
        "e": ["d1", "d2"],
    }
    wf = make(dag(deps, vcpus=4, memory=8192), pools=(SPOT, od), breaker=rule)
    out = begin(wf)
    assert [(d.attempt_id, d.pool) for d in launches(out)] == [("a/1", "spot"), ("b/1", "spot")]
    wf.handle(AttemptStarted(0, "a/1", "p"))
    wf.handle(AttemptStarted(0, "b/1", "p"))
    wf.handle(InterruptionNotice(1, "spot-0", 0, "cli"))
    assert wf.breakers["spot"].state is BreakerState.OPEN
    wf.handle(TimerFired(1, "reclaim:spot-0"))
    (a2,) = launches(wf.handle(AttemptExited(2, "a/1", 143)))
    assert a2.pool == "od"
    # open: spot-1 is free, yet everything goes on-demand
    out = wf.handle(AttemptExited(3, "b/1", 0))
    assert [(d.task_id, d.pool) for d in launches(out)] == [("c1", "od"), ("c2", "od")]
    assert "spot-1" in wf.capacity.instances and not wf.capacity.instances["spot-1"].attempts
    # half-open: one probe on spot, the rest on-demand while it runs, though spot has room
    out = wf.handle(TimerFired(51, "breaker:spot"))
    (replacement,) = of(LaunchInstance, out)
    wf.handle(InstanceUp(52, replacement.instance_id))
    for att in ("c1/1", "c2/1"):
        wf.handle(AttemptStarted(52, att, "p"))
    out = wf.handle(AttemptExited(60, "c1/1", 0))
    placed = {d.task_id: d.pool for d in launches(out)}
    assert sorted(placed.values()) == ["od", "spot"], "exactly one probe"
    probe = next(t for t, pool in placed.items() if pool == "spot")
    other = next(t for t, pool in placed.items() if pool == "od")
    out = wf.handle(AttemptExited(61, "c2/1", 0))
    assert [(d.task_id, d.pool) for d in launches(out)] == [("d3", "od")], "no second probe"
    # the probe succeeds: closed, and the next attempt is placed on spot again
    wf.handle(AttemptStarted(61, f"{probe}/1", "p"))
    out = wf.handle(AttemptExited(70, f"{probe}/1", 0))
    assert [d.state for d in of(BreakerChanged, out)] == ["closed"]
    wf.handle(AttemptStarted(61, f"{other}/1", "p"))
    out = wf.handle(AttemptExited(71, f"{other}/1", 0))
    (e,) = launches(out)
    assert (e.task_id, e.pool, e.market) == ("e", "spot", "spot")


@pytest.mark.parametrize("reported_oom", [False, True])
def test_a_timeout_never_escalates_memory(reported_oom: bool) -> None:
    tasks = dag(
        {"a": []},
        vcpus=1,
        memory=3000,
        timeout_s=10,
        retry=[RetryRule(("States.ALL",), 0, 2, 1)],
        overrides={"a": {"memory_escalation": 2.0}},
    )
    wf = make(tasks)
    first = start(wf)
    assert first.memory_mib == 3000
    (kill,) = of(KillAttempt, wf.handle(TimerFired(10, "timeout:a/1")))
    assert kill.attempt_id == "a/1"
    # the kill may race with the memory watchdog: a timed-out attempt is still a timeout
    out = wf.handle(AttemptExited(11, "a/1", 137, out_of_memory=reported_oom))
    (ended,) = of(AttemptEnded, out)
    assert (ended.error, ended.state) == ("Task.Timeout", "timed_out")
    (second,) = launches(out)
    assert second.memory_mib == 3000 and 0 not in wf.memory_scale
