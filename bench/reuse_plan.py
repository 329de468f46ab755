"""How long `run --reuse --plan` takes: a 10,000-task workflow against a finished 10,000-task run.

Generates a layered DAG (each task has up to 3 parents in the layer before it) whose tasks
each declare one input (a shared parameter file) and one output (``touch`` of a file in the
data dir), runs it once for real (``stormproof run``: the earlier run whose results are
reused; not timed in the comparison), then times, each in a fresh interpreter, start to exit:

* **baseline**: ``stormproof plan FILE --json``: validating and planning the same workflow,
  the dry run a user runs anyway;
* **reuse --plan --json**: every task's verdict, as JSON (hashing the input, every task's
  fingerprint, one indexed lookup of all of them in the store, a ``stat`` of every output);
* **reuse --plan**: the same, as the table a person reads;
* **reuse --plan, one change**: after changing the command of one task of the first layer,
  so that a slice of the DAG reruns and is explained (the store's second lookup).

Then, in one more fresh interpreter, the phases of ``run --reuse --plan --json`` (imports,
loading the workflow, hashing inputs, the plan itself — fingerprints, lookup, stats —, and
writing the JSON) to see where the time goes.

Prints the best of ``--repeat`` wall times, and each as a ratio to the baseline. Target:
``run --reuse --plan`` <= 1 s at 10,000 tasks::

    python bench/reuse_plan.py                       # 10,000 tasks
    python bench/reuse_plan.py --tasks 2000 --repeat 5 --dir /dev/shm
    STORMPROOF_STORE=postgresql://… python bench/reuse_plan.py   # the same on PostgreSQL
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def workflow(n: int, width: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    tasks: list[dict[str, Any]] = []
    previous: list[str] = []
    layer: list[str] = []
    for i in range(n):
        tid = f"t{i}"
        deps = rng.sample(previous, min(3, len(previous))) if previous else []
        tasks.append(
            {
                "id": tid,
                "command": ["touch", "${STORMPROOF_DATA_DIR}/" + tid],
                "depends_on": deps,
                "inputs": ["params.txt"],
                "outputs": [tid],
            }
        )
        layer.append(tid)
        if len(layer) == width:
            previous, layer = layer, []
    return {"name": "reuse-bench", "global_config": {"max_retry_attempts": 0}, "tasks": tasks}


PHASES = """
import io, os, sys, time
t0 = time.perf_counter()
from pathlib import Path
from stormproof.cli.rerun_cmds import _echo_json
from stormproof.cli.session import Session
from stormproof.spec.load import load_workflow
from stormproof.runtime.fingerprint import definitions, hash_inputs
from stormproof.runtime.rerun import plan_reuse
from stormproof.runtime.reuse import outputs_problem
t1 = time.perf_counter()
s = Session.open(sys.argv[1], None)
spec = load_workflow("wf.json")
t2 = time.perf_counter()
hashes = hash_inputs(spec, Path.cwd(), "wf.json")
defs = definitions(spec, hashes, None)
t3 = time.perf_counter()
found = s.store.find_results([d.fingerprint for d in defs])
t4 = time.perf_counter()
for t, d in zip(spec.tasks, defs):
    if d.fingerprint in found:
        outputs_problem(found[d.fingerprint], t.outputs)
t5 = time.perf_counter()
plan = plan_reuse(spec, hashes, None, s.store)
t6 = time.perf_counter()
sys.stdout = io.StringIO()
_echo_json(plan.to_json())
t7 = time.perf_counter()
sys.stdout = sys.__stdout__
print(f"  imports {t1 - t0:.2f} s · load and validate {t2 - t1:.2f} s · inputs and "
      f"fingerprints {t3 - t2:.2f} s · lookup of {len(found):,} results {t4 - t3:.2f} s · "
      f"stat of their outputs {t5 - t4:.2f} s · the whole plan_reuse {t6 - t5:.2f} s · "
      f"JSON {t7 - t6:.2f} s")
"""


def stormproof(home: Path, cwd: Path, *args: str) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one `stormproof` command, start to exit, its
    output thrown away. CPU time is what a loaded machine inflates least."""
    env = {**os.environ, "STORMPROOF_HOME": str(home)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "stormproof", *args],
        cwd=cwd,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def best(repeat: int, *command: Any) -> tuple[float, float]:
    runs = [stormproof(*command) for _ in range(repeat)]
    return min(w for w, _ in runs), min(c for _, c in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--width", type=int, default=100, help="tasks per layer")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", default=None, help="where the workflow and home go")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        spec = workflow(args.tasks, args.width, args.seed)
        (root / "params.txt").write_text("dt = 0.002\n")
        wf = root / "wf.json"
        wf.write_text(json.dumps(spec))
        home = root / "home"
        started = time.perf_counter()
        stormproof(home, root, "run", "wf.json", "--name", "earlier", "-q")
        print(f"earlier run of {args.tasks:,} tasks (setup, not compared): "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip

        rows = [
            ("baseline: plan --json", best(args.repeat, home, root, "plan", "wf.json", "--json")),
            (
                "run --reuse --plan --json",
                best(args.repeat, home, root, "run", "wf.json", "--reuse", "--plan", "--json"),
            ),
            (
                "run --reuse --plan (table)",
                best(args.repeat, home, root, "run", "wf.json", "--reuse", "--plan"),
            ),
        ]
        print("phases of run --reuse --plan --json (in process):")
        subprocess.run([sys.executable, "-c", PHASES, str(home)], cwd=root, check=True)
        spec["tasks"][0]["command"] = ["touch", "${STORMPROOF_DATA_DIR}/t0", "-c"]
        wf.write_text(json.dumps(spec))
        rows.append(
            (
                "run --reuse --plan --json, one change",
                best(args.repeat, home, root, "run", "wf.json", "--reuse", "--plan", "--json"),
            )
        )
        base_wall, base_cpu = rows[0][1]
        print(f"\n{args.tasks:,} tasks, best of {args.repeat} (process start to exit):")
        print(f"  {'':40s} {'wall':>7s}  {'x base':>6s} {'cpu':>7s}  {'x base':>6s}")
        for label, (wall, cpu) in rows:
            print(
                f"  {label:40s} {wall:6.2f}s  {wall / base_wall:5.2f}x {cpu:6.2f}s  "
                f"{cpu / base_cpu:5.2f}x"
            )
        print(f"  (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        print("the same, after the change:")
        subprocess.run([sys.executable, "-c", PHASES, str(home)], cwd=root, check=True)
        target = max(wall for label, (wall, _) in rows[1:])
        verdict = "met" if target <= 1.0 else "NOT met"
        print(f"\ntarget <= 1 s for run --reuse --plan: {verdict} (slowest {target:.2f} s)")


if __name__ == "__main__":
    main()
