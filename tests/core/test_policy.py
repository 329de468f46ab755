"""The one deadline-policy rule (``core.policy``): its safety net, its wake-up time, and that
the core's placement asks it and nothing else.

The single-job side (``policy.single``) is tested against the paper in tests/policy; here
the rule itself, on random situations, and the core's reading of it for a DAG task.
"""

from __future__ import annotations

import math

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stormproof.core.defs import Market, PoolDef, Resources, RunOptions, SpotPolicy, TaskDef
from stormproof.core.events import TimerFired
from stormproof.core.machine import Workflow
from stormproof.core.policy import (
    Choice,
    Situation,
    can_start_spot,
    can_wait,
    decide,
    wait_until,
)

DEADLINE_POLICIES = [SpotPolicy.GREEDY, SpotPolicy.UNIFORM_PROGRESS, SpotPolicy.STORMPROOF]
seconds = st.integers(0, 200).map(lambda k: k * 60.0)


@st.composite
def situations(draw: st.DrawFn, markets: tuple[Choice, ...] = tuple(Choice)) -> Situation:
    deadline = draw(st.integers(1, 200)) * 600.0
    compute = draw(st.integers(0, int(deadline) // 60)) * 60.0
    elapsed = draw(st.integers(0, int(deadline) // 60)) * 60.0
    remaining = draw(st.integers(0, int(compute) // 60)) * 60.0
    return Situation(
        elapsed_s=elapsed,
        remaining_work_s=remaining,
        remaining_time_s=deadline - elapsed,
        spot_available=draw(st.booleans()),
        market=draw(st.sampled_from(markets)),
        changeover_s=draw(st.sampled_from([0.0, 300.0, 720.0])),
        at_risk_s=draw(seconds),
        tick_s=draw(st.sampled_from([0.0, 300.0, 600.0])),
        compute_s=compute,
        deadline_s=deadline,
        spot_streak_s=draw(st.sampled_from([0.0, 600.0])),
    )


def later(s: Situation, dt: float) -> Situation:
    """The same job ``dt`` seconds on, having made no progress meanwhile."""
    return s._replace(elapsed_s=s.elapsed_s + dt, remaining_time_s=s.remaining_time_s - dt)


@settings(max_examples=500, deadline=None)
@given(s=situations(), policy=st.sampled_from(list(SpotPolicy)))
def test_the_safety_net_holds_for_every_deadline_policy(s: Situation, policy: SpotPolicy) -> None:
    choice = decide(policy, s)
    if choice is Choice.SPOT:
        assert s.spot_available or s.market is Choice.SPOT
    if policy in (SpotPolicy.ON_DEMAND, SpotPolicy.SPOT_FIRST):
        assert choice is not Choice.IDLE
        return
    if choice is Choice.SPOT and s.market is not Choice.SPOT:
        assert can_start_spot(s)
    if choice is Choice.IDLE:
        assert can_wait(s)


@settings(max_examples=500, deadline=None)
@given(
    s=situations((Choice.IDLE, Choice.ON_DEMAND)),
    policy=st.sampled_from(list(SpotPolicy)),
    dt=st.floats(0, 50_000),
)
def test_wait_until_is_when_decide_stops_waiting(
    s: Situation, policy: SpotPolicy, dt: float
) -> None:
    """With spot away and no progress, ``decide`` waits up to ``wait_until`` and not after:
    the core's wake-up timer lands exactly where the rule would change its mind."""
    s = s._replace(spot_available=False)
    until = wait_until(policy, s)
    t = later(s, dt)
    assume(not math.isclose(t.elapsed_s, until, abs_tol=1e-6))
    expected = Choice.IDLE if t.elapsed_s < until else Choice.ON_DEMAND
    assert decide(policy, t) is expected, (until, t)


@settings(max_examples=300, deadline=None)
@given(s=situations((Choice.IDLE,)), policy=st.sampled_from(list(SpotPolicy)))
def test_for_a_job_on_no_market_spot_only_adds_the_choice_of_spot(
    s: Situation, policy: SpotPolicy
) -> None:
    """The core asks the rule with spot free and without, and places on spot pools first:
    exact, because for an idle job spot being there can only turn the answer into SPOT."""
    without = decide(policy, s._replace(spot_available=False))
    assert decide(policy, s._replace(spot_available=True)) in (Choice.SPOT, without)


@settings(max_examples=300, deadline=None)
@given(
    s=situations((Choice.IDLE, Choice.ON_DEMAND)),
    policy=st.sampled_from([SpotPolicy.GREEDY, SpotPolicy.STORMPROOF]),
)
def test_the_moment_wait_until_names_still_waits_and_the_next_second_does_not(
    s: Situation, policy: SpotPolicy
) -> None:
    """The boundary the property above steps around: ``decide`` waits *up to and at*
    ``wait_until``. (A share of 0.5 and whole minutes keep the arithmetic exact.)"""
    s = s._replace(spot_available=False)
    until = wait_until(policy, s, spot_share=0.5)
    assume(until >= s.elapsed_s)
    at = later(s, until - s.elapsed_s)
    assert decide(policy, at, spot_share=0.5) is Choice.IDLE
    assert decide(policy, later(at, 1.0), spot_share=0.5) is Choice.ON_DEMAND


def test_uniform_progress_waits_until_its_line_and_not_a_second_more() -> None:
    # a quarter of the work done, and C(0)/R(0) = 1/2: on the line until 1800 s
    s = Situation(0, 2700, 7200, False, Choice.IDLE, 0, 0, 0, 3600, 7200, 0)
    assert wait_until(SpotPolicy.UNIFORM_PROGRESS, s) == 1800
    assert decide(SpotPolicy.UNIFORM_PROGRESS, later(s, 1800)) is Choice.IDLE
    assert decide(SpotPolicy.UNIFORM_PROGRESS, later(s, 1801)) is Choice.ON_DEMAND


def test_spot_first_takes_spot_whenever_there_is_some_even_with_no_slack() -> None:
    s = Situation(0, 7200, 7200, True, Choice.IDLE, 0, 7200, 0, 7200, 7200, 0)
    assert decide(SpotPolicy.SPOT_FIRST, s) is Choice.SPOT
    assert decide(SpotPolicy.GREEDY, s) is Choice.ON_DEMAND, "the safety net says no"
    assert decide(SpotPolicy.SPOT_FIRST, s._replace(spot_available=False)) is Choice.ON_DEMAND


def test_uniform_progress_with_no_work_at_all_waits_as_long_as_it_is_safe() -> None:
    s = Situation(0, 0, 7200, False, Choice.IDLE, 0, 0, 0, 0, 7200, 0)
    assert wait_until(SpotPolicy.UNIFORM_PROGRESS, s) == 7200
    assert decide(SpotPolicy.UNIFORM_PROGRESS, later(s, 7200)) is Choice.IDLE


def test_uniform_progress_with_a_zero_deadline_goes_on_demand_without_dividing_by_it() -> None:
    s = Situation(60, 60, 0, False, Choice.IDLE, 0, 0, 0, 60, 0, 0)
    assert wait_until(SpotPolicy.UNIFORM_PROGRESS, s) == -math.inf
    assert decide(SpotPolicy.UNIFORM_PROGRESS, s) is Choice.ON_DEMAND


def test_stormproof_with_no_spot_share_waits_only_once_no_work_is_left() -> None:
    done = Situation(0, 0, 7200, False, Choice.IDLE, 0, 0, 0, 3600, 7200, 0)
    assert wait_until(SpotPolicy.STORMPROOF, done, spot_share=0.0) == 7200
    busy = done._replace(remaining_work_s=60)
    assert wait_until(SpotPolicy.STORMPROOF, busy, spot_share=0.0) == -math.inf
    assert decide(SpotPolicy.STORMPROOF, busy, spot_share=0.0) is Choice.ON_DEMAND


def test_greedy_waits_until_the_slack_covers_only_what_spot_can_cost() -> None:
    s = Situation(0, 7200, 36000, False, Choice.IDLE, 0, 600, 0, 7200, 36000, 0)
    assert wait_until(SpotPolicy.GREEDY, s) == 36000 - 7200 - 600
    assert decide(SpotPolicy.GREEDY, later(s, 28200)) is Choice.IDLE
    assert decide(SpotPolicy.GREEDY, later(s, 28201)) is Choice.ON_DEMAND
    # with ticks longer than the risk, a wait must leave a tick and a changeover
    ticked = s._replace(tick_s=1000, changeover_s=300)
    assert wait_until(SpotPolicy.GREEDY, ticked) == 36000 - 7200 - 300 - 1000


# --------------------------------------------------------------------------- the core


def one_task(priority: float, at_risk: float, critical: float) -> list[TaskDef]:
    """Task 0 with the given rank and risk; task 1 sets the workflow's critical path."""
    r = Resources(1, 100)
    return [
        TaskDef("a", 0, (), (), r, priority=priority, estimated_s=60.0, at_risk_s=at_risk),
        TaskDef("b", 1, (), (), r, priority=critical, estimated_s=60.0),
    ]


POOLS = (
    PoolDef("spot", Market.SPOT, Resources(1, 100), 1),
    PoolDef("od", Market.ON_DEMAND, Resources(1, 100), 1),
)


@settings(max_examples=300, deadline=None)
@given(
    policy=st.sampled_from(list(SpotPolicy)),
    rank=seconds,
    extra=seconds,
    at_risk=seconds,
    deadline=st.integers(1, 100).map(lambda k: k * 600.0),
    now=seconds,
)
def test_the_core_places_a_ready_task_by_the_rule(
    policy: SpotPolicy, rank: float, extra: float, at_risk: float, deadline: float, now: float
) -> None:
    """What ``Workflow.markets`` allows is what ``decide`` says for the task: work left its
    rank, the whole the workflow's critical path, at risk its ``at_risk_s``, on no market,
    no changeover, no tick; and a waiting task is woken at ``wait_until``."""
    critical = rank + extra
    wf = Workflow(
        one_task(rank, at_risk, critical),
        RunOptions(pools=POOLS, spot_policy=policy, deadline_s=deadline),
    )
    wf.handle(TimerFired(now, "no-such-timer"))  # only moves the core's clock
    s = Situation(
        now, rank, deadline - now, True, Choice.IDLE, 0, at_risk, 0, critical, deadline, 0
    )
    spot, on_demand, od_from = wf.markets(0)
    assert spot == (decide(policy, s) is Choice.SPOT)
    waits = decide(policy, s._replace(spot_available=False)) is Choice.IDLE
    if waits and now < wait_until(policy, s):
        assert (on_demand, od_from) == (False, wait_until(policy, s))
    else:
        assert (on_demand, od_from) == (True, None)
