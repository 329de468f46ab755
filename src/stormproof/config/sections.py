"""The sections of ``stormproof.yaml`` that every executor reads: pools, the spot fleet, the
breakers, the policy, the checkpoint tiers, and the alert rules."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    field_validator,
)

from stormproof.config.fields import (
    MAX_INSTANCES,
    PARTITION_PATTERN,
    POOL_NAME_PATTERN,
    StrictSection,
    none_as_empty_mapping,
    one_of,
    optional_duration,
    parse_instance_types,
)
from stormproof.core.defs import (
    DEFAULT_MAX_JOBS,
    BreakerRule,
    Market,
    PoolDef,
    PricePer,
    Resources,
)
from stormproof.spec.model import parse_duration


class PoolConfig(StrictSection):
    """One kind of capacity: ``count`` identical instances of one shape, at one price.

    On the local executor a pool is simulated capacity on this machine; on
    Slurm a partition; on AWS a spot or on-demand EC2 capacity.

    A pool is *modelled* (the core places on its instances) or *delegated* (a
    batch system places: every pool is, when the executor says it delegates
    placement). A delegated pool's ``vcpus``/``memory`` are one node's and
    ``count`` its nodes; the executor may fill them from the batch system
    (``executors.base.describe_pools``), so they may be left out there.
    """

    name: str = Field(pattern=POOL_NAME_PATTERN)
    market: Annotated[Market, BeforeValidator(one_of("spot", "on_demand"))]
    #: Instance type name, for the people reading the plan and for cloud backends.
    instance: str = Field(default="local", min_length=1)
    #: Required on a modelled pool; a delegated pool's executor may tell them.
    vcpus: float | None = Field(default=None, gt=0, description="vCPUs of one instance")
    memory: int | None = Field(default=None, gt=0, description="MiB of one instance")
    gpus: int = Field(default=0, ge=0)
    price: float = Field(default=0.0, ge=0, description="USD per instance-hour")
    #: What ``price`` is per: an instance (node) hour, or a vCPU-hour (``core.defs.PricePer``).
    price_per: Annotated[str, BeforeValidator(one_of(*(p.value for p in PricePer)))] = (
        PricePer.INSTANCE_HOUR.value
    )
    #: Instances at the start (1 when not given); with ``fleet.target_capacity`` the fleet
    #: decides it for spot pools; a delegated pool's nodes (its executor may tell them).
    # bounded: the core keeps every instance, and a typo of a few zeros must not hang plan/run
    count: int | None = Field(default=None, ge=1, le=MAX_INSTANCES)
    #: Delegated pools only: at most this many of a run's attempts placed or running there at
    #: once (default ``core.defs.DEFAULT_MAX_JOBS``); the batch system queues what its nodes
    #: cannot run yet.
    max_jobs: int | None = Field(default=None, ge=1, le=MAX_INSTANCES)
    #: Capacity units one instance counts for (AWS Spot Fleet's ``WeightedCapacity``): what
    #: ``fleet.target_capacity`` is spread in, and how placements spread under ``diversified``.
    weight: float = Field(default=1.0, gt=0)
    #: Expected interruptions per instance-hour (spot); ``None`` means unknown. On the local
    #: executor instances are interrupted at random at this rate (seeded by the run's seed).
    interruption_rate: float | None = Field(default=None, ge=0)
    #: How long an interruption notice warns before the instance goes (AWS: 2 min).
    notice: Annotated[float, BeforeValidator(parse_duration)] = 120.0
    #: A spot availability trace (SkyPilot format) the pool's capacity follows over time.
    trace: str | None = None
    #: Trace seconds per real second: 1000 replays a 2-week trace in about 20 minutes.
    time_scale: float = Field(default=1.0, gt=0)
    #: Where in the trace the run starts (a duration into it); default: its beginning.
    trace_offset: Annotated[float, BeforeValidator(parse_duration)] = 0.0
    #: AWS only: the EC2 instance types of the pool's compute environment (or fleet), as a
    #: list, or a mapping of type to weight (capacity units, like Spot Fleet's).
    instance_types: Annotated[dict[str, float] | None, BeforeValidator(parse_instance_types)] = None
    #: ``executor: aws_batch`` only: the compute environment's ``maxvCpus``.
    max_vcpus: int | None = Field(default=None, ge=1, le=MAX_INSTANCES * 64)
    #: ``capacity: aws``: the subnets this pool's instances launch in (default: ``aws.subnets``).
    subnets: list[str] | None = Field(default=None, min_length=1)
    #: ``executor: slurm``: the partition this pool submits to (default: the pool's name).
    partition: str | None = Field(default=None, pattern=PARTITION_PATTERN)

    def to_def(self, delegated: bool = False) -> PoolDef:
        """The core's pool. A field left to a delegated pool's executor is 0 until it tells."""
        default_count = 0 if delegated else 1
        return PoolDef(
            name=self.name,
            market=self.market,
            capacity=Resources(
                vcpus=self.vcpus or 0.0, memory_mib=self.memory or 0, gpus=self.gpus
            ),
            count=default_count if self.count is None else self.count,
            price_usd_per_h=self.price,
            instance_type=self.instance,
            weight=self.weight,
            interruptible=bool(self.interruption_rate) or self.trace is not None,
            delegated=delegated,
            max_jobs=DEFAULT_MAX_JOBS if self.max_jobs is None else self.max_jobs,
            price_per=PricePer(self.price_per),
        )


class FleetConfig(StrictSection):
    """The recipe's Spot Fleet request: spot capacity in units, spread over the spot pools.

    Like AWS Spot Fleet's ``TargetCapacity`` with ``WeightedCapacity`` (each
    pool's ``weight``) and the ``diversified`` allocation strategy: every spot
    pool gets about the same number of units (``core.capacity.diversify``).
    On-demand pools are not part of it: they keep their ``count`` (the
    recipe's separate on-demand fallback; AWS's ``OnDemandTargetCapacity`` 0).
    """

    target_capacity: int = Field(
        ge=1, le=MAX_INSTANCES, description="capacity units on spot, like 8"
    )


class BreakerConfig(StrictSection):
    """A circuit breaker per pool (DESIGN §4): when to stop placing work on it, for how long."""

    #: Faults (interruptions, lost instances, failed launches) within ``window`` that open it.
    threshold: int = Field(default=3, ge=1)
    window: Annotated[float, BeforeValidator(parse_duration)] = 600.0
    cooldown: Annotated[float, BeforeValidator(parse_duration)] = 300.0
    max_cooldown: Annotated[float, BeforeValidator(parse_duration)] = 3600.0
    #: Open when fewer healthy instances than this are up (the recipe's 2); 0: no floor.
    min_healthy: int = Field(default=0, ge=0)
    #: Also a breaker per pool and task ``type``, counting the tasks' own failures there.
    per_task_type: bool = False


class PolicyConfig(StrictSection):
    """Run-wide placement policy (DESIGN §4, fallback; §5, deadline)."""

    #: When to wait for spot and when to pay for on-demand (``core.defs.SpotPolicy``); the
    #: deadline policies need ``deadline``.
    name: Annotated[
        str,
        BeforeValidator(
            one_of("spot_first", "on_demand", "greedy", "uniform_progress", "stormproof")
        ),
    ] = "spot_first"

    #: A task interrupted this many times goes to on-demand; ``None`` keeps it on spot.
    fallback_after_interruptions: int | None = Field(default=None, ge=1)
    #: Seconds the whole workflow should take (``36h`` in the file).
    deadline: Annotated[float | None, BeforeValidator(optional_duration)] = None
    max_parallel: int | None = Field(default=None, ge=1)
    #: The attempt that would use up a task's interruption budget runs on on-demand.
    last_attempt_on_demand: bool = False
    #: Wait this long before launching again in a pool whose launch failed.
    launch_retry: Annotated[float, BeforeValidator(parse_duration)] = 60.0
    #: Successor placement: when every place is taken, queue up to this many ready tasks
    #: behind one running attempt (same instance, at most its size), started the moment it
    #: ends; only on on-demand pools without an interruption source. More than one queue
    #: behind an attempt only while attempts run shorter than a second (``core.successors``,
    #: rule 3). ``None``: 3 on the local executor (where it saves a round trip per task), 0 on
    #: others; 0 turns it off.
    successors: int | None = Field(default=None, ge=0, le=8)
    breaker: Annotated[BreakerConfig, BeforeValidator(none_as_empty_mapping)] = Field(
        default_factory=lambda: BreakerConfig()
    )

    def successors_for(self, executor: str) -> int:
        """``successors`` as set, or the executor's default (3 on ``local``, else 0)."""
        if self.successors is not None:
            return self.successors
        return 3 if executor == "local" else 0

    def breaker_rule(self) -> BreakerRule:
        b = self.breaker
        return BreakerRule(
            b.threshold, b.window, b.cooldown, b.max_cooldown, b.min_healthy, b.per_task_type
        )

    @field_validator("deadline")
    @classmethod
    def _deadline_positive(cls, deadline: float | None) -> float | None:
        if deadline is not None and deadline <= 0:
            raise ValueError("a deadline must be more than 0 seconds, like 36h")
        return deadline


class CheckpointTiersConfig(StrictSection):
    """The recipe's challenge 5: a hot tier on node-local disk and a cold tier after an age.

    ``checkpoints:`` is the warm tier (the durable one). ``hot`` is a local
    directory used as a fast cache for restores; ``cold`` another store URL
    that checkpoints older than ``cold_after`` move to.
    """

    hot: str | None = None
    cold: str | None = None
    cold_after: Annotated[float | None, BeforeValidator(optional_duration)] = None


#: The alert rules (``alerts[].on``) and the settings each takes besides ``on`` and ``notify``:
#: (required, optional). Evaluated by ``monitor.alerts.rules``.
ALERT_SETTINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "workflow_failed": ((), ()),
    "workflow_succeeded": ((), ()),
    "task_failed": ((), ()),
    "interruption_rate": (("above", "per"), ("pool",)),
    "breaker_open": ((), ("pool",)),
    "cost_above": (("above",), ()),
    "deadline_at_risk": ((), ("deadline", "every")),
}
_NOTIFY_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")


def _notify_urls(value: Any) -> Any:
    """``notify:`` is one apprise URL or a list of them."""
    urls = [value] if isinstance(value, str) else value
    if not isinstance(urls, list) or not urls:
        raise ValueError(
            "expected an apprise URL like json://host/path or slack://…, or a list of them"
        )
    for url in urls:
        if not isinstance(url, str) or not _NOTIFY_URL.match(url.strip()):
            raise ValueError(
                f"{url!r} is not an apprise URL: give one like json://host:port/path, "
                "slack://token/#channel or mailto://user:password@host"
            )
    return [u.strip() for u in urls]


class AlertConfig(StrictSection):
    """One alert rule: when ``on`` happens in a run, tell ``notify`` (apprise URLs)."""

    on: Annotated[str, BeforeValidator(one_of(*ALERT_SETTINGS))]
    notify: Annotated[list[str], BeforeValidator(_notify_urls)]
    #: interruption_rate: more than this many per ``per``; cost_above: USD.
    above: float | None = Field(default=None, ge=0)
    per: Annotated[float | None, BeforeValidator(optional_duration)] = None
    #: Only this pool's interruptions or breaker.
    pool: str | None = None
    #: deadline_at_risk: seconds from the run's start (default: ``policy.deadline``).
    deadline: Annotated[float | None, BeforeValidator(optional_duration)] = None
    #: deadline_at_risk: how often the remaining work is estimated (default 60 s).
    every: Annotated[float | None, BeforeValidator(optional_duration)] = None

    def to_rule(self, policy_deadline: float | None) -> dict[str, Any]:
        """What a run records of the rule (``monitor.alerts.rules.AlertRule``)."""
        return {
            "on": self.on,
            "notify": list(self.notify),
            "above": self.above,
            "per_s": self.per,
            "pool": self.pool,
            "deadline_s": self.deadline if self.deadline is not None else policy_deadline,
            "every_s": self.every if self.every is not None else 60.0,
        }
