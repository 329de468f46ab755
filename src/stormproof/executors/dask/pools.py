"""Pools as groups of Dask workers: their shape and size for ``plan``, and what no worker holds.

A pool's workers are those that declare its marker resource (``options``' docstring says why
a resource), or whose name starts with its ``name_prefix`` (``worker.PoolMarker`` gives them
the marker); a pool with no marker (``resource: null``, or the default pool when
stormproof.yaml names none) is every worker. ``describe`` gives each pool what the file left
out: one node's shape (the most any of its workers offers of ``vcpus``, ``memory`` and
``gpus``) and ``count`` (its workers now). ``check`` refuses, before anything is submitted, a
task that Dask would hold forever: one asking for several nodes (an attempt runs in one
worker), or one that fits a pool's shape but none of its workers (a pool of unlike workers,
whose largest vCPUs and largest memory are on different workers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from stormproof.config import SettingError
from stormproof.core.defs import PoolDef, Resources
from stormproof.errors import ConfigError
from stormproof.executors.dask import cluster
from stormproof.executors.dask.cluster import WorkerInfo
from stormproof.executors.dask.options import GPUS, MEMORY, VCPUS, DaskOptions, PoolOptions


def inventory(options: DaskOptions) -> list[WorkerInfo]:
    """The cluster's workers now (those ``local:`` would start, without starting them)."""
    options.require_cluster()
    if options.local is not None:
        markers = [p.resource for p in options.pools.values() if p.resource]
        return cluster.local_workers(options.local, markers)
    return cluster.workers(cluster.shared_client(options))


def members(workers: Sequence[WorkerInfo], pool: PoolOptions) -> list[WorkerInfo]:
    return [w for w in workers if pool.has(w.name, w.resources)]


def describe(pools: tuple[PoolDef, ...], raw: Mapping[str, Any]) -> tuple[PoolDef, ...]:
    """``describe_pools``: each pool's node shape and count from its workers (see above)."""
    options = DaskOptions.from_dict(raw)
    workers = inventory(options)
    named = list(options.pools)  # in stormproof.yaml's order: where to point at a pool
    out = []
    for pool in pools:
        where: tuple[int | str, ...] = (
            ("pools", named.index(pool.name)) if pool.name in named else ("dask",)
        )
        marker = options.pool(pool.name).resource
        mine = members(workers, options.pool(pool.name))
        cap = pool.capacity
        if not mine:
            if cap.vcpus and cap.memory_mib and pool.count:
                out.append(pool)  # the file gave its shape: workers may come later
                continue
            raise SettingError(where, _no_workers(pool.name, marker, options, workers))
        _require_resources(where, pool.name, mine, marker)
        shape = Resources(
            cap.vcpus or max(w.resources[VCPUS] for w in mine),
            cap.memory_mib or int(max(w.resources[MEMORY] for w in mine)),
            cap.gpus or int(max(w.resources.get(GPUS, 0.0) for w in mine)),
        )
        out.append(dataclasses.replace(pool, capacity=shape, count=pool.count or len(mine)))
    return tuple(out)


def check(tasks: Sequence[Any], pools: Sequence[PoolDef], raw: Mapping[str, Any]) -> None:
    """``check_workflow``: refuse tasks Dask would hold forever (see the module docstring)."""
    options = DaskOptions.from_dict(raw)
    workers = inventory(options)
    problems = []
    for i, task in enumerate(tasks):
        if task.nodes > 1:
            problems.append(
                f"tasks[{i}] ({task.id}): asks for nodes: {task.nodes}, and Dask runs an attempt "
                "in one worker; give it nodes: 1 (and the vcpus it needs), or run it on an "
                "executor with multi-node jobs (slurm)"
            )
            continue
        for pool in pools:
            cap = pool.capacity
            if task.vcpus > cap.vcpus or task.memory > cap.memory_mib or task.gpus > cap.gpus:
                continue  # the core never sends it there
            mine = members(workers, options.pool(pool.name))
            if mine and not any(w.holds(task.vcpus, task.memory, task.gpus) for w in mine):
                problems.append(
                    f"tasks[{i}] ({task.id}): no single worker of pool {pool.name!r} has "
                    f"vcpus {task.vcpus:g}, memory {task.memory} MiB"
                    + (f" and gpus {task.gpus}" if task.gpus else "")
                    + " (its workers: "
                    + ", ".join(f"{w.name} {_shape(w)}" for w in mine[:4])
                    + "); ask for less, or add a larger worker to the pool"
                )
    if problems:
        raise ConfigError(
            "some tasks cannot run on the Dask cluster:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def _require_resources(
    where: tuple[int | str, ...], pool: str, mine: Sequence[WorkerInfo], marker: str | None
) -> None:
    """Every attempt asks for ``vcpus`` and ``memory``: a worker without them takes none."""
    for w in mine:
        missing = [r for r in (VCPUS, MEMORY) if r not in w.resources]
        if missing:
            have = ",".join(f"{k}={v:g}" for k, v in w.resources.items()) or "none"
            example = f"vcpus=4,memory=16384{',' + marker + '=1' if marker else ''}"
            raise ConfigError(
                f"pool {pool!r}: the Dask worker {w.name} ({w.address}) declares no "
                f"{' or '.join(missing)} resource (it has {have}), so no attempt could run "
                f'there: start it with --resources "{example}" (memory in MiB)'
            )


def _no_workers(
    pool: str, marker: str | None, options: DaskOptions, workers: list[WorkerInfo]
) -> str:
    if not workers:
        return (
            f"pool {pool!r}: {options.where} has no workers now, so the pool's size is unknown: "
            "start workers, or give the pool's vcpus, memory and count in stormproof.yaml"
        )
    seen = sorted({k for w in workers for k in w.resources if k not in (VCPUS, MEMORY, GPUS)})
    prefix = options.pool(pool).name_prefix
    if prefix is not None:
        names = ", ".join(sorted(w.name for w in workers)[:6])
        return (
            f"pool {pool!r}: no worker of {options.where} has a name that starts with "
            f"{prefix!r} (dask.pools.{pool}.name_prefix; workers: {names}) or declares the "
            f"resource {marker!r}: name its workers so, fix the prefix, or give the pool's "
            "vcpus, memory and count if its workers come later"
        )
    return (
        f"pool {pool!r}: no worker of {options.where} declares the resource {marker!r} that "
        f"marks the pool's workers (markers seen: {', '.join(seen) or 'none'}): start its "
        f'workers with --resources "{marker}=1,vcpus=...,memory=...", name the marker the '
        f"workers have in dask.pools.{pool}.resource, or give the pool's vcpus, memory and "
        "count if its workers come later"
    )


def _shape(w: WorkerInfo) -> str:
    r = w.resources
    return f"vcpus={r.get(VCPUS, 0):g} memory={r.get(MEMORY, 0):g}"
