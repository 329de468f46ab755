"""Simulator speed and the core's memory per task.

* **Monte Carlo**: ``--runs`` (1,000) runs of a ``--tasks`` (1,000) task
  layered workflow on spot + on-demand pools with interruptions (every third
  task checkpoints every 300 s; ``--checkpoint-every 0``: none), through
  ``run_many`` (all CPUs), against a baseline measured in the same run: a
  bare heap loop over about as many events per run, in one process (what any
  discrete-event simulator in Python pays before doing any work).
* **One big run**: a 100,000-task workflow, one simulated run.
* **Memory per task in the core**: ``tracemalloc`` of a ``Workflow`` over
  its tasks, at 10,000 and 100,000 tasks (the difference / 90,000).

Targets (issue 6): 1,000 runs x 1,000 tasks <= 10 s; 100,000 tasks <= 10 s.

    python bench/simulate.py [--runs 1000] [--tasks 1000] [--big 100000] [--json]
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import random
import time
import tracemalloc

from stormproof.core.defs import (
    Market,
    PoolDef,
    Resources,
    RunOptions,
    TaskDef,
)
from stormproof.core.machine import Workflow
from stormproof.sim.engine import PoolModel, Simulation, TaskModel
from stormproof.sim.montecarlo import run_many, summarize


def layered(n: int, width: int = 50, every: int = 3) -> list[TaskDef]:
    """``n`` tasks in layers of ``width``; each task depends on two of the layer above."""
    parents: list[tuple[int, ...]] = []
    for i in range(n):
        layer = i // width
        if layer == 0:
            parents.append(())
        else:
            base = (layer - 1) * width
            parents.append((base + i % width, base + (i + 1) % width))
    children: list[list[int]] = [[] for _ in range(n)]
    for i, ps in enumerate(parents):
        for p in ps:
            children[p].append(i)
    layers = (n + width - 1) // width
    return [
        TaskDef(
            id=f"t{i}",
            index=i,
            parents=parents[i],
            children=tuple(children[i]),
            resources=Resources(1, 1024),
            priority=float(layers - i // width) * 600,
            estimated_s=600.0,
            at_risk_s=600.0,
            checkpoint_enabled=every > 0 and i % every == 0,
            checkpoint_interval_s=300.0 if every > 0 and i % every == 0 else None,
        )
        for i in range(n)
    ]


def simulation(n: int, every: int = 3) -> Simulation:
    pools = (
        PoolDef("spot", Market.SPOT, Resources(8, 16384), 8, 0.1),
        PoolDef("od", Market.ON_DEMAND, Resources(8, 16384), 4, 0.3),
    )
    models = [TaskModel(600.0, 10.0, 10.0, 0.1) for _ in range(n)]
    options = RunOptions(pools=pools, fallback_after_interruptions=2)
    return Simulation(
        layered(n, every=every), options, models, [PoolModel("spot", 0.2, None, 120.0)]
    )


def bare_loop(runs: int, events: int) -> float:
    """The floor: per run, push and pop ``events`` heap items with a tuple each, nothing else
    (one process: what a pure-Python discrete-event loop costs before it does any work)."""
    start = time.perf_counter()
    rng = random.Random(0)
    for _ in range(runs):
        heap: list[tuple[float, int, tuple[str, int]]] = []
        for k in range(events):
            heapq.heappush(heap, (rng.random(), k, ("e", k)))
        while heap:
            heapq.heappop(heap)
    return time.perf_counter() - start


def memory_per_task() -> tuple[float, float]:
    """Bytes per task: the run state the core builds, and that plus the task definitions."""
    state, total = [], []
    for n in (10_000, 100_000):
        pools = (PoolDef("p", Market.ON_DEMAND, Resources(8, 16384), 4, 0.3),)
        gc.collect()
        tracemalloc.start()
        tasks = layered(n)
        defs, _ = tracemalloc.get_traced_memory()
        wf = Workflow(tasks, RunOptions(pools=pools))
        size, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        state.append(size - defs)
        total.append(size)
        del wf, tasks
    return (state[1] - state[0]) / 90_000, (total[1] - total[0]) / 90_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--big", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument(
        "--checkpoint-every", type=int, default=3, help="every Nth task checkpoints (0: none)"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    sim = simulation(args.tasks, args.checkpoint_every)
    one = sim.run(random.Random(0))
    floor = bare_loop(args.runs, 3 * args.tasks)  # about 3 events per task (exit, timer, commit)
    start = time.perf_counter()
    results = run_many(sim, args.runs, seed=1, workers=args.workers)
    mc = time.perf_counter() - start
    summary = summarize(results, None, {})

    big = simulation(args.big)
    start = time.perf_counter()
    big_result = big.run(random.Random(0))
    big_s = time.perf_counter() - start

    figures = {
        "monte_carlo_s": round(mc, 2),
        "monte_carlo_runs": args.runs,
        "tasks": args.tasks,
        "bare_event_loop_s": round(floor, 2),
        "ratio_to_bare_loop": round(mc / floor, 2),
        "one_run_interrupted_attempts": one.interrupted_attempts,
        "interrupted_attempts_mean": summary["interrupted_attempts_mean"],
        "instance_notices_mean": summary["instance_notices_mean"],
        "big_tasks": args.big,
        "big_run_s": round(big_s, 2),
        "big_final": big_result.final,
    }
    per_task_state, per_task_total = memory_per_task()
    figures["core_state_bytes_per_task"] = round(per_task_state)
    figures["core_bytes_per_task_with_definitions"] = round(per_task_total)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(
        f"Monte Carlo: {args.runs} runs x {args.tasks} tasks in {mc:.2f} s "
        f"(target <= 10 s); a bare heap loop over as many events, one process: {floor:.2f} s "
        f"(ratio {mc / floor:.1f}x); {summary['interrupted_attempts_mean']:.1f} attempts "
        f"interrupted per run ({summary['instance_notices_mean']:.1f} instance notices)"
    )
    print(f"one run of {args.big} tasks: {big_s:.2f} s (target <= 10 s), {big_result.final}")
    print(
        f"core memory per task: {figures['core_state_bytes_per_task']} bytes of run state, "
        f"{figures['core_bytes_per_task_with_definitions']} with the task definitions"
    )


if __name__ == "__main__":
    main()
