"""The batch system behind the simulator's delegated pools (a Slurm partition, a Batch queue).

The core only submits to a delegated pool; here is who picks the node, as the
simulator plays it:

* a pool is ``count`` nodes of its shape (``PoolDef.capacity``), named
  ``<pool>-n<k>``, of which the first ``available`` can run jobs (all of them,
  unless a spot trace says fewer are there now);
* a job needs its task's vCPUs, memory (as the launch asks: escalated after
  out-of-memory) and GPUs on each of ``nodes`` different nodes; it starts on
  the first node(s) with room and otherwise waits, first come first served,
  but a job that fits starts even if one before it does not (backfill);
* a job's end frees its nodes for the jobs waiting.

Preemptions (a rate per node-hour, or a trace dropping nodes) are decided by
the engine; this class only says what runs where. Plain bookkeeping: no clock,
no randomness.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from stormproof.core.decisions import LaunchAttempt
from stormproof.core.defs import PoolDef, Resources


@dataclass(slots=True)
class _Node:
    name: str
    vcpus: float
    memory_mib: int
    gpus: int
    jobs: set[str] = field(default_factory=set)

    def fits(self, need: Resources) -> bool:
        return (
            self.vcpus >= need.vcpus - 1e-9
            and self.memory_mib >= need.memory_mib
            and self.gpus >= need.gpus
        )


@dataclass(slots=True)
class _Job:
    launch: LaunchAttempt
    need: Resources
    nodes: int
    on: tuple[_Node, ...] = ()


class BatchSystem:
    """The nodes of every delegated pool, and the jobs waiting for them."""

    def __init__(self, pools: Sequence[PoolDef]) -> None:
        self.nodes: dict[str, list[_Node]] = {
            p.name: [
                _Node(f"{p.name}-n{k}", p.capacity.vcpus, p.capacity.memory_mib, p.capacity.gpus)
                for k in range(p.count)
            ]
            for p in pools
            if p.delegated
        }
        self.available = {name: len(nodes) for name, nodes in self.nodes.items()}
        self.waiting: dict[str, list[_Job]] = {name: [] for name in self.nodes}
        self.jobs: dict[str, _Job] = {}

    def submit(self, launch: LaunchAttempt, need: Resources, nodes: int) -> tuple[str, ...] | None:
        """Start the job now if nodes have room (their names), else queue it (None)."""
        job = _Job(launch, need, nodes)
        self.jobs[launch.attempt_id] = job
        if not self._start(job):
            self.waiting[launch.pool].append(job)
            return None
        return tuple(n.name for n in job.on)

    def end(self, attempt_id: str) -> list[tuple[LaunchAttempt, tuple[str, ...]]]:
        """The job ended (or was cancelled while waiting): what starts on the room it left."""
        job = self.jobs.pop(attempt_id, None)
        if job is None:
            return []
        pool = job.launch.pool
        if not job.on:
            self.waiting[pool].remove(job)
            return []
        for node in job.on:
            node.jobs.discard(attempt_id)
            node.vcpus += job.need.vcpus
            node.memory_mib += job.need.memory_mib
            node.gpus += job.need.gpus
        return self._drain(pool)

    def waits(self, attempt_id: str) -> bool:
        job = self.jobs.get(attempt_id)
        return job is not None and not job.on

    def on_node(self, pool: str, k: int) -> list[str]:
        """The jobs running on node ``k`` of ``pool``."""
        return sorted(self.nodes[pool][k].jobs)

    def set_available(
        self, pool: str, count: int
    ) -> tuple[list[str], list[tuple[LaunchAttempt, tuple[str, ...]]]]:
        """Only the first ``count`` nodes run jobs from now on: the jobs on the others (to
        preempt), and what starts where nodes came back."""
        count = max(0, min(count, len(self.nodes[pool])))
        gone = sorted({a for node in self.nodes[pool][count:] for a in node.jobs})
        self.available[pool] = count
        return gone, self._drain(pool)

    def _drain(self, pool: str) -> list[tuple[LaunchAttempt, tuple[str, ...]]]:
        started = []
        for job in list(self.waiting[pool]):
            if self._start(job):
                self.waiting[pool].remove(job)
                started.append((job.launch, tuple(n.name for n in job.on)))
        return started

    def _start(self, job: _Job) -> bool:
        pool = job.launch.pool
        chosen = [n for n in self.nodes[pool][: self.available[pool]] if n.fits(job.need)]
        if len(chosen) < job.nodes:
            return False
        job.on = tuple(chosen[: job.nodes])
        for node in job.on:
            node.jobs.add(job.launch.attempt_id)
            node.vcpus -= job.need.vcpus
            node.memory_mib -= job.need.memory_mib
            node.gpus -= job.need.gpus
        return True
