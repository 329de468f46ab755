"""Many simulated runs, and what they say: makespan and cost percentiles, deadlines, waste.

Run ``k`` draws from ``random.Random(f"{seed}:{k}")`` only, so the result is
the same byte for byte whatever the number of worker processes, and one run
can be replayed alone (``--gantt`` draws run 0).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from stormproof.plan.checkpoint_interval import daly_interval
from stormproof.sim.engine import Simulation


@dataclass(frozen=True, slots=True)
class RunFigures:
    """What one run contributes to the summary (small, to cross process boundaries cheaply)."""

    makespan_s: float
    final: str
    spent: float
    on_demand_equivalent: float
    wasted: float
    wasted_s: float
    spot_s: float
    on_demand_s: float
    interrupted_attempts: int
    notices: int
    attempts: int


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: a value that occurred, and the same on every platform."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _spread(values: Sequence[float], digits: int) -> dict[str, float]:
    mean = sum(values) / len(values)
    return {
        "mean": round(mean, digits),
        "p50": round(percentile(values, 50), digits),
        "p90": round(percentile(values, 90), digits),
        "p99": round(percentile(values, 99), digits),
    }


_SIM: Simulation | None = None


def _init(sim: Simulation) -> None:
    global _SIM
    _SIM = sim


def _one(args: tuple[int, int]) -> RunFigures:
    seed, k = args
    assert _SIM is not None
    return figures(_SIM, seed, k)


def figures(sim: Simulation, seed: int, k: int) -> RunFigures:
    r = sim.run(random.Random(f"{seed}:{k}"))
    c = r.cost
    return RunFigures(
        r.makespan_s,
        r.final,
        c.spent,
        c.on_demand_equivalent,
        c.wasted,
        c.wasted_s,
        c.spot_s,
        c.on_demand_s,
        r.interrupted_attempts,
        r.notices,
        r.attempts,
    )


def run_many(sim: Simulation, runs: int, seed: int, workers: int | None = None) -> list[RunFigures]:
    """``runs`` runs, in parallel processes when it pays; always in run order."""
    jobs = [(seed, k) for k in range(runs)]
    workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    if workers <= 1 or runs < 8:
        return [figures(sim, seed, k) for k in range(runs)]
    chunk = max(1, runs // (workers * 4))
    with ProcessPoolExecutor(workers, initializer=_init, initargs=(sim,)) as pool:
        return list(pool.map(_one, jobs, chunksize=chunk))


def summarize(
    results: Sequence[RunFigures],
    deadline_s: float | None,
    checkpoint_costs: dict[str, float],
) -> dict[str, Any]:
    """The simulation's answer, as plain data (the CLI renders it, ``--json`` prints it)."""
    done = [r for r in results if r.final != "unfinished"]
    spans = [r.makespan_s for r in done] or [math.inf]
    hours = [s / 3600 for s in spans]
    spent = [r.spent for r in results]
    od = [r.on_demand_equivalent for r in results]
    interrupted = sum(r.interrupted_attempts for r in results)
    spot_s = sum(r.spot_s for r in results)
    # the attempts' own mean time between interruptions on spot (idle instances do not count)
    mtbf_s = spot_s / interrupted if interrupted else None
    met = None
    if deadline_s is not None:
        made = sum(1 for r in results if r.final == "succeeded" and r.makespan_s <= deadline_s)
        met = round(made / len(results), 4)
    total_od = sum(od)
    advice = {
        task: round(daly_interval(delta, mtbf_s), 1)
        for task, delta in sorted(checkpoint_costs.items())
        if mtbf_s is not None and delta > 0
    }
    return {
        "runs": len(results),
        "succeeded": sum(1 for r in results if r.final == "succeeded"),
        "failed": sum(1 for r in results if r.final == "failed"),
        "unfinished": len(results) - len(done),
        "makespan_hours": _spread(hours, 4),
        "cost_usd": _spread(spent, 4),
        "on_demand_equivalent_usd": round(total_od / len(results), 4),
        "saved_usd": round((total_od - sum(spent)) / len(results), 4),
        "saved_fraction": round((total_od - sum(spent)) / total_od, 4) if total_od else 0.0,
        "deadline_s": deadline_s,
        "deadline_met_rate": met,
        "interrupted_attempts_mean": round(interrupted / len(results), 3),
        "instance_notices_mean": round(sum(r.notices for r in results) / len(results), 3),
        "wasted_hours_mean": round(sum(r.wasted_s for r in results) / len(results) / 3600, 4),
        "wasted_usd_mean": round(sum(r.wasted for r in results) / len(results), 4),
        "spot_hours_mean": round(spot_s / len(results) / 3600, 4),
        "on_demand_hours_mean": round(sum(r.on_demand_s for r in results) / len(results) / 3600, 4),
        "attempts_mean": round(sum(r.attempts for r in results) / len(results), 3),
        "observed_mtbf_hours": None if mtbf_s is None else round(mtbf_s / 3600, 4),
        "suggested_checkpoint_interval_s": advice,
    }
