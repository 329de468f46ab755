"""How `stormproof plan` scales: a 100,000-task workflow, against plain ``json.load``.

Generates a seeded, layered random DAG (each task has about 3 parents drawn
from the previous few layers, and an ``estimated_runtime``) as a workflow
JSON file plus a ``stormproof.yaml`` with a spot and an on-demand pool, then
runs, each in a fresh interpreter so that neither warms the other:

* **baseline**: ``json.load`` of the file, nothing else;
* **stormproof plan**: the command itself (``python -m stormproof plan FILE`` in the
  workflow's directory, output to /dev/null), start to exit: the figure the target is
  judged on;
* **plan**: what ``stormproof plan`` does, in phases: load and validate the workflow
  (``stormproof.spec.load.load_workflow`` when it exists, else
  ``WorkflowSpec.model_validate_json`` plus ``spec.validate.validate_spec``,
  or the graph checks ``Dag.from_spec`` makes), load the config,
  ``build_plan``, ``render_plan`` to a null console;
* **plan --json**: the same, with ``to_json`` dumped instead of rendering;
* **plan, GC paused**: the same with the cyclic garbage collector off from
  the start. On CPython 3.11 most of the time of loading 100,000 tasks is
  the collector re-traversing the models already built; this line shows
  what pausing it around loading (``plan.graph.gc_paused``) would give.

It prints process wall seconds (interpreter start, imports and exit
included), the in-process phases, peak RSS (``ru_maxrss``) and the ratios to the
baseline. Targets for the plan: <= 3 s and <= 1 GiB RSS::

    python bench/plan_scale.py                    # 100,000 tasks
    python bench/plan_scale.py --tasks 20000 --seed 7
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

POOLS_YAML = """\
pools:
  - {name: spot-c5,  market: spot,      instance: c5.4xlarge, vcpus: 16, memory: 32768,
     price: 0.27, count: 200, interruption_rate: 0.05}
  - {name: ondemand, market: on_demand, instance: c5.4xlarge, vcpus: 16, memory: 32768,
     price: 0.68, count: 20}
policy: {deadline: 7d}
"""

# The child programs. They print one JSON line: phases in seconds and ru_maxrss in KiB.
BASELINE = """
import json, resource, sys, time
t0 = time.perf_counter()
with open(sys.argv[1], "rb") as fh:
    data = json.load(fh)
t1 = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"phases": {"json.load": t1 - t0}, "rss_kib": rss, "tasks": len(data["tasks"])}))
"""

PLAN = """
import io, json, os, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
from rich.console import Console
from stormproof.config import load_config
from stormproof.plan.graph import Dag
from stormproof.plan.report import build_plan, render_plan
from stormproof.spec.model import WorkflowSpec
try:
    from stormproof.spec.load import load_workflow
except ImportError:
    load_workflow = None
try:
    from stormproof.spec.validate import validate_spec
except ImportError:
    validate_spec = None
phases = {"imports": time.perf_counter() - t0}
path, output = Path(sys.argv[1]), sys.argv[2]
t = time.perf_counter()
if load_workflow is not None:
    spec = load_workflow(path)
    how = "spec.load.load_workflow"
elif validate_spec is not None:
    spec = WorkflowSpec.model_validate_json(path.read_bytes())
    validate_spec(spec, str(path))
    how = "WorkflowSpec.model_validate_json + spec.validate.validate_spec"
else:
    spec = WorkflowSpec.model_validate_json(path.read_bytes())
    Dag.from_spec(spec)  # unknown dependencies and cycles raise here
    how = "WorkflowSpec.model_validate_json + Dag.from_spec"
phases["load+validate"] = time.perf_counter() - t
t = time.perf_counter()
config = load_config(None, path.parent, {})
report = build_plan(spec, config, config.container_runtime)
phases["config+build_plan"] = time.perf_counter() - t
t = time.perf_counter()
with open(os.devnull, "w") as null:
    if output == "render":
        render_plan(report, Console(file=null, width=160))
    else:
        null.write(json.dumps(report.to_json(), indent=2))
phases[output] = time.perf_counter() - t
print(json.dumps({
    "phases": phases, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "stages": len(report.dag.stage_indexes()), "problems": len(report.problems), "how": how,
    "duration_s": report.estimate.duration_s, "lower_bound": report.estimate.lower_bound,
}))
"""


def generate(n_tasks: int, seed: int, layers: int = 250, reach: int = 3) -> dict[str, Any]:
    """``layers`` layers; each task has 1-5 (mean 3) parents in the last ``reach`` layers."""
    rng = random.Random(seed)
    per_layer = max(1, n_tasks // layers)
    tasks: list[dict[str, Any]] = []
    layer_ids: list[list[str]] = []
    for k in range(n_tasks):
        layer = min(k // per_layer, layers - 1)
        if layer == len(layer_ids):
            layer_ids.append([])
        task_id = f"t{layer:03d}-{k:06d}"
        task: dict[str, Any] = {
            "id": task_id,
            "command": ["python", "/app/step.py", "--index", str(k)],
            "vcpus": rng.choice((1, 2, 4, 8)),
            "memory": rng.choice((1024, 2048, 4096, 8192)),
            "estimated_runtime": rng.randint(60, 3600),
        }
        if layer:
            pool = [t for ids in layer_ids[max(0, layer - reach) : layer] for t in ids]
            task["depends_on"] = rng.sample(pool, min(len(pool), rng.randint(1, 5)))
        if k % 10 == 0:
            task["container_image"] = "scientific-computing:step"
            task["environment"] = {"STEP": str(k)}
        tasks.append(task)
        layer_ids[layer].append(task_id)
    return {"name": f"scale-{n_tasks}", "global_config": {"max_retry_attempts": 2}, "tasks": tasks}


def child(program: str, *args: str) -> tuple[float, dict[str, Any]]:
    """Run ``program`` in a fresh interpreter; its wall time (start to exit) and its report."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", program, *args], capture_output=True, text=True, check=False
    )
    wall_s = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"child failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return wall_s, result


def command(args: list[str], cwd: Path) -> tuple[float, dict[str, Any]]:
    """The real ``stormproof`` command, output to /dev/null: wall time and peak RSS.

    Peak RSS is the children's high-water mark, so this must run before any child that
    peaks higher (it runs right after the baseline).
    """
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "stormproof", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    wall_s = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"stormproof {' '.join(args)} failed:\n{done.stderr}")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall_s, {"phases": {"the command, start to exit": wall_s}, "rss_kib": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stormproof-plan-bench-") as tmp:
        workflow = Path(tmp) / "workflow.json"
        workflow.write_text(json.dumps(generate(args.tasks, args.seed)))
        (Path(tmp) / "stormproof.yaml").write_text(POOLS_YAML)
        size_mib = workflow.stat().st_size / 2**20
        print(f"{args.tasks:,} tasks, seed {args.seed}, {size_mib:.1f} MiB of JSON; seconds:")
        runs = {
            "baseline json.load": child(BASELINE, str(workflow)),
            "stormproof plan": command(["plan", str(workflow)], Path(tmp)),
            "plan (rendered)": child(PLAN, str(workflow), "render"),
            "plan --json": child(PLAN, str(workflow), "json"),
            "plan, GC paused": child("import gc\ngc.disable()\n" + PLAN, str(workflow), "render"),
        }
    base_wall, base = runs["baseline json.load"]
    base_rss = base["rss_kib"] / 1024
    for name, (wall_s, result) in runs.items():
        rss = result["rss_kib"] / 1024
        phases = ", ".join(f"{k} {v:.2f}" for k, v in result["phases"].items())
        print(
            f"{name:<19} {wall_s:5.2f} s wall ({wall_s / base_wall:4.1f}x), "
            f"{rss:4.0f} MiB peak RSS ({rss / base_rss:3.1f}x)   [{phases}]"
        )
    _, plan = runs["plan (rendered)"]
    print(
        f"loaded with {plan['how']}; {plan['stages']} stages, {plan['problems']} problems, "
        f"duration {plan['duration_s'] / 3600:.1f} h (lower bound: {plan['lower_bound']})"
    )
    wall_s, cli = runs["stormproof plan"]  # the target is the command's, exit included
    ok = wall_s <= 3.0 and cli["rss_kib"] <= 1024 * 1024
    print(f"plan targets (<= 3 s wall, <= 1 GiB RSS): {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
