"""The Dask executor's options, as a run records them (from ``stormproof.yaml``'s ``dask:``).

A run keeps its executor options in its metadata, so ``resume`` talks to the same cluster
the same way even if ``stormproof.yaml`` changed. ``config.DaskConfig`` validates what a user
writes; this is the executor's typed view of the dict that was recorded.

Pools are groups of workers marked by a *resource*: a worker of pool ``spot`` is started
with ``--resources "pool-spot=1,vcpus=4,memory=16384"`` and every attempt placed in ``spot``
asks for ``pool-spot: 0`` besides its ``vcpus`` and ``memory``. Dask's scheduler then sends
it only to workers that declare the marker, and, because it asks for none of it, the marker
bounds nothing: ``vcpus``, ``memory`` and ``gpus`` do. A resource rather than a worker name
prefix, because the scheduler enforces it for every worker, also those that join later
(autoscaling, dask-jobqueue adding jobs, a replaced spot node): an attempt waiting for its
pool starts on whichever such worker appears. A name prefix would be a list of workers fixed
when the attempt is submitted (``Client.submit(workers=...)``), blind to workers that come.
So a pool given a ``name_prefix`` is still a resource: a worker plugin gives the pool's
marker to every worker whose name starts with it, the ones there and those that join later.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stormproof.errors import ConfigError

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_NOTICE_S = 120.0
#: Resource names an attempt asks for (workers declare them with ``--resources``).
VCPUS, MEMORY, GPUS = "vcpus", "memory", "gpus"


def pool_resource(pool: str) -> str:
    """The default marker of pool ``pool``'s workers."""
    return f"pool-{pool}"


@dataclass(frozen=True)
class PoolOptions:
    #: The resource its workers declare; ``None``: every worker of the cluster.
    resource: str | None
    #: Seconds an attempt gets to checkpoint when its worker is retired.
    notice_s: float = DEFAULT_NOTICE_S
    #: Workers named so are the pool's too: ``worker.PoolMarker`` gives them ``resource``.
    name_prefix: str | None = None

    def has(self, name: str, resources: Mapping[str, float]) -> bool:
        """Whether a worker of this name and these resources is one of the pool's."""
        if self.resource is None or self.resource in resources:
            return True
        return self.name_prefix is not None and name.startswith(self.name_prefix)


@dataclass(frozen=True)
class LocalClusterOptions:
    """``dask.local``: a cluster of worker processes started with the orchestrator."""

    workers: int = 2
    threads_per_worker: int = 1
    vcpus: float = 1.0  # per worker
    memory_mib: int = 1024  # per worker

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LocalClusterOptions:
        return cls(
            workers=int(d.get("workers", 2)),
            threads_per_worker=int(d.get("threads_per_worker", 1)),
            vcpus=float(d.get("vcpus", 1.0)),
            memory_mib=int(d.get("memory_mib", 1024)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "threads_per_worker": self.threads_per_worker,
            "vcpus": self.vcpus,
            "memory_mib": self.memory_mib,
        }


@dataclass(frozen=True)
class DaskOptions:
    #: The scheduler's address (``tcp://host:8786``); ``None`` with ``local``.
    scheduler: str | None = None
    local: LocalClusterOptions | None = None
    pools: Mapping[str, PoolOptions] = field(default_factory=dict)
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    #: A start is reported only for commands still running after this long.
    hold_started_s: float = 0.02
    memory_sample_s: float = 0.1

    @classmethod
    def from_dict(cls, options: Mapping[str, Any] | None) -> DaskOptions:
        opts = dict(options or {})
        local = opts.get("local")
        pools = {
            str(name): PoolOptions(
                resource=None if p.get("resource") is None else str(p["resource"]),
                notice_s=float(p.get("notice_s", DEFAULT_NOTICE_S)),
                name_prefix=None if p.get("name_prefix") is None else str(p["name_prefix"]),
            )
            for name, p in (opts.get("pools") or {}).items()
        }
        return cls(
            scheduler=opts.get("scheduler") or None,
            local=None if local is None else LocalClusterOptions.from_dict(local),
            pools=pools,
            connect_timeout_s=float(opts.get("connect_timeout_s", DEFAULT_CONNECT_TIMEOUT_S)),
            hold_started_s=float(opts.get("hold_started_s", 0.02)),
            memory_sample_s=float(opts.get("memory_sample_s", 0.1)),
        )

    def prefixes(self) -> dict[str, str]:
        """Name prefix -> the resource its workers are given (``worker.PoolMarker``)."""
        return {
            p.name_prefix: p.resource
            for p in self.pools.values()
            if p.name_prefix is not None and p.resource is not None
        }

    def pool(self, name: str) -> PoolOptions:
        """A pool's options; one the file did not name is every worker of the cluster."""
        return self.pools.get(name) or PoolOptions(resource=None)

    def require_cluster(self) -> None:
        """Options recorded without a cluster (``STORMPROOF_EXECUTOR=dask`` over a file with
        no ``dask:`` section) name the section to write."""
        if not self.scheduler and self.local is None:
            raise ConfigError(
                "executor: dask needs a dask section in stormproof.yaml: dask: {scheduler: "
                "tcp://HOST:8786} for a running cluster, or dask: {local: {workers: 2}} for one "
                "started with the run"
            )

    @property
    def where(self) -> str:
        """The cluster, for messages."""
        if self.scheduler:
            return f"the Dask scheduler at {self.scheduler}"
        return "the local Dask cluster"


def run_scope(run: str, run_dir: str | os.PathLike[str]) -> str:
    """What makes this run's keys and topic unique on a shared cluster: its name and a digest
    of its directory (two homes may both have a run of the same name)."""
    digest = hashlib.sha256(os.fsencode(os.path.realpath(run_dir))).hexdigest()[:8]
    return f"{run}-{digest}"
