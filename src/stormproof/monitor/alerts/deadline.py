"""``deadline_at_risk``: the simulator's estimate of a run's remaining work, off the loop.

Every ``every`` seconds the driver hands a snapshot of the run's progress (which tasks
ended, since when the running ones run) to a background thread, which simulates the
remaining workflow on the run's own pools, policy and seed: the finished tasks left out,
each running task shortened by the time it has already run. The thread stops after
``BUDGET_S`` of simulation (at least one run), so a huge workflow costs one run per tick;
the result is logged (``DeadlineEstimated``) and the rule reads it from the log, which
keeps the rule replay-safe even though the estimate depends on when it was made.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Final

from stormproof.monitor.alerts.rules import Progress
from stormproof.runtime.runs import RunContext
from stormproof.sim.engine import SimResult
from stormproof.sim.montecarlo import percentile

#: Most simulated runs per estimate, and the CPU seconds the estimate may take.
RUNS: Final = 20
BUDGET_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class Estimate:
    at: float
    remaining_s: float
    simulations: int


def estimate(ctx: RunContext, progress: Progress, now: float) -> Estimate:
    """The median makespan of simulating what is left of the run from ``now``."""
    from stormproof.runtime.compile import (
        DEFAULT_RUNTIME_S,
        compile_tasks,
        run_options,
    )
    from stormproof.sim.engine import PoolModel, Simulation, TaskModel

    spec = ctx.spec
    left = [t for t in spec.tasks if t.id not in progress.ended]
    if not left:
        return Estimate(now, 0.0, 0)
    ids = {t.id for t in left}
    tasks = []
    for t in left:
        runtime = DEFAULT_RUNTIME_S if t.estimated_runtime is None else t.estimated_runtime
        if t.id in progress.running:
            runtime = max(runtime - (now - progress.running[t.id]), 0.0)
        deps = [d for d in t.depends_on if d in ids]
        tasks.append(t.model_copy(update={"depends_on": deps, "estimated_runtime": runtime}))
    rest = spec.model_copy(update={"tasks": tasks})
    policy = dict(ctx.policy)
    if policy.get("deadline_s") and progress.started_at is not None:
        left_s = policy["deadline_s"] - (now - progress.started_at)
        policy["deadline_s"] = max(left_s, 1.0)
    options = run_options(rest, ctx.pools, ctx.seed, ctx.max_parallel, policy)
    models = [
        TaskModel(
            float(t.estimated_runtime or 0.0), t.checkpoint_cost or 0.0, t.checkpoint_cost or 0.0
        )
        for t in tasks
    ]
    pools = [
        PoolModel(s["pool"], s.get("interruption_rate"), None, float(s.get("notice_s", 120.0)))
        for s in ctx.sources
        if s.get("interruption_rate")
    ]
    sim = Simulation(compile_tasks(rest), options, models, pools)
    makespans = []
    started = time.process_time()
    for k in range(RUNS):
        result: SimResult = sim.run(random.Random(f"{ctx.seed}:deadline:{k}"))
        makespans.append(result.makespan_s)
        if time.process_time() - started > BUDGET_S:
            break
    return Estimate(now, percentile(makespans, 50), len(makespans))


class DeadlineWatch:
    """Runs ``estimate`` in a daemon thread every ``every_s``; one estimate at a time."""

    def __init__(self, ctx: RunContext, every_s: float) -> None:
        self.ctx = ctx
        self.every_s = every_s
        self.next_at = 0.0
        self._result: Estimate | None = None
        self._error: str | None = None
        self._thread: threading.Thread | None = None

    def tick(self, now: float, progress: Progress) -> None:
        """Start an estimate if one is due and none is under way (cheap otherwise)."""
        if now < self.next_at or self._thread is not None or progress.finished:
            return
        self.next_at = now + self.every_s
        snapshot = Progress(progress.started_at, set(progress.ended), dict(progress.running), False)
        self._thread = threading.Thread(
            target=self._work, args=(snapshot, now), name="stormproof-deadline", daemon=True
        )
        self._thread.start()

    def take(self) -> Estimate | str | None:
        """The estimate made since the last call, or why it could not be made, or None."""
        thread = self._thread
        if thread is None or thread.is_alive():
            return None
        self._thread = None
        result, self._result = self._result, None
        error, self._error = self._error, None
        return result if result is not None else error

    def _work(self, progress: Progress, now: float) -> None:
        try:
            self._result = estimate(self.ctx, progress, now)
        except Exception as exc:  # an estimate that cannot be made must not stop the run
            self._error = f"{type(exc).__name__}: {exc}"
