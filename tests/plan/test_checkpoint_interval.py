"""Checkpoint-interval advice: Young, Daly (2006) against his published optima, and the edges."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stormproof.plan.checkpoint_interval import (
    Status,
    advice_for_task,
    daly_interval,
    exact_interval,
    expected_wall_time_s,
    mtbf_from_rate,
    overhead,
    suggest_interval,
    young_interval,
)

MIN = 60.0
HOUR = 3600.0
DELTA = 5 * MIN  # Daly's Figs. 3-5: checkpoint cost 5 min, restart 10 min, 500 h of work
RESTART = 10 * MIN
WORK = 500 * HOUR


# --- Daly's published optima ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("mtbf_s", "published_min", "computed_min"),
    [
        (24 * HOUR, 117, 116.690),  # Fig. 3
        (6 * HOUR, 57, 56.713),  # Fig. 4
        (15 * MIN, 9.1, 9.141),  # Fig. 5: delta/(2M) = 1/6, still the delta < 2M branch
    ],
)
def test_daly_reproduces_the_published_optima(
    mtbf_s: float, published_min: float, computed_min: float
) -> None:
    tau_min = daly_interval(DELTA, mtbf_s) / MIN
    assert tau_min == pytest.approx(published_min, abs=0.5)
    assert tau_min == pytest.approx(computed_min, abs=0.001)


def test_the_fifteen_minute_case_by_hand() -> None:
    # sqrt(2 * 5 * 15) * (1 + sqrt(1/6)/3 + (1/6)/9) - 5, in minutes
    by_hand = math.sqrt(150) * (1 + math.sqrt(1 / 6) / 3 + 1 / 54) - 5
    assert by_hand == pytest.approx(9.1409, abs=1e-4)
    assert daly_interval(DELTA, 15 * MIN) / MIN == pytest.approx(by_hand, rel=1e-12)


@pytest.mark.parametrize(
    ("mtbf_s", "tolerance"), [(24 * HOUR, 1e-5), (6 * HOUR, 1e-4), (15 * MIN, 0.004)]
)
def test_daly_is_close_to_the_exact_minimum_of_his_wall_time(
    mtbf_s: float, tolerance: float
) -> None:
    exact = exact_interval(DELTA, mtbf_s)
    assert daly_interval(DELTA, mtbf_s) == pytest.approx(exact, rel=tolerance)
    # and exact really is the minimum of T_w
    wall = expected_wall_time_s(WORK, mtbf_s, RESTART, DELTA, exact)
    for factor in (0.9, 0.99, 1.01, 1.1):
        assert expected_wall_time_s(WORK, mtbf_s, RESTART, DELTA, exact * factor) > wall


def test_the_restart_time_does_not_move_the_optimum() -> None:
    mtbf_s = 6 * HOUR
    best = exact_interval(DELTA, mtbf_s)
    for restart_s in (0.0, RESTART, 2 * HOUR):
        grid = [best * f for f in (0.8, 0.95, 1.0, 1.05, 1.2)]
        walls = [expected_wall_time_s(WORK, mtbf_s, restart_s, DELTA, t) for t in grid]
        assert min(range(len(grid)), key=walls.__getitem__) == 2


def test_expected_wall_time_at_the_published_settings() -> None:
    # T_w = M e^(R/M) (e^((tau+delta)/M) - 1) T_s / tau, evaluated by hand at M = 6 h
    m, tau = 6 * HOUR, daly_interval(DELTA, 6 * HOUR)
    by_hand = m * math.exp(RESTART / m) * (math.exp((tau + DELTA) / m) - 1) * WORK / tau
    assert expected_wall_time_s(WORK, m, RESTART, DELTA, tau) == pytest.approx(by_hand, rel=1e-12)
    assert by_hand / HOUR == pytest.approx(610.2, abs=0.1)


# --- Young versus Daly ----------------------------------------------------------------------


def test_young_is_the_first_order_term() -> None:
    assert young_interval(DELTA, 24 * HOUR) / MIN == pytest.approx(120.0)
    assert young_interval(DELTA, 15 * MIN) / MIN == pytest.approx(math.sqrt(150))


@given(
    delta_s=st.floats(min_value=1e-3, max_value=1e5),
    ratio=st.floats(min_value=1e-6, max_value=0.4999),
)
def test_daly_is_below_young_and_close_to_it_when_checkpoints_are_cheap(
    delta_s: float, ratio: float
) -> None:
    mtbf_s = delta_s / (2 * ratio)  # ratio = delta / (2M) < 1/2
    young, daly = young_interval(delta_s, mtbf_s), daly_interval(delta_s, mtbf_s)
    assert 0 < daly < young
    if ratio < 1e-4:
        assert daly == pytest.approx(young, rel=0.02)


@given(
    delta_s=st.floats(min_value=1e-2, max_value=1e5),
    ratio=st.floats(min_value=1e-6, max_value=0.25),
)
def test_daly_beats_young_on_daly_wall_time(delta_s: float, ratio: float) -> None:
    mtbf_s = delta_s / (2 * ratio)
    at_daly = overhead(daly_interval(delta_s, mtbf_s), delta_s, mtbf_s, RESTART)
    at_young = overhead(young_interval(delta_s, mtbf_s), delta_s, mtbf_s, RESTART)
    assert at_daly <= at_young * (1 + 1e-9)


# --- edges ----------------------------------------------------------------------------------


def test_delta_at_least_2m_gives_m() -> None:
    assert daly_interval(2 * MIN, 1 * MIN) == 1 * MIN  # delta == 2M: the boundary is capped
    assert daly_interval(10 * MIN, 1 * MIN) == 1 * MIN
    just_below = daly_interval(2 * MIN - 1e-9, 1 * MIN)
    assert just_below > 0 and math.isfinite(just_below)


def test_zero_and_infinite_inputs() -> None:
    assert young_interval(0, HOUR) == daly_interval(0, HOUR) == exact_interval(0, HOUR) == 0
    assert young_interval(0, math.inf) == daly_interval(0, math.inf) == 0
    assert young_interval(DELTA, math.inf) == daly_interval(DELTA, math.inf) == math.inf
    assert exact_interval(DELTA, math.inf) == math.inf
    assert young_interval(DELTA, 0) == 0
    assert daly_interval(DELTA, 0) == 0  # delta >= 2M = 0
    assert expected_wall_time_s(0, HOUR, RESTART, DELTA, 60) == 0
    assert expected_wall_time_s(HOUR, 0, RESTART) == math.inf
    assert expected_wall_time_s(HOUR, math.inf, RESTART, DELTA, 600) == pytest.approx(
        HOUR * (600 + DELTA) / 600
    )


@pytest.mark.parametrize("bad", [-1.0, math.nan])
def test_negative_or_nan_inputs_are_refused(bad: float) -> None:
    for fn in (young_interval, daly_interval, exact_interval):
        with pytest.raises(ValueError, match="must be a number >= 0"):
            fn(bad, HOUR)
        with pytest.raises(ValueError, match="must be a number >= 0"):
            fn(DELTA, bad)
    with pytest.raises(ValueError, match="restart_s"):
        suggest_interval(DELTA, HOUR, bad)
    with pytest.raises(ValueError, match="interval_s"):
        expected_wall_time_s(HOUR, HOUR, RESTART, DELTA, 0)


def test_no_checkpoint_means_one_segment_that_starts_over() -> None:
    # P(no interruption in T) = e^(-T/M); Daly's T_w with tau = T_s and delta = 0
    m, work = 2 * HOUR, HOUR
    want = m * math.exp(RESTART / m) * math.expm1(work / m)
    assert expected_wall_time_s(work, m, RESTART) == pytest.approx(want)
    assert expected_wall_time_s(work, m, RESTART, DELTA, 2 * HOUR) == pytest.approx(want)


def test_hopeless_work_is_infinite_not_an_overflow() -> None:
    assert expected_wall_time_s(1e6 * HOUR, MIN, RESTART) == math.inf


def test_mtbf_from_rate() -> None:
    assert mtbf_from_rate(None) is None
    assert mtbf_from_rate(0) == math.inf
    assert mtbf_from_rate(0.5) == 2 * HOUR
    with pytest.raises(ValueError):
        mtbf_from_rate(-1)


# --- suggest_interval -----------------------------------------------------------------------


def test_suggestion_at_six_hours() -> None:
    s = suggest_interval(DELTA, 6 * HOUR, RESTART)
    assert s.status is Status.DALY
    assert s.interval_s == pytest.approx(daly_interval(DELTA, 6 * HOUR))
    assert s.young_interval_s == pytest.approx(60 * MIN)
    assert s.overhead == pytest.approx(610.2 / 500 - 1, abs=1e-3)
    assert s.reason == ""


@pytest.mark.parametrize(
    ("cost", "mtbf", "status"),
    [
        (None, HOUR, Status.UNKNOWN_COST),
        (DELTA, None, Status.UNKNOWN_RATE),
        (None, None, Status.UNKNOWN_COST),
        (DELTA, math.inf, Status.NO_INTERRUPTIONS),
        (DELTA, 0.0, Status.ALWAYS_INTERRUPTED),
        (0.0, HOUR, Status.FREE_CHECKPOINTS),
    ],
)
def test_no_interval_says_why(cost: float | None, mtbf: float | None, status: Status) -> None:
    s = suggest_interval(cost, mtbf, RESTART)
    assert s.status is status
    assert s.interval_s is None and s.overhead is None
    assert s.reason


def test_capped_suggestion() -> None:
    s = suggest_interval(10 * MIN, 2 * MIN, RESTART)
    assert s.status is Status.DALY_CAPPED
    assert s.interval_s == 2 * MIN
    assert "twice the mean time between interruptions" in s.reason


# --- advice_for_task ------------------------------------------------------------------------


def test_advice_text_and_json() -> None:
    advice = advice_for_task(
        "production-run",
        checkpoint_cost_s=DELTA,
        interruption_rate_per_h=1 / 6,
        restart_s=RESTART,
        pool="spot-c5",
        runtime_s=20 * HOUR,
        configured_interval_s=10 * MIN,
    )
    assert advice.text == (
        "production-run: checkpoint every 56m 43s (Daly; a checkpoint takes 5m 00s, "
        "interruptions every 6h 00m on pool 'spot-c5' on average): 22% expected overhead; "
        "at checkpoint_interval 10m 00s: 57%"
    )
    data = advice.data
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["status"] == "daly"
    assert data["interval_s"] == pytest.approx(3402.78, abs=0.01)
    assert data["young_interval_s"] == pytest.approx(3600)
    assert data["mtbf_s"] == pytest.approx(6 * HOUR)
    assert data["expected_overhead"] == pytest.approx(0.2204, abs=1e-3)
    assert data["configured_overhead"] > data["expected_overhead"]
    assert data["shorter_than_interval"] is False


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"checkpoint_cost_s": None}, "its checkpoint cost is unknown"),
        ({"interruption_rate_per_h": None}, "pool 'spot' has no interruption_rate"),
        ({"interruption_rate_per_h": 0.0}, "no interruptions are expected"),
        ({"runtime_s": 60.0}, "the task is shorter than that"),
        ({"interruption_rate_per_h": 100.0}, "over 1000% expected overhead"),
    ],
)
def test_advice_lines(kwargs: dict[str, float | None], words: str) -> None:
    args: dict[str, float | None] = {
        "checkpoint_cost_s": DELTA,
        "interruption_rate_per_h": 1.0,
        "runtime_s": 10 * HOUR,
    }
    args.update(kwargs)
    advice = advice_for_task(
        "t",
        checkpoint_cost_s=args["checkpoint_cost_s"],
        interruption_rate_per_h=args["interruption_rate_per_h"],
        runtime_s=args["runtime_s"],
        restart_s=RESTART,
        pool="spot",
    )
    assert words in advice.text
    assert "\n" not in advice.text
    json.dumps(advice.data, allow_nan=False)  # no inf or nan leaks into JSON


@pytest.mark.parametrize(
    ("unsaved_in", "fix"),
    [
        (
            None,
            "declare checkpoint_cost, or run it once and plan with --from-run RUN"
            " to use the save time measured",
        ),
        ("r1", "declare checkpoint_cost; run r1 saved no checkpoint of it"),
    ],
)
def test_an_unknown_checkpoint_cost_says_how_to_know_it(unsaved_in: str | None, fix: str) -> None:
    advice = advice_for_task(
        "t",
        checkpoint_cost_s=None,
        interruption_rate_per_h=1.0,
        restart_s=RESTART,
        pool="spot",
        unsaved_in=unsaved_in,
    )
    assert advice.text == (
        f"t: no checkpoint interval advice on pool 'spot': its checkpoint cost is unknown ({fix})"
    )


def test_advice_without_interruptions_prices_the_configured_interval() -> None:
    advice = advice_for_task(
        "t",
        checkpoint_cost_s=DELTA,
        interruption_rate_per_h=0.0,
        restart_s=RESTART,
        configured_interval_s=10 * MIN,
    )
    assert advice.data["status"] == "no_interruptions"
    assert advice.data["mtbf_s"] is None  # inf has no JSON
    assert advice.data["configured_overhead"] == pytest.approx(0.5)  # 5 min every 10 min
    assert advice.text.endswith("at checkpoint_interval 10m 00s: 50%")
