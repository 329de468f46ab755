"""A run's identity: what it runs, on what, with which seed — fixed when it is created.

Everything the core is built from is stored with the run (the validated
workflow, the pools, the seed), so ``resume`` rebuilds the very same core from
the log alone: editing the workflow file or stormproof.yaml afterwards cannot
change a run that already started.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stormproof import __version__
from stormproof.core.defs import DEFAULT_MAX_JOBS, Market, PoolDef, PricePer, Resources
from stormproof.errors import RunIncompatible
from stormproof.spec.model import ASSUMED_RUNTIME_S, WorkflowSpec
from stormproof.store.base import EventLog

#: What a run's event log means to the core. ``resume`` replays the log through today's core
#: and must reach the state the run had, so bump this whenever the core would decide
#: differently on the same events; a run written under another format is then refused
#: (``check_replayable``) instead of being carried on by decisions it never made.
LOG_FORMAT = 1


@dataclass(frozen=True)
class RunContext:
    name: str
    spec: WorkflowSpec
    pools: tuple[PoolDef, ...]
    seed: int
    max_parallel: int | None
    workflow_path: str
    workflow_dir: str
    executor: str
    executor_options: dict[str, Any]
    #: Where checkpoints go: {"warm": url, "hot": dir | None, "cold": url | None, "cold_after_s"}.
    checkpoints: dict[str, Any] = field(default_factory=dict)
    #: Placement policy: fallback_after_interruptions, last_attempt_on_demand, launch_retry_s,
    #: breaker {threshold, window_s, cooldown_s, max_cooldown_s, min_healthy}.
    policy: dict[str, Any] = field(default_factory=dict)
    #: What interrupts each pool's instances on the local fleet: one dict per pool with
    #: pool, notice_s, interruption_rate, trace (absolute path), time_scale, trace_offset_s.
    sources: list[dict[str, Any]] = field(default_factory=list)
    #: Alert rules as ``stormproof.yaml`` had them when the run began (``Config.alert_rules``):
    #: a resume evaluates the same rules, so an alert fires once per cause.
    alerts: list[dict[str, Any]] = field(default_factory=list)
    #: The content hash of each declared input when the run (or its redrive) began, by path
    #: as written: the tasks' fingerprints are computed from these (``runtime.fingerprint``).
    input_hashes: dict[str, str] = field(default_factory=dict)
    #: The container runtime commands run in: {"runtime": None | "apptainer" | "docker" |
    #: "podman", "network": …} (``runtime.containers``), fixed when the run is created.
    container: dict[str, Any] = field(default_factory=dict)
    #: How the run (or its current segment, after a redrive) starts: the tasks it keeps,
    #: with why, the tasks it carries over a redrive, and the outputs it copies from the
    #: runs it reuses before it starts (``runtime.reuse``). Empty: a plain start.
    start: dict[str, Any] = field(default_factory=dict)
    #: Seconds a task without ``estimated_runtime`` is assumed to take (priorities, deadline
    #: policies); recorded so that a resume decides as the run did.
    default_runtime_s: float = 60.0
    #: Where the modelled pools' instances come from: ``local`` (this machine) or ``aws``
    #: (EC2 instances the run launches, ``capacity/aws.py``).
    capacity: str = "local"
    #: Which segment of its history the run is in: 0 until its first redrive, then the
    #: number of redrives; ``segment_seq`` is the seq of the row that began it (0: none).
    segment: int = 0
    segment_seq: int = 0
    #: The format of the run's event log, and the stormproof version that started the run.
    log_format: int = LOG_FORMAT
    written_by: str = __version__

    def to_meta(self) -> dict[str, Any]:
        return {
            "version": self.written_by,
            "log_format": self.log_format,
            "spec": self.spec.model_dump(mode="json", exclude_unset=True),
            "pools": [pool_to_dict(p) for p in self.pools],
            "seed": self.seed,
            "max_parallel": self.max_parallel,
            "workflow_path": self.workflow_path,
            "workflow_dir": self.workflow_dir,
            "executor": self.executor,
            "executor_options": self.executor_options,
            "checkpoints": self.checkpoints,
            "policy": self.policy,
            "sources": self.sources,
            "alerts": self.alerts,
            "input_hashes": self.input_hashes,
            "container": self.container,
            "start": self.start,
            "default_runtime_s": self.default_runtime_s,
            "capacity": self.capacity,
        }

    @classmethod
    def from_meta(cls, name: str, meta: dict[str, Any]) -> RunContext:
        return cls(
            name=name,
            spec=WorkflowSpec.model_validate(meta["spec"]),
            pools=tuple(pool_from_dict(p) for p in meta["pools"]),
            seed=int(meta["seed"]),
            max_parallel=meta.get("max_parallel"),
            workflow_path=meta["workflow_path"],
            workflow_dir=meta["workflow_dir"],
            executor=meta.get("executor", "local"),
            executor_options=dict(meta.get("executor_options") or {}),
            checkpoints=dict(meta.get("checkpoints") or {}),
            policy=dict(meta.get("policy") or {}),
            sources=list(meta.get("sources") or []),
            alerts=list(meta.get("alerts") or []),
            input_hashes=dict(meta.get("input_hashes") or {}),
            container=dict(meta.get("container") or {}),
            start=dict(meta.get("start") or {}),
            # Runs from before the key existed assumed a minute (compile.DEFAULT_RUNTIME_S then).
            default_runtime_s=float(meta.get("default_runtime_s", 60.0)),
            capacity=str(meta.get("capacity", "local")),
            # Runs from before the key existed wrote format 1.
            log_format=int(meta.get("log_format", 1)),
            written_by=str(meta.get("version", "unknown")),
        )

    def check_replayable(self) -> None:
        """Refuse to drive a run whose log today's core would read differently."""
        if self.log_format == LOG_FORMAT:
            return
        raise RunIncompatible(
            f"run {self.name!r} was started by stormproof {self.written_by}, whose event log "
            f"(format {self.log_format}) this stormproof {__version__} (format {LOG_FORMAT}) "
            "cannot replay: carrying it on could contradict what it already did. Finish it with "
            f"that version (pip install 'stormproof=={self.written_by}'), or start it again "
            f"under a new name: stormproof run {self.workflow_path} --name NEW"
        )


def pool_to_dict(p: PoolDef) -> dict[str, Any]:
    return {
        "name": p.name,
        "market": p.market.value,
        "vcpus": p.capacity.vcpus,
        "memory_mib": p.capacity.memory_mib,
        "gpus": p.capacity.gpus,
        "count": p.count,
        "price_usd_per_h": p.price_usd_per_h,
        "instance_type": p.instance_type,
        "weight": p.weight,
        "interruptible": p.interruptible,
        "delegated": p.delegated,
        "max_jobs": p.max_jobs,
        "price_per": p.price_per.value,
    }


def pool_from_dict(d: dict[str, Any]) -> PoolDef:
    return PoolDef(
        name=d["name"],
        market=Market(d["market"]),
        capacity=Resources(float(d["vcpus"]), int(d["memory_mib"]), int(d["gpus"])),
        count=int(d["count"]),
        price_usd_per_h=float(d["price_usd_per_h"]),
        instance_type=d.get("instance_type", "local"),
        weight=float(d.get("weight", 1.0)),
        interruptible=bool(d.get("interruptible", False)),
        # runs recorded before delegated pools existed had modelled ones, priced by instance
        delegated=bool(d.get("delegated", False)),
        max_jobs=int(d.get("max_jobs", DEFAULT_MAX_JOBS)),
        price_per=PricePer(d.get("price_per", PricePer.INSTANCE_HOUR.value)),
    )


def new_context(
    name: str,
    spec: WorkflowSpec,
    pools: tuple[PoolDef, ...],
    workflow_path: Path,
    executor: str,
    max_parallel: int | None = None,
    seed: int | None = None,
    checkpoints: dict[str, Any] | None = None,
    policy: dict[str, Any] | None = None,
    sources: list[dict[str, Any]] | None = None,
    executor_options: dict[str, Any] | None = None,
    alerts: list[dict[str, Any]] | None = None,
    input_hashes: dict[str, str] | None = None,
    container: dict[str, Any] | None = None,
    start: dict[str, Any] | None = None,
    default_runtime_s: float = ASSUMED_RUNTIME_S,
    capacity: str = "local",
) -> RunContext:
    return RunContext(
        name=name,
        spec=spec,
        pools=pools,
        seed=secrets.randbits(63) if seed is None else seed,
        max_parallel=max_parallel,
        workflow_path=str(workflow_path.resolve()),
        workflow_dir=str(workflow_path.resolve().parent),
        executor=executor,
        executor_options=dict(executor_options or {}),
        checkpoints=dict(checkpoints or {}),
        policy=dict(policy or {}),
        sources=list(sources or []),
        alerts=list(alerts or []),
        input_hashes=dict(input_hashes or {}),
        container=dict(container or {}),
        start=dict(start or {}),
        default_runtime_s=default_runtime_s,
        capacity=capacity,
    )


def load_context(store: EventLog, name: str) -> RunContext:
    """The run as it is now: after a redrive, its current segment's workflow and start
    (``runtime.redrive``)."""
    from stormproof.runtime.redrive import current_context

    info = store.get_run(name)
    return current_context(RunContext.from_meta(name, info.meta), store.read(name))
