"""The chaos suite's full pass: kill the orchestrator, the shim, both, or signal it, at random
moments, hundreds of times each, and check that nothing was lost or done twice.

Each run is a random workflow (seeded: ``--seed`` is the first seed, each run takes the next)
driven by the real ``stormproof`` command while ``tests/chaos/engine.py`` kills and resumes
it until it ends, then checks its invariants (the engine's docstring lists them). Runs go two
at a time (``--lanes``). The pass ends once every kind of kill has happened ``--kills`` times
(or after ``--runs`` runs). Printed: per kind, the kills and the runs that saw it; then the
runs, how they ended, the interruptions, the checkpoints checked, and every violation with
its seed (``--seed N --runs 1`` runs that one again).

The CI's short pass is ``tests/chaos/test_chaos.py`` (50 kills of each kind).

Usage: python bench/chaos.py [--kills 500] [--seed 1] [--runs N] [--lanes 2] [--dir DIR] [--keep]
       [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.chaos.engine import KINDS, Settings, Tally, chaos  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=500, help="kills of each kind (default 500)")
    ap.add_argument("--seed", type=int, default=1, help="the first run's seed")
    ap.add_argument("--runs", type=int, default=None, help="stop after this many runs")
    ap.add_argument("--lanes", type=int, default=2, help="runs at a time")
    ap.add_argument("--dir", default=None, help="where the runs go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the runs' directories")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    seeds = itertools.count(args.seed)
    if args.runs is not None:
        seeds = iter(range(args.seed, args.seed + args.runs))

    def enough(tally: Tally) -> bool:
        return args.runs is None and min(tally.kills[k] for k in KINDS) >= args.kills

    def progress(one: Tally, total: Tally) -> None:
        if args.json:
            return
        kills = " ".join(f"{k}={total.kills[k]}" for k in KINDS)
        print(
            f"[{total.seconds:7.0f}s] runs={total.runs} {kills} violations={len(total.violations)}",
            file=sys.stderr,
            flush=True,
        )
        for v in one.violations:
            print(f"  VIOLATION {v[:2000]}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="stormproof-chaos-", dir=args.dir) as tmp:
        root = (
            Path(tempfile.mkdtemp(prefix="stormproof-chaos-", dir=args.dir))
            if args.keep
            else Path(tmp)
        )
        tally = chaos(seeds, root, Settings(), args.lanes, enough, progress)
        if args.keep:
            print(f"the runs are in {root}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary(tally), indent=2))
        return
    print(f"{'kind':>13} | {'kills':>6} | {'runs with it':>12}")
    for kind in KINDS:
        print(f"{kind:>13} | {tally.kills[kind]:>6} | {tally.runs_with[kind]:>12}")
    ended = ", ".join(f"{n} {state}" for state, n in sorted(tally.states.items()))
    print(
        f"runs: {tally.runs} ({ended}); interruptions: {tally.interrupts}; committed "
        f"checkpoints restored after a death: {tally.checkpoints_checked}; "
        f"{tally.seconds:.0f} s"
    )
    print(f"violations: {len(tally.violations)}")
    for v in tally.violations:
        print(f"  {v}")
    sys.exit(1 if tally.violations else 0)


def summary(tally: Tally) -> dict[str, object]:
    return {
        "kills": {k: tally.kills[k] for k in KINDS},
        "runs_with": {k: tally.runs_with[k] for k in KINDS},
        "runs": tally.runs,
        "states": dict(tally.states),
        "interruptions": tally.interrupts,
        "checkpoints_checked": tally.checkpoints_checked,
        "violations": tally.violations,
        "seconds": round(tally.seconds, 1),
    }


if __name__ == "__main__":
    main()
