"""What the core knows about a workflow and its capacity: plain frozen data.

The core never sees the workflow file or pydantic: ``runtime.compile`` turns a
validated spec into these definitions, so the core can be driven the same way
by a real run, a replay and the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from stormproof.core.record import record


class Market(str, Enum):
    SPOT = "spot"
    ON_DEMAND = "on_demand"


class OnFailure(str, Enum):
    FAIL = "fail"
    FINISH = "finish"
    CONTINUE = "continue"


@record
class Resources:
    """What one node of an attempt occupies on an instance."""

    vcpus: float
    memory_mib: int
    gpus: int = 0

    def fits_in(self, free: Resources) -> bool:
        return (
            self.vcpus <= free.vcpus + 1e-9
            and self.memory_mib <= free.memory_mib
            and self.gpus <= free.gpus
        )

    def minus(self, other: Resources) -> Resources:
        return Resources(
            self.vcpus - other.vcpus, self.memory_mib - other.memory_mib, self.gpus - other.gpus
        )

    def plus(self, other: Resources) -> Resources:
        return Resources(
            self.vcpus + other.vcpus, self.memory_mib + other.memory_mib, self.gpus + other.gpus
        )


@record
class RetryRule:
    """An ASL-shaped retrier, already validated. See ``spec.model.Retrier`` for the tiers rule."""

    error_equals: tuple[str, ...]
    interval_s: float
    max_attempts: int
    backoff_rate: float
    max_delay_s: float | None = None
    jitter: bool = False

    def matches(self, error: str) -> bool:
        for name in self.error_equals:
            if name == error or name == "States.ALL":
                return True
            # ASL: States.TaskFailed matches every task failure except a timeout.
            if name == "States.TaskFailed" and error != "Task.Timeout":
                return True
        return False

    def delay_s(self, retry_number: int, unit: float) -> float:
        """Delay before retry ``retry_number`` (1-based); ``unit`` in [0, 1) draws the jitter."""
        delay = self.interval_s * self.backoff_rate ** (retry_number - 1)
        if self.max_delay_s is not None:
            delay = min(delay, self.max_delay_s)
        return delay * unit if self.jitter else delay


@record
class TaskDef:
    """One task as the core schedules it; parents and children are task indexes."""

    id: str
    index: int
    parents: tuple[int, ...]
    children: tuple[int, ...]
    resources: Resources
    nodes: int = 1
    retry: tuple[RetryRule, ...] = ()
    timeout_s: float | None = None
    kill_grace_s: float = 10.0
    max_interruptions: int = 10
    on_failure: OnFailure = OnFailure.FAIL
    spot_enabled: bool = True
    checkpoint_enabled: bool = False
    #: Ask a running attempt to checkpoint every this many seconds (None: never ask).
    checkpoint_interval_s: float | None = None
    #: Stored checkpoints kept per task while it runs; all are deleted on success unless
    #: ``keep_checkpoints_on_success``.
    keep_checkpoints: int = 2
    keep_checkpoints_on_success: bool = False
    #: Longest estimated path from this task to the end; ready tasks run highest first.
    priority: float = 0.0
    #: After ``Task.OutOfMemory`` the next attempt asks for this many times the memory.
    memory_escalation: float = 1.0
    #: The workflow's ``type`` (batch, multi_node): per-task-type breakers key on it.
    kind: str = "batch"
    #: ``estimated_runtime`` (0 when unknown); deadline policies reason with it.
    estimated_s: float = 0.0
    #: Most work an interruption can cost (the checkpoint interval plus a checkpoint, or the
    #: whole runtime without checkpoints) plus the restart: what a deadline keeps in reserve.
    at_risk_s: float = 0.0


class PricePer(str, Enum):
    """What a pool's ``price`` is counted per (``pools[].price_per``)."""

    #: Per instance (or node) hour: an attempt pays its share of the shape (its largest
    #: dimension), times its nodes. What a cloud bills.
    INSTANCE_HOUR = "instance_hour"
    #: Per vCPU-hour: an attempt pays its vCPUs times its nodes. What a cluster's accounting
    #: (Slurm's billing of CPU-hours) charges.
    VCPU_HOUR = "vcpu_hour"


#: Attempts outstanding (placed or running) at once in a delegated pool when the config sets
#: no ``max_jobs``: a batch system queues what exceeds its nodes, so this bounds what one run
#: keeps in its queue, like Nextflow's ``executor.queueSize`` (100).
DEFAULT_MAX_JOBS = 100


@dataclass(frozen=True, slots=True)
class PoolDef:
    """A kind of capacity: ``count`` identical instances of one shape, at one price.

    A *modelled* pool (``delegated`` false: the local fleet, EC2 instances stormproof
    launches) has instances whose free resources the core tracks and places on. A
    *delegated* pool (a Slurm partition, a Batch queue, Dask workers) is placed by the
    batch system: ``capacity`` is one node's shape (the most a job may ask per node),
    ``count`` its number of nodes (for ``plan``, ``simulate`` and "could this task ever
    fit"), and the core only bounds the attempts outstanding there (``max_jobs``) and
    learns the nodes an attempt runs on when it starts (DELEGATED.md).
    """

    name: str
    market: Market
    capacity: Resources
    count: int
    price_usd_per_h: float = 0.0
    instance_type: str = "local"
    #: Share of placements among pools of one market under the ``diversified`` strategy.
    weight: float = 1.0
    #: An interruption source (a rate or a trace) may take its instances away: no successors
    #: are queued there (spot pools never take them either).
    interruptible: bool = False
    #: Placed by a batch system, not by the core (see above).
    delegated: bool = False
    #: Delegated pools: at most this many of the run's attempts placed or running there.
    max_jobs: int = DEFAULT_MAX_JOBS
    price_per: PricePer = PricePer.INSTANCE_HOUR


class SpotPolicy(str, Enum):
    """When a task may wait for spot and when it must run on on-demand (DESIGN §5).

    With a deadline, a task's *latest start* is ``deadline - rank`` (rank: the
    longest estimated path from it to the end, on-demand speed). Spot is used
    only while ``now <= latest start - at_risk``, so that an interruption at the
    worst moment still leaves time to finish on on-demand: no policy misses a
    deadline that on-demand could meet. The rules are ``core.policy.decide``, the
    same for a DAG's tasks here and for the one-job model of ``policy.single``.
    """

    SPOT_FIRST = "spot_first"  # no deadline logic: spot if free, else on-demand at once
    ON_DEMAND = "on_demand"
    GREEDY = "greedy"  # wait for spot until it is no longer safe, then on-demand
    UNIFORM_PROGRESS = "uniform_progress"  # on-demand while behind the uniform progress line
    STORMPROOF = "stormproof"  # wait for spot only once spot could finish what is left


class SpotStrategy(str, Enum):
    """How attempts spread over spot pools (the recipe's ``spot_strategy``)."""

    DIVERSIFIED = "diversified"  # least placements per unit of weight first
    LOWEST_PRICE = "lowest_price"  # cheapest vCPU-hour first
    CAPACITY_OPTIMIZED = "capacity_optimized"  # fewest recent faults first, then most free
    PRICE_CAPACITY_OPTIMIZED = "price_capacity_optimized"  # fewest faults, then cheapest


@dataclass(frozen=True, slots=True)
class BreakerRule:
    """When a pool's circuit breaker opens, and for how long (DESIGN §4).

    ``threshold`` faults (interruptions, lost nodes, failed launches) within
    ``window_s`` open it; so does healthy capacity below ``min_healthy`` (the
    recipe's ``healthy_instances < 2``). It stays open ``cooldown_s``, doubled
    on every trip that follows within ``max_cooldown_s`` of the last close,
    capped at ``max_cooldown_s``: a pool that keeps failing is tried less and
    less often, which is what stops flapping.
    """

    threshold: int = 3
    window_s: float = 600.0
    cooldown_s: float = 300.0
    max_cooldown_s: float = 3600.0
    min_healthy: int = 0
    #: Also keep one breaker per pool and task type (``type`` in the workflow) that counts the
    #: tasks' own failures there, so a kind of task that keeps failing on one pool (a GPU
    #: driver, a missing library) moves to another. Off by default: on a single pool it would
    #: only delay a failing task's retries.
    per_task_type: bool = False


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Run-wide knobs that are inputs to the core (and so recorded with the run)."""

    seed: int = 0
    max_parallel: int | None = None
    pools: tuple[PoolDef, ...] = field(default_factory=tuple)
    #: A task interrupted this many times runs on on-demand from then on (None: never).
    fallback_after_interruptions: int | None = None
    #: The attempt that would exhaust a task's interruption budget runs on on-demand.
    last_attempt_on_demand: bool = False
    spot_strategy: SpotStrategy = SpotStrategy.DIVERSIFIED
    breaker: BreakerRule = field(default_factory=BreakerRule)
    #: Wait this long before launching again in a pool whose last launch failed.
    launch_retry_s: float = 60.0
    spot_policy: SpotPolicy = SpotPolicy.SPOT_FIRST
    #: Seconds after the run starts by which every task should have ended.
    deadline_s: float | None = None
    #: Successor placement: when no free capacity holds a ready task, queue it behind a live
    #: attempt of at least its size on an uninterruptible on-demand instance, to start the
    #: moment that one ends (the executor starts it, no round trip). At most this many queued
    #: behind one running attempt (more than one only while attempts are short); 0: off.
    #: See ``core.successors``.
    successors: int = 0
    #: A queued successor that could run on free capacity is withdrawn (and placed afresh)
    #: once its predecessor has held the place this long: a long attempt must not keep it.
    successor_patience_s: float = 1.0
    #: False: leave out the notes on tasks' progress (``TaskReady``, ``TaskEnded``), which
    #: only a log or a status view reads. The simulator's Monte Carlo runs keep no decisions
    #: at all, and these are a third of them; every other decision is the same (tested).
    narrate: bool = True
