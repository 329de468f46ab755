"""Capacity: pools of instances, their lives, and fitting attempts onto them.

An instance is a slot group with free vCPUs, memory and GPUs. Each has an id
that is never reused (``<pool>-<n>``), so "nothing is ever placed on a removed
instance" can be checked. Its life::

    pending ──InstanceUp──> up ──notice / scale down──> draining ──> gone
       └──InstanceLaunchFailed──> failed            up ──InstanceLost──> gone

Every instance starts ``pending``, the fleet's initial ones too: the core
asks the capacity backend for each (``LaunchInstance``) when the run starts.
Only ``up`` instances take new attempts. A task with ``nodes: N`` takes one
slot on each of N *different* instances of one pool, all or nothing (a gang).
Which pools a task may use and in what order is the caller's business
(``pool_order``): spot first by strategy, on-demand after.

A *delegated* pool (``PoolDef.delegated``: a Slurm partition, a Batch queue)
has no instances the core launches or places on: the batch system picks the
node. It takes an attempt while fewer than ``max_jobs`` of the run's attempts
are outstanding there and the attempt's per-node need fits the node shape
(``capacity``) with ``nodes <= count``; a ``Placement`` there names no
instance. The nodes attempts are reported to run on (``AttemptStarted.nodes``)
become instances of the pool, ``up`` (named as the batch system names them),
so notices and losses can name them; their resources are not tracked and
nothing is placed on them. A node stays known until it is lost or the run
ends (an idle one is kept: ``fleet`` shows where the run has been), and one
the batch system runs an attempt on again is ``up`` again, whatever befell it.

A pool's ``weight`` is what one of its instances counts for (AWS Spot Fleet's
``WeightedCapacity``): ``diversify`` spreads a fleet's target capacity over
the spot pools in those units, and the ``diversified`` strategy spreads
placements in proportion to each pool's units (instances x weight).

Pure bookkeeping: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from stormproof.core.defs import Market, PoolDef, PricePer, Resources, SpotStrategy
from stormproof.core.record import record


class InstanceState(str, Enum):
    PENDING = "pending"
    UP = "up"
    DRAINING = "draining"  # reclaim notice received, or retiring after a scale-down
    GONE = "gone"
    FAILED = "failed"  # the launch was refused

    @property
    def counts(self) -> bool:
        """Whether the instance counts towards its pool's target (asked for, not yet lost)."""
        return self in (InstanceState.PENDING, InstanceState.UP)


@dataclass(slots=True)
class Instance:
    id: str
    pool: PoolDef
    #: What is free on it, as three numbers changed in place: placing and ending an attempt
    #: are the hottest bookkeeping of a simulated run (``free`` gives them as Resources).
    free_vcpus: float
    free_memory_mib: int
    free_gpus: int
    state: InstanceState = InstanceState.PENDING
    attempts: set[str] = field(default_factory=set)
    #: Scaled down while busy: terminate once its last attempt ends (no kill).
    retiring: bool = False

    @property
    def free(self) -> Resources:
        return Resources(self.free_vcpus, self.free_memory_mib, self.free_gpus)

    @property
    def alive(self) -> bool:
        return self.state is InstanceState.UP


@record
class Placement:
    pool: PoolDef
    instances: tuple[Instance, ...]


def diversify(target_units: float, pools: Sequence[PoolDef]) -> dict[str, int]:
    """How many instances each pool starts with to reach ``target_units``, diversified.

    AWS Spot Fleet's ``diversified`` allocation with ``WeightedCapacity``: the
    next instance always goes to the pool holding the fewest units so far (the
    first in file order on a tie), until the units reach the target. So every
    pool holds about the same capacity, the total overshoots the target by
    less than one instance, and a target smaller than the pools leaves the
    last pools empty.
    """
    counts = {p.name: 0 for p in pools}
    if not pools:
        return counts
    units = {p.name: 0.0 for p in pools}
    total = 0.0
    while total < target_units - 1e-9:
        pool = min(pools, key=lambda p: units[p.name])
        counts[pool.name] += 1
        units[pool.name] += pool.weight
        total += pool.weight
    return counts


def share(need: Resources, of: Resources) -> float:
    """The fraction of an instance an attempt occupies: its largest dimension decides."""
    part = max(need.vcpus / of.vcpus, need.memory_mib / of.memory_mib)
    if of.gpus:
        part = max(part, need.gpus / of.gpus)
    return min(1.0, part)


def hourly_price(pool: PoolDef, need: Resources, nodes: int) -> float:
    """What an attempt of ``nodes`` x ``need`` costs per hour on ``pool``, by its
    ``price_per``: its share of each node's shape at the instance price, or its vCPUs at
    the vCPU price (``plan``, the core and ``simulate`` all bill by this)."""
    if pool.price_per is PricePer.VCPU_HOUR:
        return pool.price_usd_per_h * need.vcpus * nodes
    return pool.price_usd_per_h * share(need, pool.capacity) * nodes


class Capacity:
    """The run's instances and what is placed on them."""

    def __init__(self, pools: tuple[PoolDef, ...]) -> None:
        self.pools = pools
        self.by_name = {p.name: p for p in pools}
        self.instances: dict[str, Instance] = {}
        #: Instances wanted per modelled pool (a delegated pool's nodes are not ours: 0).
        self.target: dict[str, int] = {p.name: 0 if p.delegated else p.count for p in pools}
        #: Attempts placed or running per delegated pool (at most its ``max_jobs``).
        self.outstanding: dict[str, int] = {p.name: 0 for p in pools if p.delegated}
        self.placements: dict[str, int] = {p.name: 0 for p in pools}
        self._by_pool: dict[str, list[Instance]] = {p.name: [] for p in pools}
        self._next: dict[str, int] = {p.name: 0 for p in pools}
        self._spot = [p for p in pools if p.market is Market.SPOT]
        self._on_demand = sorted(
            (p for p in pools if p.market is not Market.SPOT), key=lambda p: p.price_usd_per_h
        )
        self._spot_then_on_demand = self._spot + self._on_demand

    # ------------------------------------------------------------------ instances
    def add(self, pool: PoolDef, state: InstanceState = InstanceState.PENDING) -> Instance:
        n = self._next[pool.name]
        self._next[pool.name] = n + 1
        cap = pool.capacity
        inst = Instance(f"{pool.name}-{n}", pool, cap.vcpus, cap.memory_mib, cap.gpus, state)
        self.instances[inst.id] = inst
        self._by_pool[pool.name].append(inst)
        return inst

    def remove(self, inst: Instance, state: InstanceState) -> None:
        """The instance is gone (or its launch failed): it never takes work again."""
        inst.state = state
        members = self._by_pool[inst.pool.name]
        if inst in members:
            members.remove(inst)

    def members(self, pool: str) -> list[Instance]:
        """The pool's instances that are not gone or failed, oldest first."""
        return self._by_pool[pool]

    def counted(self, pool: str) -> int:
        return sum(1 for i in self._by_pool[pool] if i.state.counts)

    def up(self, pool: str) -> int:
        return sum(1 for i in self._by_pool[pool] if i.state is InstanceState.UP)

    # ------------------------------------------------------------------ placement
    def pool_order(
        self, spot: bool, strategy: SpotStrategy, faults: Mapping[str, int]
    ) -> list[PoolDef]:
        """Pools to try, best first: spot ones (if allowed) by strategy, then on-demand by price."""
        if not spot or not self._spot:
            return self._on_demand
        if len(self._spot) == 1:
            return self._spot_then_on_demand
        return sorted(self._spot, key=lambda p: self._rank(p, strategy, faults)) + self._on_demand

    def _rank(
        self, pool: PoolDef, strategy: SpotStrategy, faults: Mapping[str, int]
    ) -> tuple[float, ...]:
        per_vcpu = pool.price_usd_per_h / pool.capacity.vcpus
        if strategy is SpotStrategy.LOWEST_PRICE:
            return (per_vcpu,)
        if strategy is SpotStrategy.CAPACITY_OPTIMIZED:
            if pool.delegated:  # what is free there is the batch system's to know: job slots
                free = pool.max_jobs - self.outstanding[pool.name]
            else:
                free = sum(1 for i in self._by_pool[pool.name] if i.alive and not i.attempts)
            return (faults.get(pool.name, 0), -free)
        if strategy is SpotStrategy.PRICE_CAPACITY_OPTIMIZED:
            return (faults.get(pool.name, 0), per_vcpu)
        units = pool.weight * (pool.count if pool.delegated else self.target[pool.name])
        return (self.placements[pool.name] / units if units > 0 else math.inf,)

    def could_ever_fit(self, need: Resources, nodes: int, spot: bool) -> bool:
        """Whether some usable pool, at its configured size and empty, could hold the attempt."""
        return any(
            need.fits_in(p.capacity) and nodes <= max(p.count, self.target[p.name])
            for p in self.pools
            if spot or p.market is not Market.SPOT
        )

    def find_in(self, pool: PoolDef, need: Resources, nodes: int) -> Placement | None:
        if pool.delegated:
            return self._room_in(pool, need, nodes)
        chosen: list[Instance] = []
        up = InstanceState.UP
        vcpus, memory, gpus = need.vcpus - 1e-9, need.memory_mib, need.gpus
        for inst in self._by_pool[pool.name]:
            if (  # inlined fits_in: this loop runs once per instance per placement
                inst.free_vcpus >= vcpus
                and inst.free_memory_mib >= memory
                and inst.free_gpus >= gpus
                and inst.state is up
            ):
                chosen.append(inst)
                if len(chosen) == nodes:
                    return Placement(pool, tuple(chosen))
        return None

    def _room_in(self, pool: PoolDef, need: Resources, nodes: int) -> Placement | None:
        """A delegated pool takes the attempt if it has a job slot and the shape could hold it."""
        if self.outstanding[pool.name] >= pool.max_jobs:
            return None
        if nodes > pool.count or not need.fits_in(pool.capacity):
            return None
        return Placement(pool, ())

    def submitted(self, pool: PoolDef) -> None:
        """An attempt was placed on a delegated pool: one job slot fewer."""
        self.outstanding[pool.name] += 1
        self.placements[pool.name] += 1

    def settled(self, pool: str, attempt_id: str, node_ids: tuple[str, ...]) -> None:
        """An attempt on a delegated pool ended: its job slot is free, its nodes forget it."""
        self.outstanding[pool] -= 1
        for nid in node_ids:
            node = self.instances.get(nid)
            if node is not None:
                node.attempts.discard(attempt_id)

    def node(self, pool: PoolDef, node_id: str) -> tuple[Instance, bool] | None:
        """The node ``node_id`` of a delegated pool, up; and whether it was not up before
        (new, or gone or draining before the batch system ran an attempt there again).
        None if the name is an instance of a modelled pool's."""
        inst = self.instances.get(node_id)
        if inst is not None and not inst.pool.delegated:
            return None
        if inst is None:
            cap = pool.capacity
            inst = Instance(node_id, pool, cap.vcpus, cap.memory_mib, cap.gpus, InstanceState.UP)
            self.instances[node_id] = inst
            self._by_pool[pool.name].append(inst)
            return inst, True
        if inst.state is InstanceState.UP:
            return inst, False
        if inst not in self._by_pool[inst.pool.name]:
            self._by_pool[inst.pool.name].append(inst)
        inst.state = InstanceState.UP
        return inst, True

    def take(self, attempt_id: str, need: Resources, instance_ids: tuple[str, ...]) -> None:
        for iid in instance_ids:
            inst = self.instances[iid]
            inst.free_vcpus -= need.vcpus
            inst.free_memory_mib -= need.memory_mib
            inst.free_gpus -= need.gpus
            inst.attempts.add(attempt_id)
            self.placements[inst.pool.name] += 1

    def release(self, attempt_id: str, need: Resources, instance_ids: tuple[str, ...]) -> None:
        for iid in instance_ids:
            inst = self.instances[iid]
            if attempt_id in inst.attempts:
                inst.attempts.discard(attempt_id)
                inst.free_vcpus += need.vcpus
                inst.free_memory_mib += need.memory_mib
                inst.free_gpus += need.gpus

    def check(self, usage: dict[str, Resources]) -> None:
        """Invariant: every instance's free + used == its capacity, and nothing is negative;
        no delegated pool has more than ``max_jobs`` attempts outstanding."""
        for pool in self.pools:
            if pool.delegated and not 0 <= self.outstanding[pool.name] <= pool.max_jobs:
                n = self.outstanding[pool.name]
                raise AssertionError(
                    f"{n} attempts outstanding in {pool.name}, max {pool.max_jobs}"
                )
        for inst in self.instances.values():
            if inst.pool.delegated:
                continue  # a node's resources are the batch system's business
            used = usage.get(inst.id, Resources(0, 0, 0))
            free = inst.free
            total = free.plus(used)
            cap = inst.pool.capacity
            if free.vcpus < -1e-9 or free.memory_mib < 0 or free.gpus < 0:
                raise AssertionError(f"instance {inst.id} is oversubscribed: free {free}")
            if (
                abs(total.vcpus - cap.vcpus) > 1e-6
                or total.memory_mib != cap.memory_mib
                or total.gpus != cap.gpus
            ):
                raise AssertionError(f"instance {inst.id}: free {free} + used {used} != {cap}")
