"""The one-job model and its policies: hand-worked traces, each rule, and properties.

The hand-worked cases use 600 s ticks and a 720 s (0.2 h) changeover, the Table 3 setup,
so that a changeover spans a tick and a fifth. Their expected numbers are worked out in
the comments, from the model's rules, not from running the code.
"""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stormproof.policy import (
    ONLINE_POLICIES,
    Choice,
    GreedyPolicy,
    JobResult,
    Observation,
    OnDemandPolicy,
    PolicyError,
    StormproofPolicy,
    UniformProgressPolicy,
    simulate_job,
    solve_optimal,
)
from stormproof.policy.grid import Grid
from stormproof.traces import Trace

H = 3600.0
D = 720.0  # the changeover: 1.2 ticks of 600 s


def trace(*counts: int, gap: float = 600.0) -> Trace:
    return Trace(gap, counts, "hand")


def hours(seconds: float) -> float:
    return seconds / H


def same(result: JobResult, od_s: float, spot_s: float, changeover_s: float, end_s: float) -> None:
    assert result.od_hours == pytest.approx(hours(od_s), abs=1e-12)
    assert result.spot_hours == pytest.approx(hours(spot_s), abs=1e-12)
    assert result.changeover_hours == pytest.approx(hours(changeover_s), abs=1e-12)
    assert result.finished_at_s == pytest.approx(end_s, abs=1e-9)


# --------------------------------------------------------------------------- hand-worked


def test_on_demand_pays_one_changeover_then_runs_to_the_end() -> None:
    # 720 s changeover, then 1200 s of progress: done at 1920 s, of a 3000 s deadline.
    r = simulate_job(OnDemandPolicy(), trace(1, 1, 1, 1, 1), 0, 1200, 3000, D)
    same(r, od_s=1200, spot_s=0, changeover_s=720, end_s=1920)
    assert r.met_deadline and r.changeovers == 1


def test_greedy_takes_spot_that_is_always_there() -> None:
    # slack 1800 >= 2d = 1440: spot from the first tick, done at 720 + 1200 = 1920 s.
    r = simulate_job(GreedyPolicy(), trace(1, 1, 1, 1, 1), 0, 1200, 3000, D)
    same(r, od_s=0, spot_s=1200, changeover_s=720, end_s=1920)


def test_a_preemption_loses_the_changeover_and_greedy_waits_then_falls_back() -> None:
    # C = 600, R = 3600. t=0: spot (slack 3000); its changeover is cut at 600 s (600 s lost).
    # t=600: slack 2400, idle; t=1200: slack 1800, idle; t=1800: slack 1200 < 2d: on-demand,
    # 720 s changeover + 600 s of work: done at 3120 s.
    r = simulate_job(GreedyPolicy(), trace(1, 0, 0, 0, 0, 0), 0, 600, 3600, D)
    same(r, od_s=600, spot_s=0, changeover_s=600 + 720, end_s=3120)
    assert r.met_deadline and r.changeovers == 2


def test_one_window_used_then_on_demand_for_the_rest() -> None:
    # [0,1,1,1,0,0], C = 1200, R = 3600. Greedy idles tick 0 (slack 2400), takes spot at 600:
    # changeover to 1320, 1080 s of progress to 2400; preempted; slack 1080 < 2d: on-demand,
    # 720 + 120 s: done at 3240 s. No schedule gets more than those 1080 s of spot.
    t = trace(0, 1, 1, 1, 0, 0)
    r = simulate_job(GreedyPolicy(), t, 0, 1200, 3600, D)
    same(r, od_s=120, spot_s=1080, changeover_s=1440, end_s=3240)
    assert solve_optimal(t, 0, 1200, 3600, D).spot_s == 1080


def test_greedy_waits_too_long_and_uniform_progress_holds_on_demand_too_long() -> None:
    # [0,0,0,0,0,1,1,1,1,1], C = 3000, R = 6000 (slack 3000).
    t = trace(0, 0, 0, 0, 0, 1, 1, 1, 1, 1)
    # Greedy idles at slack 3000, 2400, 1800, goes on-demand at 1800 (slack 1200 < 2d) and is
    # stuck there: 1800 + 720 + 3000 = 5520 s, no spot.
    same(simulate_job(GreedyPolicy(), t, 0, 3000, 6000, D), 3000, 0, 720, 5520)
    # Uniform progress: at 600 s progress 0 < 600 * C/R = 300 -> on-demand (progress from
    # 1320). At 3000 (1680 done) and 3600 (2280) it is below the line at t + 2d ((t + 1440)/2
    # = 2220, 2520) so it stays; at 4200 (2880 >= 2820) it takes spot with slack 1680:
    # 720 s changeover + the last 120 s: done at 5040 s.
    r = simulate_job(UniformProgressPolicy(), t, 0, 3000, 6000, D)
    same(r, od_s=2880, spot_s=120, changeover_s=1440, end_s=5040)
    # The optimum runs on-demand twice for two ticks with an idle tick between (480 s of
    # progress each: 1200 - 720), then spot from 3000 s: 720 s changeover and the other
    # 2040 s, done at 5760 s. One run of three ticks would give 1080 s and leave 1920 s for
    # spot: paying a third changeover is a finer way to wait than whole idle ticks.
    plan = solve_optimal(t, 0, 3000, 6000, D)
    assert plan.spot_s == 2040
    same(simulate_job(plan, t, 0, 3000, 6000, D), 960, 2040, 3 * 720, 5760)


def test_the_job_stops_paying_the_moment_it_is_done() -> None:
    # 100 s of work on on-demand: 720 s changeover + 100 s, mid-tick.
    r = simulate_job(OnDemandPolicy(), trace(0), 0, 100, 3600, D)
    same(r, od_s=100, spot_s=0, changeover_s=720, end_s=820)


def test_a_job_of_no_work_is_done_at_once() -> None:
    r = simulate_job(GreedyPolicy(), trace(1), 0, 0, 600, D)
    same(r, 0, 0, 0, 0)
    assert r.met_deadline
    plan = solve_optimal(trace(1), 0, 0, 600, D)
    assert plan.spot_s == 0 and plan.choices == () and plan.feasible


def test_when_even_on_demand_is_too_late_the_miss_is_reported() -> None:
    # 3000 s of work + 720 s changeover cannot fit in 3600 s.
    r = simulate_job(OnDemandPolicy(), trace(1), 0, 3000, 3600, D)
    assert not r.met_deadline and r.finished_at_s == 3720
    plan = solve_optimal(trace(1), 0, 3000, 3600, D)
    assert not plan.feasible and plan.spot_s == 0


def test_a_job_that_never_finishes_says_so() -> None:
    class Lazy:
        name = "lazy"

        def decide(self, obs: Observation) -> Choice:
            return Choice.IDLE

    r = simulate_job(Lazy(), trace(1), 0, 600, 1200, D)
    assert r.finished_at_s == float("inf") and not r.met_deadline


def test_spot_while_unavailable_is_a_policy_bug() -> None:
    class Reckless:
        name = "reckless"

        def decide(self, obs: Observation) -> Choice:
            return Choice.SPOT

    with pytest.raises(PolicyError, match="'reckless' chose spot at 600 s"):
        simulate_job(Reckless(), trace(1, 0), 0, 6000, 9000, D)


def test_start_ticks_wrap_around_the_trace() -> None:
    t = trace(0, 0, 1, 1, 1, 1)
    a = simulate_job(GreedyPolicy(), t, 2, 1200, 3000, D)
    b = simulate_job(GreedyPolicy(), t, 8, 1200, 3000, D)
    assert a == b and a.spot_hours == pytest.approx(hours(1200))


def test_n_node_traces_count_spot_as_available_from_nodes_instances() -> None:
    t = trace(3, 3, 3, 3, 3)
    assert simulate_job(GreedyPolicy(), t, 0, 1200, 3000, D, nodes=3).spot_hours > 0
    assert simulate_job(GreedyPolicy(), t, 0, 1200, 3000, D, nodes=4).spot_hours == 0


def test_what_a_policy_sees() -> None:
    seen: list[Observation] = []

    class Spy:
        name = "spy"

        def decide(self, obs: Observation) -> Choice:
            seen.append(obs)
            return Choice.ON_DEMAND

    simulate_job(Spy(), trace(1, 1, 0), 0, 1200, 3000, D)
    first, second, third = seen[:3]
    assert first == Observation(0, 1200, 3000, True, Choice.IDLE, D, D, 600, 1200, 3000, 0)
    assert (second.market, second.remaining_work_s) == (Choice.ON_DEMAND, 1200)
    assert second.spot_streak_s == 600 and third.spot_streak_s == 0  # spot just went away
    assert third.remaining_work_s == 720 and third.slack_s == 1800 - 720


# --------------------------------------------------------------------------- rules


def obs(**changes: object) -> Observation:
    """An observation of the Table 3 job an hour in, idle, spot up, with room to move."""
    base = Observation(
        elapsed_s=H,
        remaining_work_s=40 * H,
        remaining_time_s=59 * H,
        spot_available=True,
        market=Choice.IDLE,
        changeover_s=D,
        at_risk_s=D,
        tick_s=600,
        compute_s=48 * H,
        deadline_s=60 * H,
        spot_streak_s=0,
    )
    return base._replace(**changes)


def tight(slack_s: float, **changes: object) -> Observation:
    return obs(remaining_work_s=10 * H, remaining_time_s=10 * H + slack_s, **changes)


def test_every_online_policy_stays_on_spot_until_preempted() -> None:
    for name, policy in ONLINE_POLICIES.items():
        if name != "on_demand":
            assert policy.decide(tight(0, market=Choice.SPOT)) is Choice.SPOT, name


def test_greedy_rules() -> None:
    g = GreedyPolicy()
    assert g.decide(tight(2 * D)) is Choice.SPOT  # exactly enough for a changeover and back
    assert g.decide(tight(2 * D - 1)) is Choice.ON_DEMAND  # safety net
    assert g.decide(tight(2 * D, spot_available=False)) is Choice.IDLE
    assert g.decide(tight(2 * D - 1, spot_available=False)) is Choice.ON_DEMAND
    assert g.decide(obs(market=Choice.ON_DEMAND)) is Choice.ON_DEMAND  # never leaves it


def test_waiting_keeps_a_tick_and_a_changeover_of_slack_when_ticks_are_long() -> None:
    # With 1000 s ticks a wait costs more than a changeover: slack - tick must stay >= d.
    g = GreedyPolicy()
    assert g.decide(tight(1719, spot_available=False, tick_s=1000)) is Choice.ON_DEMAND
    assert g.decide(tight(1720, spot_available=False, tick_s=1000)) is Choice.IDLE


def test_uniform_progress_rules() -> None:
    up = UniformProgressPolicy()
    line = 48 / 60  # progress expected per second
    at = 10 * H
    on_line = at * line
    behind = obs(elapsed_s=at, remaining_work_s=48 * H - on_line + 1, spot_available=False)
    assert up.decide(behind) is Choice.ON_DEMAND  # rule 1
    assert up.decide(behind._replace(remaining_work_s=48 * H - on_line)) is Choice.IDLE
    assert up.decide(behind._replace(spot_available=True)) is Choice.SPOT  # rule 2: risks
    hysteresis = (at + 2 * D) * line
    on_od = obs(elapsed_s=at, market=Choice.ON_DEMAND, remaining_work_s=48 * H - hysteresis + 1)
    assert up.decide(on_od) is Choice.ON_DEMAND  # rule 3: not yet ahead at t + 2d
    ahead = on_od._replace(remaining_work_s=48 * H - hysteresis)
    assert up.decide(ahead) is Choice.SPOT
    assert up.decide(ahead._replace(spot_available=False)) is Choice.ON_DEMAND  # not idle
    assert up.decide(tight(2 * D - 1)) is Choice.ON_DEMAND  # rule 4: safety net


def test_stormproof_waits_only_when_spot_could_finish_the_job() -> None:
    sp = StormproofPolicy()
    idle = obs(spot_available=False, remaining_time_s=50 * H)
    assert sp.decide(idle._replace(remaining_work_s=35 * H - 1)) is Choice.IDLE  # 0.7 * 50 = 35
    assert sp.decide(idle._replace(remaining_work_s=35 * H + 1)) is Choice.ON_DEMAND
    # ... and never when it would leave too little slack (here 2d - 1)
    assert sp.decide(tight(2 * D - 1, spot_available=False)) is Choice.ON_DEMAND


def test_stormproof_hops_from_on_demand_onto_new_windows_only_with_slack_to_spare() -> None:
    sp = StormproofPolicy()
    # 10 h left: a brand-new window is worth the gamble with 2d + 0.16 * 10 h of slack
    spare = 2 * D + 0.16 * 10 * H
    rich = obs(market=Choice.ON_DEMAND, remaining_time_s=10 * H, remaining_work_s=10 * H - spare)
    assert sp.decide(rich) is Choice.SPOT
    poor = rich._replace(remaining_work_s=rich.remaining_work_s + 1)
    assert sp.decide(poor) is Choice.ON_DEMAND  # a brand-new window: often a single tick
    assert sp.decide(poor._replace(spot_streak_s=600)) is Choice.SPOT  # it lasted a tick
    assert sp.decide(poor._replace(market=Choice.IDLE)) is Choice.SPOT  # from idle: one hop


# --------------------------------------------------------------------------- properties

GAPS = st.sampled_from([300.0, 600.0])
CHANGEOVERS = st.sampled_from([0.0, 300.0, 720.0, 900.0])


@st.composite
def jobs(draw: st.DrawFn, max_ticks: int = 24) -> tuple[Trace, int, float, float, float]:
    gap = draw(GAPS)
    counts = draw(st.lists(st.integers(0, 1), min_size=1, max_size=max_ticks))
    ticks = draw(st.integers(1, max_ticks))
    deadline = draw(st.integers(1, ticks * int(gap) // 60)) * 60.0
    compute = draw(st.integers(0, int(deadline) // 60)) * 60.0
    return (
        Trace(gap, tuple(counts), "random"),
        draw(st.integers(0, 50)),
        compute,
        deadline,
        draw(CHANGEOVERS),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jobs())
def test_no_policy_misses_a_deadline_that_on_demand_can_meet(
    job: tuple[Trace, int, float, float, float],
) -> None:
    t, start, c, r, d = job
    feasible = c + d <= r or c == 0
    assert simulate_job(OnDemandPolicy(), t, start, c, r, d).met_deadline == feasible
    plan = solve_optimal(t, start, c, r, d)
    assert plan.feasible == feasible
    results = {n: simulate_job(p, t, start, c, r, d) for n, p in ONLINE_POLICIES.items()}
    results["optimal"] = simulate_job(plan, t, start, c, r, d)
    for name, res in results.items():
        if feasible:
            assert res.met_deadline, name
            assert res.od_hours + res.spot_hours == pytest.approx(c / H, abs=1e-9), name


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jobs())
def test_the_optimum_bounds_every_online_policy_on_every_trace(
    job: tuple[Trace, int, float, float, float],
) -> None:
    t, start, c, r, d = job
    plan = solve_optimal(t, start, c, r, d)
    if not plan.feasible:
        return
    replay = simulate_job(plan, t, start, c, r, d)
    assert replay.met_deadline
    assert replay.spot_hours == pytest.approx(plan.spot_s / H, abs=1e-9)  # it does what it says
    for name, policy in ONLINE_POLICIES.items():
        online = simulate_job(policy, t, start, c, r, d)
        assert online.spot_hours <= replay.spot_hours + 1e-9, name


@settings(max_examples=100, deadline=None)
@given(jobs())
def test_same_inputs_same_results(job: tuple[Trace, int, float, float, float]) -> None:
    t, start, c, r, d = job
    for policy in ONLINE_POLICIES.values():
        assert simulate_job(policy, t, start, c, r, d) == simulate_job(policy, t, start, c, r, d)
    assert solve_optimal(t, start, c, r, d) == solve_optimal(t, start, c, r, d)


def markov_trace(rng: random.Random, ticks: int) -> Trace:
    """Spot that comes and goes in runs, like the real traces (random run lengths)."""
    p_up, p_down = rng.uniform(0.05, 0.4), rng.uniform(0.05, 0.4)
    up, counts = rng.random() < 0.5, []
    for _ in range(ticks):
        counts.append(int(up))
        up = rng.random() >= p_down if up else rng.random() < p_up
    return Trace(600.0, tuple(counts), "markov")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_average_greedy_then_uniform_progress_then_the_optimum(seed: int) -> None:
    # 40 random traces of 20 h, a 16 h job due in 20 h (the Table 3 job fraction, 0.8)
    rng = random.Random(seed)
    spot: dict[str, list[float]] = {"greedy": [], "uniform_progress": [], "stormproof": []}
    best: list[float] = []
    for _ in range(40):
        t = markov_trace(rng, 120)
        for name in spot:
            res = simulate_job(ONLINE_POLICIES[name], t, 0, 16 * H, 20 * H, D)
            spot[name].append(res.spot_hours)
        best.append(solve_optimal(t, 0, 16 * H, 20 * H, D).spot_s / H)
    mean = {name: statistics.fmean(v) for name, v in spot.items()}
    assert mean["greedy"] < mean["uniform_progress"] < statistics.fmean(best)
    assert mean["uniform_progress"] < mean["stormproof"] < statistics.fmean(best)


def test_the_grid_reads_float_hours_as_the_seconds_they_mean() -> None:
    g = Grid.of(600, 48 * H, 60 * H, 0.2 * H)
    assert (g.unit_s, g.gap, g.changeover, g.compute, g.deadline) == (120, 5, 6, 1440, 1800)
    assert Grid.of(600, 0.1 * H, 0.3 * H, 0).compute == 3  # 360 s in units of 120 s
    with pytest.raises(ValueError, match="tick length must be > 0"):
        Grid.of(0, 1, 1, 1)
    with pytest.raises(ValueError, match="compute time must be a finite number"):
        Grid.of(600, -1, 1, 1)
