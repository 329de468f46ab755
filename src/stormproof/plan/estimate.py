"""Where each task would run, what it would cost, and how long the workflow would take.

The recipe guessed $0.10 per vCPU-hour for every task and 30 minutes per
stage. Here the numbers come from the workflow (``estimated_runtime``,
``vcpus``, ``memory``, ``gpus``, ``nodes``) and the configured pools (shape,
market, price), and the estimate says when it is only a lower bound.

Rules:

* **Placement** follows the policy order the core uses (DESIGN §4): for a
  task with ``spot_enabled`` the spot pools first, then the on-demand pools,
  each in the order stormproof.yaml lists them; without ``spot_enabled`` only
  the on-demand pools. A task fits a pool when one node's vCPUs, memory and
  GPUs fit one instance and it needs no more nodes than the pool has
  instances. A task that fits nowhere is a *problem*: the plan names the task,
  what it needs, what the largest pool has and what to change.
* **Cost** is billed by share, not by whole instance: a node that uses
  ``max(vcpus / instance vcpus, memory / instance memory, gpus / instance
  gpus)`` of an instance pays that fraction of the instance's price, because
  the scheduler packs several tasks onto one instance and the dominant
  resource is what makes the rest of it unusable to others. So
  ``cost = runtime_h x nodes x share x price``; a pool priced per vCPU-hour
  (``price_per: vcpu_hour``, a cluster's accounting) bills
  ``runtime_h x nodes x vcpus x price`` (``core.capacity.hourly_price``, what
  the core bills too). A run's real bill (whole instances, idle gaps,
  interruptions) can only be higher.
* **Duration** is the critical path with unbounded capacity, raised to what
  the total work needs on the pools' total vCPUs (and under ``max_parallel``)
  when that is longer. It is a *lower bound* when tasks lack
  ``estimated_runtime`` (they count as 0 s), when the unbounded schedule asks
  for more capacity than the pools have, or when some task fits nowhere.
* **Interruptions** are not priced by the plan: ``ReworkModel`` is the seam
  where expected rework from a pool's ``interruption_rate`` would plug in;
  today it is ``no_rework`` (factor 1), and the plan says so when a rate is
  configured and points to ``stormproof simulate``, which prices them.

Everything here is plain arithmetic over tuples: tasks are grouped by resource
shape so that placement is decided once per shape, not once per task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate

from stormproof.core.capacity import hourly_price
from stormproof.core.defs import Market, PoolDef, Resources
from stormproof.plan.graph import Dag, gc_paused
from stormproof.spec.model import WorkflowSpec

#: ``(pool, interruption rate per instance-hour or None, runtime s, checkpoint_enabled) -> factor``:
#: the expected instance time of a task over its runtime (>= 1), once interruptions cost rework.
ReworkModel = Callable[[PoolDef, float | None, float, bool], float]


def no_rework(pool: PoolDef, rate_per_h: float | None, runtime_s: float, checkpoint: bool) -> float:
    """Interruptions cost nothing: the model until rework estimation lands (DESIGN §5)."""
    return 1.0


@dataclass(frozen=True, slots=True)
class Estimate:
    """The plan's numbers. Per-task values are tuples indexed like ``spec.tasks``."""

    pools: tuple[PoolDef, ...]
    #: Index into ``pools`` of the pool each task would run on; -1 when it fits nowhere.
    pool_of: tuple[int, ...]
    cost_usd: tuple[float, ...]
    total_cost_usd: float
    #: What the same tasks would cost on the first on-demand pool each fits.
    on_demand_cost_usd: float
    vcpu_hours: float
    duration_s: float
    critical_path_s: float
    lower_bound: bool
    tasks_without_runtime: int
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    #: What each of ``tasks_without_runtime`` was taken to last (None: none is missing).
    assumed_runtime_s: float | None = None

    def pool_name(self, task_index: int) -> str | None:
        i = self.pool_of[task_index]
        return self.pools[i].name if i >= 0 else None


# --- placement ---------------------------------------------------------------------------

Shape = tuple[float, int, int, int, bool]  # vcpus, memory MiB, gpus, nodes, spot_enabled


def pool_order(pools: Sequence[PoolDef], spot_enabled: bool) -> list[int]:
    """Indexes of the pools a task may use, in the order placement tries them."""
    on_demand = [i for i, p in enumerate(pools) if p.market is Market.ON_DEMAND]
    if not spot_enabled:
        return on_demand
    return [i for i, p in enumerate(pools) if p.market is Market.SPOT] + on_demand


def shortfalls(pool: PoolDef, shape: Shape) -> list[str]:
    """The task fields that do not fit ``pool`` (empty: it fits)."""
    vcpus, memory, gpus, nodes, _ = shape
    cap = pool.capacity
    short = []
    if vcpus > cap.vcpus + 1e-9:
        short.append("vcpus")
    if memory > cap.memory_mib:
        short.append("memory")
    if gpus > cap.gpus:
        short.append("gpus")
    if nodes > pool.count:
        short.append("nodes")
    return short


def instance_share(pool: PoolDef, shape: Shape) -> float:
    """The fraction of one instance a node of the task occupies: its dominant resource."""
    vcpus, memory, gpus, _, _ = shape
    cap = pool.capacity
    share = max(vcpus / cap.vcpus, memory / cap.memory_mib)
    if cap.gpus:
        share = max(share, gpus / cap.gpus)
    return min(share, 1.0)


def place(pools: Sequence[PoolDef], shape: Shape) -> int:
    """Index of the first pool in policy order the task fits; -1 when none."""
    for i in pool_order(pools, shape[4]):
        if not shortfalls(pools[i], shape):
            return i
    return -1


def placement_problems(
    spec: WorkflowSpec, pools: Sequence[PoolDef], pools_from: str = "stormproof.yaml"
) -> list[str]:
    """What ``estimate`` reports as ``problems`` (tasks that fit no pool), without the graph
    and the pricing: ``run`` asks before every start, and a 10,000-task workflow should not
    wait a plan's worth of time for the answer."""
    pools = tuple(pools)
    fits: dict[Shape, bool] = {}
    unplaced: dict[Shape, list[str]] = {}
    for task in spec.tasks:
        shape: Shape = (task.vcpus, task.memory, task.gpus, task.nodes, task.spot_enabled)
        ok = fits.get(shape)
        if ok is None:
            ok = fits[shape] = place(pools, shape) >= 0
        if not ok:
            unplaced.setdefault(shape, []).append(task.id)
    return [_no_fit(ids, shape, pools, pools_from) for shape, ids in unplaced.items()]


def _first_on_demand(pools: Sequence[PoolDef], shape: Shape) -> int:
    for i in pool_order(pools, False):
        if not shortfalls(pools[i], shape):
            return i
    return -1


# --- the estimate ------------------------------------------------------------------------


def estimate(
    spec: WorkflowSpec,
    dag: Dag,
    pools: Sequence[PoolDef],
    *,
    start_s: Sequence[float] | None = None,
    finish_s: Sequence[float] | None = None,
    max_parallel: int | None = None,
    interruption_rates: Mapping[str, float | None] | None = None,
    rework: ReworkModel = no_rework,
    pools_from: str = "stormproof.yaml",
) -> Estimate:
    """Place every task, price it, and bound the workflow's duration.

    ``start_s``/``finish_s`` are the unbounded earliest times (``Dag.earliest``);
    pass them when already computed so the graph is swept once per plan.
    """
    with gc_paused():
        pools = tuple(pools)
        if start_s is None or finish_s is None:
            start_s, finish_s = dag.earliest()
        rates = interruption_rates or {}
        priced = _place_and_price(spec, dag.runtime_s, pools, rates, rework)
        problems = [
            _no_fit(ids, shape, pools, pools_from) for shape, ids in priced.unplaced.items()
        ]
        notes: list[str] = []
        if priced.no_on_demand:
            notes.append(
                f"{_count(priced.no_on_demand, 'task')} fit no on_demand pool: the on-demand "
                "equivalent counts them at the price of the pool they were placed on"
            )
        cp_s = max(finish_s, default=0.0)
        duration_s, tight = _duration(
            dag.runtime_s, pools, priced.demand, start_s, finish_s, cp_s, max_parallel, notes
        )
        used = {pools[p].name for p in set(priced.pool_of) if p >= 0}
        rated = sorted(name for name in used if rates.get(name))
        if rated and rework is no_rework:
            notes.append(
                f"interruption_rate of pool {', '.join(repr(n) for n in rated)} is not priced "
                "in by plan: cost and duration assume no interruption and no rework "
                "(`stormproof simulate` prices them)"
            )
        return Estimate(
            pools=pools,
            pool_of=tuple(priced.pool_of),
            cost_usd=tuple(priced.cost_usd),
            total_cost_usd=priced.total_usd,
            on_demand_cost_usd=priced.on_demand_usd,
            vcpu_hours=priced.vcpu_s / 3600.0,
            duration_s=duration_s,
            critical_path_s=cp_s,
            lower_bound=bool(
                (dag.missing_runtime and not dag.assumed_runtime_s) or tight or problems
            ),
            tasks_without_runtime=dag.missing_runtime,
            assumed_runtime_s=dag.assumed_runtime_s if dag.missing_runtime else None,
            problems=tuple(problems),
            notes=tuple(notes),
        )


@dataclass(slots=True)
class _Priced:
    """The per-task sweep's results; lists indexed like ``spec.tasks``."""

    pool_of: list[int] = field(default_factory=list)
    cost_usd: list[float] = field(default_factory=list)
    #: vCPUs x nodes of each task that will occupy capacity (placed, runtime > 0), else 0.
    demand: list[float] = field(default_factory=list)
    unplaced: dict[Shape, list[str]] = field(default_factory=dict)
    no_on_demand: int = 0
    total_usd: float = 0.0
    on_demand_usd: float = 0.0
    vcpu_s: float = 0.0


def _place_and_price(
    spec: WorkflowSpec,
    runtime: Sequence[float],
    pools: tuple[PoolDef, ...],
    rates: Mapping[str, float | None],
    rework: ReworkModel,
) -> _Priced:
    out = _Priced()
    shapes: dict[Shape, tuple[int, float, float]] = {}  # -> placed, USD/h, on-demand USD/h
    pool_of, costs, demand = out.pool_of, out.cost_usd, out.demand
    total_usd = on_demand_usd = vcpu_s = 0.0
    for task, runtime_s in zip(spec.tasks, runtime, strict=True):
        shape: Shape = (task.vcpus, task.memory, task.gpus, task.nodes, task.spot_enabled)
        known = shapes.get(shape)
        if known is None:
            known = shapes[shape] = _price_shape(pools, shape)
        placed, usd_h, od_usd_h = known
        width = task.vcpus * task.nodes
        vcpu_s += runtime_s * width
        pool_of.append(placed)
        if placed < 0:
            out.unplaced.setdefault(shape, []).append(task.id)
            costs.append(0.0)
            demand.append(0.0)
            continue
        demand.append(width if runtime_s > 0 else 0.0)
        hours = runtime_s / 3600.0
        cost = hours * usd_h
        if rework is not no_rework:
            pool = pools[placed]
            cost *= rework(pool, rates.get(pool.name), runtime_s, task.checkpoint_enabled)
        costs.append(cost)
        total_usd += cost
        if od_usd_h < 0:
            out.no_on_demand += 1
            on_demand_usd += cost
        else:
            on_demand_usd += hours * od_usd_h
    out.total_usd, out.on_demand_usd, out.vcpu_s = total_usd, on_demand_usd, vcpu_s
    return out


def _price_shape(pools: Sequence[PoolDef], shape: Shape) -> tuple[int, float, float]:
    """Placed pool, and USD per hour of runtime there and on the first on-demand fit (-1)."""
    nodes = shape[3]
    placed = place(pools, shape)
    if placed < 0:
        return -1, 0.0, -1.0
    pool = pools[placed]
    need = Resources(shape[0], shape[1], shape[2])
    rate = hourly_price(pool, need, nodes)
    if pool.market is Market.ON_DEMAND:
        return placed, rate, rate
    od = _first_on_demand(pools, shape)
    if od < 0:
        return placed, rate, -1.0
    return placed, rate, hourly_price(pools[od], need, nodes)


def _duration(
    runtime: Sequence[float],
    pools: Sequence[PoolDef],
    demand: Sequence[float],
    start_s: Sequence[float],
    finish_s: Sequence[float],
    cp_s: float,
    max_parallel: int | None,
    notes: list[str],
) -> tuple[float, bool]:
    """The duration bound and whether capacity is known to be tighter than the critical path.

    Two bounds besides the critical path, both valid whatever the packing: the
    total vCPU-seconds over the pools' total vCPUs, and the total task-seconds
    over ``max_parallel``. Capacity counts as tight when the unbounded
    schedule's peak concurrent demand exceeds what the pools offer (packing
    losses below that peak are not modelled).
    """
    capacity_vcpus = sum(p.capacity.vcpus * p.count for p in pools)
    duration_s = cp_s
    tight = False
    if capacity_vcpus > 0 and sum(demand) > capacity_vcpus + 1e-9:
        peak = _peak(start_s, finish_s, demand)
        if peak > capacity_vcpus + 1e-9:
            tight = True
            bound = sum(d * r for d, r in zip(demand, runtime, strict=True)) / capacity_vcpus
            notes.append(
                f"capacity is tighter than the dependencies: at its peak the workflow could use "
                f"{fmt_number(peak)} vCPUs at once, the pools have {fmt_number(capacity_vcpus)}; "
                f"the total work alone needs {human_duration(bound)} on them"
            )
            duration_s = max(duration_s, bound)
    if max_parallel is not None:
        busy = [1.0 if d else 0.0 for d in demand]
        if sum(busy) > max_parallel and _peak(start_s, finish_s, busy) > max_parallel:
            tight = True
            bound = sum(r for r, b in zip(runtime, busy, strict=True) if b) / max_parallel
            notes.append(
                f"max_parallel {max_parallel} is below the workflow's parallelism: the total "
                f"work alone needs {human_duration(bound)} at {max_parallel} tasks at a time"
            )
            duration_s = max(duration_s, bound)
    return duration_s, tight


def _peak(start_s: Sequence[float], finish_s: Sequence[float], amount: Sequence[float]) -> float:
    """Largest sum of ``amount`` over tasks running at one instant (ends free before starts).

    Finishes come first in ``times`` and the sort is stable, so at equal times
    a finishing task frees its share before a starting one takes it.
    """
    busy = [i for i, a in enumerate(amount) if a and finish_s[i] > start_s[i]]
    times = [finish_s[i] for i in busy] + [start_s[i] for i in busy]
    deltas = [-amount[i] for i in busy] + [amount[i] for i in busy]
    order = sorted(range(len(times)), key=times.__getitem__)
    return max(accumulate([deltas[k] for k in order]), default=0.0)


# --- messages ----------------------------------------------------------------------------


def _no_fit(ids: Sequence[str], shape: Shape, pools: Sequence[PoolDef], pools_from: str) -> str:
    """Why these tasks fit no pool, and the fix, naming the file the pools came from."""
    """One problem line for every task of one shape that fits no usable pool."""
    vcpus, memory, gpus, nodes, spot_enabled = shape
    who = _who(ids)
    verb = "needs" if len(ids) == 1 else "need"
    need = f"{fmt_number(vcpus)} vCPUs / {fmt_number(memory)} MiB"
    if gpus:
        need += f" / {_count(gpus, 'GPU')}"
    if nodes > 1:
        need = f"{nodes} nodes x {need}"
    usable = pool_order(pools, spot_enabled)
    if not usable:
        return (
            f"{who} {verb} {need} on on-demand capacity (spot_enabled: false) but every pool "
            f"is spot — add an on_demand pool in {pools_from} or set spot_enabled: true"
        )
    largest = max(usable, key=lambda i: _size(pools[i]))
    pool = pools[largest]
    cap = pool.capacity
    has = f"{fmt_number(cap.vcpus)} vCPUs / {fmt_number(cap.memory_mib)} MiB"
    if gpus or cap.gpus:
        has += f" / {_count(cap.gpus, 'GPU')}"
    short = shortfalls(pool, shape)
    tried = ""
    if len(usable) > 1:
        tried = f", which none of the pools {', '.join(pools[i].name for i in usable)} can hold"
    message = (
        f"{who} {verb} {need}{tried}; the largest pool {pool.name!r} has "
        f"{_count(pool.count, 'instance')} of {has} — add a pool in {pools_from} "
        f"or lower {'/'.join(short)}"
    )
    if not spot_enabled and place(pools, (vcpus, memory, gpus, nodes, True)) >= 0:
        message += " (a spot pool would fit, but spot_enabled is false)"
    return message


def _size(pool: PoolDef) -> tuple[float, int, int, int]:
    cap = pool.capacity
    return (cap.vcpus, cap.memory_mib, cap.gpus, pool.count)


def _who(ids: Sequence[str]) -> str:
    if len(ids) == 1:
        return ids[0]
    if len(ids) <= 3:
        return f"{', '.join(ids[:-1])} and {ids[-1]}"
    return f"{', '.join(ids[:3])} and {len(ids) - 3:,} more tasks"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def fmt_number(value: float) -> str:
    """``2``, ``0.5``, ``32,768``: no trailing ``.0``, thousands separated."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def human_duration(seconds: float) -> str:
    """``45s``, ``12m 30s``, ``1h 05m``, ``2d 03h``: precise enough for a plan, short.

    Under a second but not nothing is ``<1s`` (a measured no-op task is not free)."""
    if 0 < seconds < 1:
        return "<1s"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"
