"""Table 3 of "Can't Be Late" (Wu et al., NSDI'24), reproduced, with stormproof's own policy.

Setup of the paper: the eight one-node AWS availability traces of 2022-10-26 (600 s ticks;
the paper uses their first 13 days), 300 random start points per trace, a job of C = 48 h of
compute due R = 60 h after it starts, a changeover delay d = 0.2 h. For each policy it prints
the hours of progress on on-demand and on spot (mean ± std over the 2,400 jobs), next to the
paper's numbers, and how often the deadline was met; then stormproof's spot hours as a share
of the optimum's. A window that runs past the end of the 13 days wraps to their start.

The optimum ("Omniscient" in the paper) is exact (``stormproof.policy.optimal``), and each of
its plans is replayed in the simulator and checked to reach the spot hours it promised::

    python bench/cant_be_late.py                   # the table (about half a minute on 2 cores)
    python bench/cant_be_late.py --json            # {"<policy>": {"od_hours_mean": ...}}
    python bench/cant_be_late.py --whole-file --seed 7 --deadline-hours 52
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from stormproof.errors import StormproofError
from stormproof.policy import (
    GreedyPolicy,
    OnDemandPolicy,
    Policy,
    StormproofPolicy,
    UniformProgressPolicy,
    simulate_job,
    solve_optimal,
)
from stormproof.traces import load_trace

REPO = Path(__file__).resolve().parent.parent
TRACES = REPO.parent / "shared" / "data" / "spot-traces" / "availability" / "1-node"
DEFAULT_DIR = TRACES / "aws-10-26-2022"
THIRTEEN_DAYS_TICKS = 13 * 24 * 6  # of 600 s: 1,872
POLICIES = ("on_demand", "greedy", "uniform_progress", "optimal", "stormproof")
#: Table 3 of the paper: (on-demand mean, std, spot mean, std), hours. Omniscient is "optimal".
PAPER = {
    "on_demand": (48.0, 0.0, 0.0, 0.0),
    "greedy": (30.8, 17.7, 17.2, 17.7),
    "uniform_progress": (25.1, 15.3, 22.9, 15.4),
    "optimal": (20.7, 15.5, 27.4, 15.5),
}
ONLINE: dict[str, Policy] = {
    "on_demand": OnDemandPolicy(),
    "greedy": GreedyPolicy(),
    "uniform_progress": UniformProgressPolicy(),
    "stormproof": StormproofPolicy(),
}


@dataclass(frozen=True)
class Setup:
    compute_s: float
    deadline_s: float
    changeover_s: float
    starts: int
    seed: int
    first_ticks: int | None
    wrap: bool


# one row per job: (on-demand hours, spot hours, met the deadline)
Rows = dict[str, list[tuple[float, float, bool]]]


def run_trace(path: Path, setup: Setup) -> Rows:
    """All policies on one trace; seeded by the file name, so workers' order does not matter."""
    trace = load_trace(path, first_ticks=setup.first_ticks)
    rng = random.Random(f"{setup.seed}/{path.name}")
    job_ticks = -(-int(setup.deadline_s) // int(trace.gap_s))
    span = len(trace) if setup.wrap else max(1, len(trace) - job_ticks + 1)
    job = (setup.compute_s, setup.deadline_s, setup.changeover_s)
    rows: Rows = {name: [] for name in POLICIES}
    for _ in range(setup.starts):
        start = rng.randrange(span)
        for name, policy in ONLINE.items():
            r = simulate_job(policy, trace, start, *job)
            rows[name].append((r.od_hours, r.spot_hours, r.met_deadline))
        plan = solve_optimal(trace, start, *job)
        r = simulate_job(plan, trace, start, *job)
        if plan.feasible and (not r.met_deadline or abs(r.spot_hours * 3600 - plan.spot_s) > 1e-6):
            raise AssertionError(f"{path.name} start {start}: the optimal plan does not replay")
        rows["optimal"].append((r.od_hours, r.spot_hours, r.met_deadline))
    return rows


def summarise(rows: Rows) -> dict[str, dict[str, float]]:
    out = {}
    for name in POLICIES:
        od = [x[0] for x in rows[name]]
        spot = [x[1] for x in rows[name]]
        out[name] = {
            "od_hours_mean": statistics.fmean(od),
            "od_hours_std": statistics.pstdev(od),
            "spot_hours_mean": statistics.fmean(spot),
            "spot_hours_std": statistics.pstdev(spot),
            "deadline_met_rate": sum(x[2] for x in rows[name]) / len(rows[name]),
        }
    return out


def render(summary: dict[str, dict[str, float]], setup: Setup, n_traces: int, secs: float) -> str:
    hours = f"C={setup.compute_s / 3600:g} h, R={setup.deadline_s / 3600:g} h, "
    hours += f"d={setup.changeover_s / 3600:g} h"
    span = "first 13 days" if setup.first_ticks else "whole files"
    lines = [
        f"Table 3 of \"Can't Be Late\" (NSDI'24): {n_traces} traces x {setup.starts} starts "
        f"(seed {setup.seed}, {span}), {hours}",
        "",
        f"{'policy':<18}{'on-demand h':>16}{'(paper)':>16}{'spot h':>16}{'(paper)':>16}"
        f"{'deadline met':>15}",
    ]
    for name in POLICIES:
        s = summary[name]
        od = f"{s['od_hours_mean']:.1f} ± {s['od_hours_std']:.1f}"
        spot = f"{s['spot_hours_mean']:.1f} ± {s['spot_hours_std']:.1f}"
        p = PAPER.get(name)
        p_od = f"{p[0]:.1f} ± {p[1]:.1f}" if p else "-"
        p_spot = f"{p[2]:.1f} ± {p[3]:.1f}" if p else "-"
        met = f"{100 * s['deadline_met_rate']:.1f}%"
        lines.append(f"{name:<18}{od:>16}{p_od:>16}{spot:>16}{p_spot:>16}{met:>15}")
    best = summary["optimal"]["spot_hours_mean"]
    lines.append("")
    shares = []
    for name in ("stormproof", "uniform_progress", "greedy"):
        share = 100 * summary[name]["spot_hours_mean"] / best if best else 0.0
        shares.append(f"{name} {share:.1f}%")
    paper_share = 100 * PAPER["uniform_progress"][2] / PAPER["optimal"][2]
    lines.append(
        "spot hours as a share of the optimum's: "
        + ", ".join(shares)
        + f" (paper: uniform_progress {paper_share:.0f}%)"
    )
    lines.append(f"runtime {secs:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", type=Path, default=DEFAULT_DIR, help="folder of trace .json files")
    ap.add_argument("--whole-file", action="store_true", help="use whole files, not 13 days")
    ap.add_argument("--no-wrap", action="store_true", help="only starts whose job fits the trace")
    ap.add_argument("--starts", type=int, default=300, help="random start points per trace")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compute-hours", type=float, default=48.0)
    ap.add_argument("--deadline-hours", type=float, default=60.0)
    ap.add_argument("--changeover-hours", type=float, default=0.2)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON only")
    args = ap.parse_args(argv)

    folder: Path = args.traces
    shared = REPO.parent / "shared"
    if folder == DEFAULT_DIR and not shared.is_dir():
        print(
            f"cant_be_late: {shared} is absent (it holds the spot traces); "
            "pass --traces DIR to use traces elsewhere",
            file=sys.stderr,
        )
        return 2
    if not folder.is_dir():
        why = "is absent" if not folder.exists() else "is not a folder"
        print(f"cant_be_late: {folder} {why}: pass --traces DIR", file=sys.stderr)
        return 2
    files = sorted(folder.glob("*.json"))
    if not files:
        print(f"cant_be_late: no .json trace files in {folder}", file=sys.stderr)
        return 2
    if args.starts < 1 or args.compute_hours < 0 or args.deadline_hours <= 0:
        print("cant_be_late: --starts must be >= 1 and the hours positive", file=sys.stderr)
        return 2
    setup = Setup(
        compute_s=args.compute_hours * 3600,
        deadline_s=args.deadline_hours * 3600,
        changeover_s=args.changeover_hours * 3600,
        starts=args.starts,
        seed=args.seed,
        first_ticks=None if args.whole_file else THIRTEEN_DAYS_TICKS,
        wrap=not args.no_wrap,
    )
    t0 = time.perf_counter()
    rows: Rows = {name: [] for name in POLICIES}
    try:
        with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for part in pool.map(run_trace, files, [setup] * len(files)):
                for name in POLICIES:
                    rows[name] += part[name]
    except StormproofError as err:
        print(f"cant_be_late: {err}", file=sys.stderr)
        return 2
    summary = summarise(rows)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(render(summary, setup, len(files), time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
