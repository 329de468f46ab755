"""Capacity: pools of instances, and fitting attempts onto them.

An instance is a slot group with free vCPUs, memory and GPUs. A task with
``nodes: N`` takes one slot on each of N *different* instances of one pool,
all or nothing (a gang). Pools are tried in policy order: spot pools first
for tasks that allow spot, on-demand after; within a pool, first fit.

Pure bookkeeping: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stormproof.core.defs import Market, PoolDef, Resources, TaskDef


@dataclass(slots=True)
class Instance:
    id: str
    pool: PoolDef
    free: Resources
    alive: bool = True
    attempts: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Placement:
    pool: PoolDef
    instances: tuple[Instance, ...]


class Capacity:
    """The run's instances and what is placed on them."""

    def __init__(self, pools: tuple[PoolDef, ...]) -> None:
        self.pools = pools
        self.instances: dict[str, Instance] = {}
        self._by_pool: dict[str, list[Instance]] = {}
        for pool in pools:
            members = [Instance(f"{pool.name}-{i}", pool, pool.capacity) for i in range(pool.count)]
            self._by_pool[pool.name] = members
            self.instances.update((inst.id, inst) for inst in members)
        # Spot first (cheapest capacity the task may use), then on-demand; stable otherwise.
        self._order = sorted(pools, key=lambda p: 0 if p.market is Market.SPOT else 1)

    def pools_for(self, task: TaskDef) -> list[PoolDef]:
        return [p for p in self._order if task.spot_enabled or p.market is not Market.SPOT]

    def could_ever_fit(self, task: TaskDef) -> bool:
        """Whether some usable pool, empty, could hold the task."""
        return any(
            task.resources.fits_in(p.capacity) and task.nodes <= p.count
            for p in self.pools_for(task)
        )

    def find(self, task: TaskDef) -> Placement | None:
        for pool in self.pools_for(task):
            chosen: list[Instance] = []
            for inst in self._by_pool[pool.name]:
                if inst.alive and task.resources.fits_in(inst.free):
                    chosen.append(inst)
                    if len(chosen) == task.nodes:
                        return Placement(pool, tuple(chosen))
        return None

    def take(self, attempt_id: str, task: TaskDef, instance_ids: tuple[str, ...]) -> None:
        for iid in instance_ids:
            inst = self.instances[iid]
            inst.free = inst.free.minus(task.resources)
            inst.attempts.add(attempt_id)

    def release(self, attempt_id: str, task: TaskDef, instance_ids: tuple[str, ...]) -> None:
        for iid in instance_ids:
            inst = self.instances[iid]
            if attempt_id in inst.attempts:
                inst.attempts.discard(attempt_id)
                inst.free = inst.free.plus(task.resources)

    def check(self, usage: dict[str, Resources]) -> None:
        """Invariant: every instance's free + used == its capacity, and nothing is negative."""
        for inst in self.instances.values():
            used = usage.get(inst.id, Resources(0, 0, 0))
            total = inst.free.plus(used)
            cap = inst.pool.capacity
            if inst.free.vcpus < -1e-9 or inst.free.memory_mib < 0 or inst.free.gpus < 0:
                raise AssertionError(f"instance {inst.id} is oversubscribed: free {inst.free}")
            if (
                abs(total.vcpus - cap.vcpus) > 1e-6
                or total.memory_mib != cap.memory_mib
                or total.gpus != cap.gpus
            ):
                raise AssertionError(f"instance {inst.id}: free {inst.free} + used {used} != {cap}")
