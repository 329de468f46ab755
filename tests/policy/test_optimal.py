"""The offline optimum is exact: it matches an exhaustive search over every schedule.

The exhaustive search plays every sequence of per-tick choices (3^ticks of them) through
the same simulator the policies run in, so "exact" means exact for that model — tick
boundaries, changeovers longer than a tick, preemptions mid-changeover, finishing mid-tick.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stormproof.policy import Choice, Observation, simulate_job, solve_optimal
from stormproof.traces import Trace, load_trace

H = 3600.0
REAL = (
    Path(__file__).resolve().parents[2].parent
    / "shared/data/spot-traces/availability/1-node/aws-10-26-2022/us-west-2a_v100_8.json"
)


@dataclass(frozen=True)
class Script:
    """Plays a fixed sequence of choices; spot asked for when there is none means idle."""

    choices: tuple[Choice, ...]
    name: str = "script"

    def decide(self, obs: Observation) -> Choice:
        k = round(obs.elapsed_s / obs.tick_s)
        choice = self.choices[k] if k < len(self.choices) else Choice.ON_DEMAND
        if choice is Choice.SPOT and not obs.spot_available:
            return Choice.IDLE
        return choice


def best_by_brute_force(t: Trace, start: int, c: float, r: float, d: float) -> float | None:
    ticks = -(-int(r) // int(t.gap_s))
    best: float | None = None
    for seq in itertools.product(list(Choice), repeat=ticks):
        res = simulate_job(Script(seq), t, start, c, r, d)
        if res.met_deadline and (best is None or res.spot_hours > best):
            best = res.spot_hours
    return best


@settings(max_examples=150, deadline=None)
@given(
    gap=st.sampled_from([5.0, 10.0]),
    counts=st.lists(st.integers(0, 1), min_size=1, max_size=8),
    ticks=st.integers(1, 6),
    d=st.sampled_from([0.0, 2.0, 5.0, 6.0, 10.0, 12.0, 13.0]),
    data=st.data(),
)
def test_the_optimum_equals_an_exhaustive_search(
    gap: float, counts: list[int], ticks: int, d: float, data: st.DataObject
) -> None:
    t = Trace(gap, tuple(counts), "tiny")
    r = float(data.draw(st.integers(1, ticks * int(gap))))
    c = float(data.draw(st.integers(0, int(r))))
    start = data.draw(st.integers(0, 10))
    brute = best_by_brute_force(t, start, c, r, d)
    plan = solve_optimal(t, start, c, r, d)
    if brute is None:
        assert not plan.feasible
        return
    assert plan.feasible
    assert plan.spot_s / H == pytest.approx(brute, abs=1e-12)
    replay = simulate_job(plan, t, start, c, r, d)
    assert replay.met_deadline and replay.spot_hours == pytest.approx(brute, abs=1e-12)


def test_a_changeover_longer_than_a_tick_is_counted_to_the_second() -> None:
    # Two ticks of spot from a standing start: 2 * 600 - 720 = 480 s of progress, exactly;
    # a job of 480 s fits, one of 481 s does not (it would need on-demand: 720 + more).
    t = Trace(600.0, (1, 1, 0, 0), "two")
    assert solve_optimal(t, 0, 480, 1200, 720).spot_s == 480
    assert solve_optimal(t, 0, 481, 1200, 720).feasible is False
    assert solve_optimal(t, 0, 481, 2400, 720).spot_s < 481


def test_a_plan_lists_one_choice_per_tick_up_to_the_finish() -> None:
    plan = solve_optimal(Trace(600.0, (1, 1, 1, 1), "up"), 0, 1200, 2400, 720)
    assert plan.choices == (Choice.SPOT,) * 4  # 720 + 1200 = 1920 s: done in the fourth tick
    assert plan.spot_s == 1200


@pytest.mark.skipif(not REAL.exists(), reason=f"{REAL.parents[5]} is absent: no real traces")
def test_the_table_3_job_on_a_real_trace_replays_exactly() -> None:
    t = load_trace(REAL, first_ticks=1872)
    for start in (0, 500, 1800):  # the last one wraps past the 13 days
        plan = solve_optimal(t, start, 48 * H, 60 * H, 0.2 * H)
        replay = simulate_job(plan, t, start, 48 * H, 60 * H, 0.2 * H)
        assert replay.met_deadline
        assert replay.spot_hours == pytest.approx(plan.spot_s / H, abs=1e-9)
        assert 0 < plan.spot_s < 48 * H


def test_a_grid_too_fine_for_an_exact_dp_is_refused_with_the_fix() -> None:
    # 1 s ticks over a day with half a day of slack: 86,400 ticks x 43,201 wastes
    with pytest.raises(ValueError, match="too many for an exact DP; round the durations"):
        solve_optimal(Trace(1.0, (1,), "fine"), 0, 43_200, 86_400, 1)
