"""From a workflow and a configuration to a ``Simulation``: the same compile step as a real run.

The tasks and run options come from ``runtime.compile`` (what a real run
gives its core); only the models of time are added: ``estimated_runtime``,
``checkpoint_cost`` (also the restore time) and each pool's interruption
rate or trace.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stormproof.config import Config
from stormproof.core.defs import Market
from stormproof.errors import StormproofError
from stormproof.runtime.compile import DEFAULT_RUNTIME_S, compile_tasks, policy_dict, run_options
from stormproof.sim.engine import PoolModel, Simulation, TaskModel
from stormproof.spec.model import WorkflowSpec
from stormproof.traces import find_trace, load_trace


@dataclass
class Built:
    sim: Simulation
    #: Task ids that had no ``estimated_runtime`` and were given ``DEFAULT_RUNTIME_S``.
    assumed: list[str]
    checkpoint_costs: dict[str, float]
    deadline_s: float | None


def build(
    spec: WorkflowSpec,
    config: Config,
    base: Path,
    traces: Mapping[str, str],
    *,
    deadline_s: float | None = None,
    spread: float = 0.0,
    seed: int = 0,
) -> Built:
    """``traces`` maps pool names to trace files (``--trace POOL=FILE``), over the config's."""
    pools = config.pool_defs()
    names = [p.name for p in pools]
    for name in traces:
        if name not in names:
            raise StormproofError(
                f"--trace {name}=…: there is no pool {name!r}; pools: {', '.join(names)} "
                "(give pools with --pools FILE or in stormproof.yaml)"
            )
    # a pool that follows a trace can be taken away: no successors queue there
    pools = tuple(
        dataclasses.replace(p, interruptible=True) if p.name in traces else p for p in pools
    )
    models = []
    assumed = []
    costs = {}
    for t in spec.tasks:
        runtime = t.estimated_runtime
        if runtime is None:
            assumed.append(t.id)
            runtime = DEFAULT_RUNTIME_S
        delta = t.checkpoint_cost or 0.0
        if t.checkpoint_enabled:
            costs[t.id] = delta
        models.append(TaskModel(runtime, delta, delta, spread))
    pool_models = []
    for pool in config.pools:
        path = traces.get(pool.name) or pool.trace
        trace = None
        if path:
            trace = load_trace(find_trace(path, base, f"trace for pool {pool.name!r}"))
        if pool.market is Market.SPOT or trace is not None or pool.interruption_rate:
            pool_models.append(PoolModel(pool.name, pool.interruption_rate, trace, pool.notice))
    policy = policy_dict(config.policy, config.executor)
    options = run_options(spec, pools, seed, config.policy.max_parallel, policy)
    deadline = deadline_s if deadline_s is not None else config.policy.deadline
    return Built(
        Simulation(compile_tasks(spec), options, models, pool_models), assumed, costs, deadline
    )
