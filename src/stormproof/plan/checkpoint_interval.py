"""How often a task should checkpoint: Young's and Daly's optimum intervals, and their cost.

A checkpoint costs time (``δ``, writing it); an interruption costs the work
done since the last one, plus a restart (``R``). Checkpointing often wastes
time on checkpoints, rarely wastes it on rework. With interruptions arriving
at random (exponentially distributed, mean time between them ``M``):

* **Young (1974)**, first order: ``τ = √(2δM)``.
* **Daly (2006)**, "A higher order estimate of the optimum checkpoint
  interval for restart dumps", Future Generation Computer Systems 22(3):
  303–312, the perturbation solution of his complete model::

      τ = √(2δM) · [1 + (1/3)·√(δ/(2M)) + (1/9)·(δ/(2M))] − δ     for δ < 2M
      τ = M                                                        for δ ≥ 2M

  ``τ`` is the *compute* time between two checkpoints, not counting ``δ``
  itself. The restart time ``R`` does not move the optimum: it multiplies
  the expected wall time by the constant ``e^(R/M)``.
* **Daly's expected wall time** (the complete model) for ``T_s`` of work
  checkpointed every ``τ``, exact for exponential interruptions::

      T_w = M · e^(R/M) · (e^((τ+δ)/M) − 1) · T_s / τ

  which is what ``plan`` shows as the time wasted at an interval; its exact
  minimiser solves ``e^((τ+δ)/M)·(1 − τ/M) = 1`` (``exact_interval``).

Daly's published optima (his Figs. 3–5: T_s = 500 h, R = 10 min, δ = 5 min;
"117", "57" and "9.1 min") are reproduced by the tests: M = 24 h → 116.69
min, M = 6 h → 56.71 min, M = 15 min → 9.14 min. No special reading is
needed: they are the δ < 2M branch taken literally, in minutes, with τ
excluding δ. At M = 15 min, δ/(2M) = 1/6, √(2δM) = √150 = 12.247, and
12.247 · (1 + 0.1361 + 0.0185) − 5 = 9.141. The exact minimiser of T_w is
9.167 min there, so Daly's series is within 0.3 % even with an interruption
about every checkpoint interval (and within 0.0002 % at 24 h). Young's
√(2δM) says 12.25 min at M = 15 min, a third too long where interruptions
are frequent (3 % at 24 h), which is why the plan uses Daly's form and shows
Young's beside it.

All times are seconds here. ``suggest_interval`` turns the formula into
advice (saying why when it cannot give any) and ``advice_for_task`` into the
plan's one line and JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

from stormproof.plan.estimate import human_duration

# --- the formulas ---------------------------------------------------------------------------


def young_interval(delta_s: float, mtbf_s: float) -> float:
    """Young's first-order optimum √(2δM): seconds of work between two checkpoints."""
    _check_non_negative(delta_s=delta_s, mtbf_s=mtbf_s)
    if delta_s == 0:
        return 0.0  # free checkpoints: as often as you like (also for M = inf)
    return math.sqrt(2.0 * delta_s * mtbf_s)


def daly_interval(delta_s: float, mtbf_s: float) -> float:
    """Daly's higher-order optimum (module docstring): seconds of work between checkpoints.

    For δ ≥ 2M it returns M: a checkpoint then takes longer than two mean
    intervals between interruptions, the series no longer converges, and
    Daly's advice is to checkpoint once per M (and expect heavy losses).
    """
    _check_non_negative(delta_s=delta_s, mtbf_s=mtbf_s)
    if delta_s == 0:
        return 0.0
    if delta_s >= 2.0 * mtbf_s:
        return mtbf_s
    ratio = delta_s / (2.0 * mtbf_s)
    return (
        math.sqrt(2.0 * delta_s * mtbf_s) * (1.0 + math.sqrt(ratio) / 3.0 + ratio / 9.0) - delta_s
    )


def exact_interval(delta_s: float, mtbf_s: float) -> float:
    """The interval that minimises Daly's ``T_w`` exactly, for checking the approximations.

    Setting dT_w/dτ = 0 gives, with u = τ/M and d = δ/M, ``u + d + ln(1 − u)
    = 0``: decreasing in u on (0, 1) from d to −∞, so it has one root, found
    by bisection (the log form keeps precision when u is tiny).
    """
    _check_non_negative(delta_s=delta_s, mtbf_s=mtbf_s)
    if delta_s == 0:
        return 0.0
    if math.isinf(mtbf_s):
        return math.inf
    if mtbf_s == 0:
        return 0.0
    d = delta_s / mtbf_s
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if mid in (lo, hi):
            break
        if mid + d + math.log1p(-mid) > 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0 * mtbf_s


def expected_wall_time_s(
    work_s: float,
    mtbf_s: float,
    restart_s: float,
    checkpoint_cost_s: float = 0.0,
    interval_s: float | None = None,
) -> float:
    """Daly's expected wall time for ``work_s`` of work (``T_w``; module docstring).

    ``interval_s`` is the work between checkpoints; ``None``, or an interval
    at least as long as the work, means no checkpoint: one segment of
    ``work_s`` that starts over after each interruption. ``mtbf_s`` may be
    ``inf`` (no interruptions: the work plus the checkpoints). ``inf`` comes
    back when the work cannot be expected to finish in floating point.
    """
    _check_non_negative(
        work_s=work_s, mtbf_s=mtbf_s, restart_s=restart_s, checkpoint_cost_s=checkpoint_cost_s
    )
    if interval_s is not None and not interval_s > 0:
        raise ValueError(f"interval_s must be more than 0, got {interval_s!r}")
    if work_s == 0:
        return 0.0
    if interval_s is None or interval_s >= work_s:
        return work_s * _wall_ratio(work_s, 0.0, mtbf_s, restart_s)
    return work_s * _wall_ratio(interval_s, checkpoint_cost_s, mtbf_s, restart_s)


def overhead(interval_s: float, checkpoint_cost_s: float, mtbf_s: float, restart_s: float) -> float:
    """Expected wall time over work, minus one, checkpointing every ``interval_s`` (Daly's T_w).

    For work much longer than the interval (T_w is linear in the work); 0.2
    means 20 % longer than with no interruptions and free checkpoints.
    """
    _check_non_negative(checkpoint_cost_s=checkpoint_cost_s, mtbf_s=mtbf_s, restart_s=restart_s)
    if not interval_s > 0:
        raise ValueError(f"interval_s must be more than 0, got {interval_s!r}")
    return _wall_ratio(interval_s, checkpoint_cost_s, mtbf_s, restart_s) - 1.0


def _wall_ratio(tau_s: float, delta_s: float, mtbf_s: float, restart_s: float) -> float:
    """``T_w / T_s`` = M·e^(R/M)·(e^((τ+δ)/M) − 1)/τ, with its limits at M = inf and M = 0."""
    if math.isinf(mtbf_s):
        return (tau_s + delta_s) / tau_s
    if mtbf_s == 0:
        return math.inf
    try:
        return (
            mtbf_s * math.exp(restart_s / mtbf_s) * math.expm1((tau_s + delta_s) / mtbf_s) / tau_s
        )
    except OverflowError:
        return math.inf


def mtbf_from_rate(interruptions_per_h: float | None) -> float | None:
    """Mean seconds between interruptions from a pool's rate per instance-hour.

    ``None`` (unknown) stays ``None``; a rate of 0 is ``inf``.
    """
    if interruptions_per_h is None:
        return None
    _check_non_negative(interruptions_per_h=interruptions_per_h)
    return math.inf if interruptions_per_h == 0 else 3600.0 / interruptions_per_h


def _check_non_negative(**values: float) -> None:
    for name, value in values.items():
        if math.isnan(value) or value < 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")


# --- advice ---------------------------------------------------------------------------------


class Status(str, Enum):
    """What kind of advice a ``Suggestion`` is; the values are a stable JSON API."""

    DALY = "daly"
    #: δ ≥ 2M: the interval is M and checkpoints barely help.
    DALY_CAPPED = "daly_capped"
    UNKNOWN_COST = "unknown_cost"
    UNKNOWN_RATE = "unknown_rate"
    NO_INTERRUPTIONS = "no_interruptions"
    ALWAYS_INTERRUPTED = "always_interrupted"
    FREE_CHECKPOINTS = "free_checkpoints"


_WHY = {
    Status.DALY: "",
    Status.DALY_CAPPED: "a checkpoint takes at least twice the mean time between "
    "interruptions: make checkpoints cheaper or use steadier capacity",
    Status.UNKNOWN_COST: "the checkpoint cost is unknown",
    Status.UNKNOWN_RATE: "the interruption rate is unknown",
    Status.NO_INTERRUPTIONS: "no interruptions are expected",
    Status.ALWAYS_INTERRUPTED: "the pool is interrupted continuously",
    Status.FREE_CHECKPOINTS: "checkpoints cost nothing: checkpoint as often as convenient",
}


@dataclass(frozen=True, slots=True)
class Suggestion:
    """An interval to checkpoint at, or ``None`` when ``status`` says there is none.

    ``overhead`` is the expected wall time over the work, minus one, at that
    interval (0.2: the task takes 20 % longer than with no interruptions and
    free checkpoints), from Daly's ``T_w``.
    """

    status: Status
    interval_s: float | None = None
    young_interval_s: float | None = None
    overhead: float | None = None

    @property
    def reason(self) -> str:
        """Why there is no interval, or the caveat on it; empty when there is nothing to say."""
        return _WHY[self.status]


def suggest_interval(
    checkpoint_cost_s: float | None, mtbf_s: float | None, restart_s: float
) -> Suggestion:
    """Daly's interval for a checkpoint cost and a mean time between interruptions.

    Unknown inputs (``None``), free checkpoints, a pool that is never
    interrupted (``mtbf_s`` inf) and one that is always interrupted (0) give
    no interval but a status, because each calls for a different sentence in
    the plan, not for a number.
    """
    _check_non_negative(restart_s=restart_s)
    if checkpoint_cost_s is None:
        return Suggestion(Status.UNKNOWN_COST)
    if mtbf_s is None:
        return Suggestion(Status.UNKNOWN_RATE)
    _check_non_negative(checkpoint_cost_s=checkpoint_cost_s, mtbf_s=mtbf_s)
    if math.isinf(mtbf_s):
        return Suggestion(Status.NO_INTERRUPTIONS)
    if mtbf_s == 0:
        return Suggestion(Status.ALWAYS_INTERRUPTED)
    if checkpoint_cost_s == 0:
        return Suggestion(Status.FREE_CHECKPOINTS)
    interval = daly_interval(checkpoint_cost_s, mtbf_s)
    return Suggestion(
        status=Status.DALY_CAPPED if checkpoint_cost_s >= 2.0 * mtbf_s else Status.DALY,
        interval_s=interval,
        young_interval_s=young_interval(checkpoint_cost_s, mtbf_s),
        overhead=overhead(interval, checkpoint_cost_s, mtbf_s, restart_s),
    )


@dataclass(frozen=True, slots=True)
class TaskAdvice:
    """One checkpointed task's advice: a line for the terminal and data for ``plan --json``."""

    text: str
    data: dict[str, Any]


def advice_for_task(
    task_id: str,
    *,
    checkpoint_cost_s: float | None,
    interruption_rate_per_h: float | None,
    restart_s: float,
    pool: str | None = None,
    runtime_s: float | None = None,
    configured_interval_s: float | None = None,
    cost_measured_in: str | None = None,
    unsaved_in: str | None = None,
) -> TaskAdvice:
    """The plan's checkpoint-interval advice for one task on the pool it is placed on.

    ``interruption_rate_per_h`` is the pool's ``interruption_rate``
    (interruptions per instance-hour; M = 1/rate). ``configured_interval_s``
    is the workflow's ``checkpoint_interval``, priced beside the suggestion;
    ``runtime_s`` (``estimated_runtime``) lets the advice say when the task
    is too short for periodic checkpoints to matter. ``restart_s`` (R) only
    changes the overheads, never the interval. ``cost_measured_in`` names the run whose
    checkpoints' mean save time ``checkpoint_cost_s`` is (``plan --from-run``); ``None``:
    it is the declared ``checkpoint_cost``. ``unsaved_in`` names the run the plan read
    (``plan --from-run``) when it saved no checkpoint of this task.
    """
    mtbf_s = mtbf_from_rate(interruption_rate_per_h)
    s = suggest_interval(checkpoint_cost_s, mtbf_s, restart_s)
    configured_overhead = None
    if configured_interval_s and mtbf_s is not None and checkpoint_cost_s is not None:
        configured_overhead = overhead(configured_interval_s, checkpoint_cost_s, mtbf_s, restart_s)
    short = s.interval_s is not None and runtime_s is not None and runtime_s <= s.interval_s
    data: dict[str, Any] = {
        "task": task_id,
        "pool": pool,
        "status": s.status.value,
        "interval_s": s.interval_s,
        "young_interval_s": s.young_interval_s,
        "checkpoint_cost_s": checkpoint_cost_s,
        "checkpoint_cost_source": _cost_source(checkpoint_cost_s, cost_measured_in),
        "interruption_rate_per_h": interruption_rate_per_h,
        "mtbf_s": _finite(mtbf_s),
        "restart_s": restart_s,
        "expected_overhead": _finite(s.overhead),
        "configured_interval_s": configured_interval_s,
        "configured_overhead": _finite(configured_overhead),
        "shorter_than_interval": short,
        "reason": s.reason or None,
    }
    text = _advice_text(task_id, pool, s, checkpoint_cost_s, mtbf_s, cost_measured_in, unsaved_in)
    if configured_interval_s and configured_overhead is not None:
        text += (
            f"; at checkpoint_interval {human_duration(configured_interval_s)}: "
            f"{_percent(configured_overhead)}"
        )
    if short:
        text += "; the task is shorter than that, so periodic checkpoints hardly matter"
    return TaskAdvice(text, data)


def _cost_source(cost_s: float | None, measured_in: str | None) -> str | None:
    if cost_s is None:
        return None
    return "measured" if measured_in is not None else "declared"


def _advice_text(
    task_id: str,
    pool: str | None,
    s: Suggestion,
    cost_s: float | None,
    mtbf_s: float | None,
    measured_in: str | None = None,
    unsaved_in: str | None = None,
) -> str:
    on_pool = f" on pool {pool!r}" if pool else ""
    if s.interval_s is None or cost_s is None or mtbf_s is None or s.overhead is None:
        reason = s.reason
        if s.status is Status.UNKNOWN_RATE and pool:
            reason = f"pool {pool!r} has no interruption_rate (set one in stormproof.yaml)"
        elif s.status is Status.UNKNOWN_COST:
            how = (
                f"declare checkpoint_cost; run {unsaved_in} saved no checkpoint of it"
                if unsaved_in is not None
                else "declare checkpoint_cost, or run it once and plan with --from-run RUN"
                " to use the save time measured"
            )
            reason = f"its checkpoint cost is unknown ({how})"
        return f"{task_id}: no checkpoint interval advice{on_pool}: {reason}"
    measured = f" as measured in run {measured_in}" if measured_in is not None else ""
    text = (
        f"{task_id}: checkpoint every {human_duration(s.interval_s)} (Daly; a checkpoint takes "
        f"{_seconds(cost_s)}{measured}, interruptions every {human_duration(mtbf_s)}{on_pool} "
        f"on average): {_percent(s.overhead)} expected overhead"
    )
    if s.status is Status.DALY_CAPPED:
        text += f"; {s.reason}"
    return text


def _seconds(value_s: float) -> str:
    """A checkpoint's cost: ``0.25s`` for a fraction below a minute (a measured save is often
    that short: ``human_duration`` would say ``0s``), else ``human_duration``."""
    if value_s < 59.5 and not float(value_s).is_integer():
        return f"{value_s:.2f}s"
    return human_duration(value_s)


def _percent(fraction: float) -> str:
    if fraction >= 10:  # past 1000 % the digits mean nothing
        return "over 1000%" if math.isfinite(fraction) else "unbounded"
    return f"{100.0 * fraction:.0f}%" if fraction >= 0.1 else f"{100.0 * fraction:.1f}%"


def _finite(value: float | None) -> float | None:
    """JSON has no infinity: an unbounded value is ``None`` there (the text says unbounded)."""
    return value if value is not None and math.isfinite(value) else None
