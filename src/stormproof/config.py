"""``stormproof.yaml``: the one optional configuration file, and its environment overrides.

Rules (DESIGN §7):

* **Optional.** With no file everything is embedded and local: the local
  executor, SQLite, ``./.stormproof/``, and one pool that is this machine.
* **Strict.** Unknown fields are errors with a suggestion, because a typo in a
  price or a pool size must not silently become a default and a wrong bill.
* **Errors name the file, the line, the place and the fix**, compiler style::

      stormproof.yaml:4: pools[1].market: 'spott' is not one of spot, on_demand
      (did you mean 'spot'?)

  (one line in the terminal). Every problem in the file is reported at once,
  never a traceback.
* **Environment wins over the file** for the few settings a scheduler job or a
  CI run needs to flip without editing it: ``STORMPROOF_EXECUTOR``,
  ``STORMPROOF_STORE``, ``STORMPROOF_HOME``, ``STORMPROOF_MAX_PARALLEL``. An
  empty variable counts as unset, so ``STORMPROOF_HOME= stormproof run`` does
  what it looks like.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from stormproof.core.capacity import diversify
from stormproof.core.defs import (
    DEFAULT_MAX_JOBS,
    BreakerRule,
    Market,
    PoolDef,
    PricePer,
    Resources,
)
from stormproof.errors import ConfigError, InputRefused
from stormproof.spec.model import parse_duration
from stormproof.spec.validate import RANGE_WORDS

CONFIG_FILE_NAME = "stormproof.yaml"
#: Pool names appear in file names, metric labels and the event log: a safe alphabet.
POOL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
CONTAINER_RUNTIMES = ("none", "apptainer", "docker", "podman")
#: A Slurm partition name as ``sbatch --partition`` takes it (no commas: one partition).
PARTITION_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
#: ``sbatch`` options the Slurm executor sets itself; ``slurm.sbatch_args`` may not.
SBATCH_OWN = (
    "--job-name",
    "-J",
    "--comment",
    "--output",
    "-o",
    "--error",
    "-e",
    "--open-mode",
    "--requeue",
    "--no-requeue",
    "--chdir",
    "-D",
    "--parsable",
    "--array",
    "-a",
    "--wrap",
    "--partition",
    "-p",
)
#: Most instances one pool (or a fleet's target, in units) may ask for.
MAX_INSTANCES = 100_000
ENV_EXECUTOR = "STORMPROOF_EXECUTOR"
ENV_STORE = "STORMPROOF_STORE"
ENV_HOME = "STORMPROOF_HOME"
ENV_MAX_PARALLEL = "STORMPROOF_MAX_PARALLEL"


class SettingError(ConfigError):
    """What an executor found wrong with one setting after loading (a batch system's answer:
    no such partition, an account refused); ``Config.for_executor`` adds its file and line."""

    def __init__(self, loc: tuple[int | str, ...], problem: str) -> None:
        super().__init__(f"{_place(loc)}: {problem}")
        self.loc = loc
        self.problem = problem


def _suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a close choice exists, else nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _one_of(*choices: str) -> Callable[[Any], Any]:
    """A validator with the message we want (pydantic's enum message has no suggestion)."""

    def check(value: Any) -> Any:
        if isinstance(value, Market):
            value = value.value
        if value in choices:
            return value
        hint = _suggest(value, choices) if isinstance(value, str) else ""
        raise ValueError(f"{value!r} is not one of {', '.join(choices)}{hint}")

    return check


def _container(value: Any) -> Any:
    # `container:` left empty or `~` means no runtime, like `none`.
    return "none" if value is None else _one_of(*CONTAINER_RUNTIMES)(value)


def _empty_list(value: Any) -> Any:
    # `pools:` with every entry commented out is YAML null: the user means "none".
    return [] if value is None else value


def _empty_mapping(value: Any) -> Any:
    return {} if value is None else value


def _optional_duration(value: Any) -> Any:
    return None if value is None else parse_duration(value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoolConfig(_Strict):
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
    market: Annotated[Market, BeforeValidator(_one_of("spot", "on_demand"))]
    #: Instance type name, for the people reading the plan and for cloud backends.
    instance: str = Field(default="local", min_length=1)
    #: Required on a modelled pool; a delegated pool's executor may tell them.
    vcpus: float | None = Field(default=None, gt=0, description="vCPUs of one instance")
    memory: int | None = Field(default=None, gt=0, description="MiB of one instance")
    gpus: int = Field(default=0, ge=0)
    price: float = Field(default=0.0, ge=0, description="USD per instance-hour")
    #: What ``price`` is per: an instance (node) hour, or a vCPU-hour (``core.defs.PricePer``).
    price_per: Annotated[str, BeforeValidator(_one_of(*(p.value for p in PricePer)))] = (
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


class FleetConfig(_Strict):
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


class BreakerConfig(_Strict):
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


class PolicyConfig(_Strict):
    """Run-wide placement policy (DESIGN §4, fallback; §5, deadline)."""

    #: When to wait for spot and when to pay for on-demand (``core.defs.SpotPolicy``); the
    #: deadline policies need ``deadline``.
    name: Annotated[
        str,
        BeforeValidator(
            _one_of("spot_first", "on_demand", "greedy", "uniform_progress", "stormproof")
        ),
    ] = "spot_first"

    #: A task interrupted this many times goes to on-demand; ``None`` keeps it on spot.
    fallback_after_interruptions: int | None = Field(default=None, ge=1)
    #: Seconds the whole workflow should take (``36h`` in the file).
    deadline: Annotated[float | None, BeforeValidator(_optional_duration)] = None
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
    breaker: Annotated[BreakerConfig, BeforeValidator(_empty_mapping)] = Field(
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


class CheckpointTiersConfig(_Strict):
    """The recipe's challenge 5: a hot tier on node-local disk and a cold tier after an age.

    ``checkpoints:`` is the warm tier (the durable one). ``hot`` is a local
    directory used as a fast cache for restores; ``cold`` another store URL
    that checkpoints older than ``cold_after`` move to.
    """

    hot: str | None = None
    cold: str | None = None
    cold_after: Annotated[float | None, BeforeValidator(_optional_duration)] = None


def _arg_list(value: Any) -> Any:
    """``"--constraint=a --exclusive"`` or a list: both are argument lists."""
    if value is None:
        return []
    if isinstance(value, str):
        import shlex

        try:
            return shlex.split(value)
        except ValueError as err:
            raise ValueError(f"cannot split {value!r} into arguments: {err}") from None
    return value


class SlurmConfig(_Strict):
    """``slurm:``: how ``executor: slurm`` submits and watches jobs (``docs/slurm.md``)."""

    account: str | None = Field(default=None, min_length=1)
    qos: str | None = Field(default=None, min_length=1)
    #: Added to every ``sbatch`` call, e.g. ``[--constraint=skylake]``.
    sbatch_args: Annotated[list[str], BeforeValidator(_arg_list)] = Field(default_factory=list)
    #: Added to the ``srun`` that runs each command, e.g. ``[--mpi=pmix]``.
    srun_args: Annotated[list[str], BeforeValidator(_arg_list)] = Field(default_factory=list)
    #: The first (and shortest) pause between two ``squeue`` calls; it grows while nothing
    #: happens, up to ``max_poll_interval``.
    poll_interval: Annotated[float, BeforeValidator(parse_duration)] = 2.0
    max_poll_interval: Annotated[float, BeforeValidator(parse_duration)] = 30.0
    #: ``sbatch`` calls in flight at once.
    submit_parallel: int = Field(default=8, ge=1, le=64)
    #: Slurm's time limit is a task's ``timeout`` plus this (or 10 % of it, if more).
    time_margin: Annotated[float, BeforeValidator(parse_duration)] = 60.0
    #: The cluster's slurm.conf (default: ``$SLURM_CONF``, else Slurm's own default).
    slurm_conf: str | None = Field(default=None, min_length=1)

    @field_validator("sbatch_args")
    @classmethod
    def _not_ours(cls, args: list[str]) -> list[str]:
        for arg in args:
            # --name=value, -xvalue, -x value: the option's name either way
            name = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2]
            if name in SBATCH_OWN:
                raise ValueError(
                    f"{arg!r}: stormproof sets {name} itself (the job's name is the attempt id, "
                    "its output goes to the attempt's logs, the partition is the pool's); "
                    "remove it"
                )
        return args

    @model_validator(mode="after")
    def _intervals(self) -> SlurmConfig:
        if self.poll_interval <= 0:
            raise ValueError("poll_interval must be more than 0 seconds, like 2s")
        if self.max_poll_interval < self.poll_interval:
            raise ValueError(
                f"max_poll_interval ({self.max_poll_interval:g}s) is shorter than poll_interval "
                f"({self.poll_interval:g}s); make it at least as long"
            )
        return self

    def executor_options(self, pools: Sequence[PoolConfig], base: Path) -> dict[str, Any]:
        """What a run records for the Slurm executor (``executors.slurm.options``)."""
        conf = self.slurm_conf
        return {
            "partitions": {p.name: p.partition or p.name for p in pools},
            "account": self.account,
            "qos": self.qos,
            "sbatch_args": list(self.sbatch_args),
            "srun_args": list(self.srun_args),
            "poll_interval_s": self.poll_interval,
            "max_poll_interval_s": self.max_poll_interval,
            "submit_parallel": self.submit_parallel,
            "time_margin_s": self.time_margin,
            "slurm_conf": str((base / conf).resolve()) if conf else None,
        }


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


class AlertConfig(_Strict):
    """One alert rule: when ``on`` happens in a run, tell ``notify`` (apprise URLs)."""

    on: Annotated[str, BeforeValidator(_one_of(*ALERT_SETTINGS))]
    notify: Annotated[list[str], BeforeValidator(_notify_urls)]
    #: interruption_rate: more than this many per ``per``; cost_above: USD.
    above: float | None = Field(default=None, ge=0)
    per: Annotated[float | None, BeforeValidator(_optional_duration)] = None
    #: Only this pool's interruptions or breaker.
    pool: str | None = None
    #: deadline_at_risk: seconds from the run's start (default: ``policy.deadline``).
    deadline: Annotated[float | None, BeforeValidator(_optional_duration)] = None
    #: deadline_at_risk: how often the remaining work is estimated (default 60 s).
    every: Annotated[float | None, BeforeValidator(_optional_duration)] = None

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


class Config(_Strict):
    """The whole configuration; every field has a default so that no file is needed."""

    executor: str = Field(default="local", min_length=1)
    store: str = Field(default="sqlite", min_length=1)
    #: How long a PostgreSQL store's driver lease lasts unless renewed (default 30 s): how long
    #: a standby waits after the orchestrator died. SQLite's lease is a lock that never lapses.
    lease: Annotated[float | None, BeforeValidator(_optional_duration)] = None
    home: str | None = None
    checkpoints: str | None = None
    checkpoint_tiers: Annotated[CheckpointTiersConfig, BeforeValidator(_empty_mapping)] = Field(
        default_factory=CheckpointTiersConfig
    )
    pools: Annotated[list[PoolConfig], BeforeValidator(_empty_list)] = Field(default_factory=list)
    #: The spot fleet's target capacity; without it every pool starts with its ``count``.
    fleet: FleetConfig | None = None
    policy: Annotated[PolicyConfig, BeforeValidator(_empty_mapping)] = Field(
        default_factory=PolicyConfig
    )
    #: Alert rules (``monitor.alerts``): evaluated from each run's events, sent through apprise.
    alerts: Annotated[list[AlertConfig], BeforeValidator(_empty_list)] = Field(default_factory=list)
    container: Annotated[
        Literal["none", "apptainer", "docker", "podman"], BeforeValidator(_container)
    ] = "none"
    #: ``executor: slurm`` only (an error with another executor).
    slurm: SlurmConfig | None = None
    #: The network containers join (``--network``): ``host`` (the default: what MPI and most
    #: HPC codes expect, and apptainer's own default), ``none``, or one the runtime knows.
    container_network: str = Field(default="host", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    #: More arguments for the runtime's ``run`` (apptainer: ``exec``), before the image, like
    #: ``[--ulimit, nofile=1024:1024]`` where a site's sandbox forbids raising limits.
    container_options: Annotated[list[str], BeforeValidator(_empty_list)] = Field(
        default_factory=list
    )

    _source: Path | None = PrivateAttr(default=None)
    #: The file's YAML tree and name as given, so checks made after loading name the line.
    _root: yaml.Node | None = PrivateAttr(default=None)
    _shown: str = PrivateAttr(default=CONFIG_FILE_NAME)
    #: The pools as the executor sees them (``for_executor``), once resolved.
    _pools: tuple[PoolDef, ...] | None = PrivateAttr(default=None)

    @field_validator("pools")
    @classmethod
    def _unique_pool_names(cls, pools: list[PoolConfig]) -> list[PoolConfig]:
        first: dict[str, int] = {}
        for i, pool in enumerate(pools):
            if pool.name in first:
                raise ValueError(
                    f"pool name {pool.name!r} is used twice (pools[{first[pool.name]}] and "
                    f"pools[{i}]); give each pool its own name"
                )
            first[pool.name] = i
        return pools

    @field_validator("lease")
    @classmethod
    def _lease_long_enough(cls, lease: float | None) -> float | None:
        if lease is not None and not 1 <= lease <= 86400:
            raise ValueError(
                "a lease lasts from 1 s to 1 day, like 30s: its holder renews it every third of it"
            )
        return lease

    @model_validator(mode="after")
    def _lease_needs_an_expiring_store(self) -> Config:
        if self.lease is not None and not _expiring_lease(self.store):
            problem = _problem(("lease",), self.lease, _LEASE_DOES_NOTHING.format(self.store))
            raise ValidationError.from_exception_data("Config", [problem])
        return self

    @model_validator(mode="after")
    def _every_setting_acts(self) -> Config:
        """A setting this version would not act on is an error naming it (DESIGN: config that
        does nothing is an error), never silently accepted."""
        problems = _inert_settings(self)
        if problems:
            raise ValidationError.from_exception_data("Config", problems)
        return self

    @model_validator(mode="after")
    def _local_pools_are_modelled(self, info: ValidationInfo) -> Config:
        """On the local executor (known here to model its pools) a pool needs its shape, and
        ``max_jobs`` does nothing. Other executors are checked once known (``for_executor``)."""
        executor = (info.context or {}).get("executor") or self.executor
        if executor != "local":
            return self
        problems = _modelled_problems(self.pools, executor)
        if problems:
            details = [_problem(loc, value, text) for loc, value, text in problems]
            raise ValidationError.from_exception_data("Config", details)
        return self

    @model_validator(mode="after")
    def _slurm_settings_need_slurm(self, info: ValidationInfo) -> Config:
        """``slurm:`` and ``pools[].partition`` do nothing on another executor: errors."""
        executor = (info.context or {}).get("executor") or self.executor
        if executor == "slurm":
            return self
        problems: list[InitErrorDetails] = []
        if self.slurm is not None:
            text = (
                f"only used with executor: slurm (this configuration runs on {executor!r}); "
                "set executor: slurm, or remove the slurm section"
            )
            problems.append(_problem(("slurm",), None, text))
        for i, pool in enumerate(self.pools):
            if pool.partition is not None:
                text = (
                    f"only used with executor: slurm (this configuration runs on "
                    f"{executor!r}); remove it, or set executor: slurm"
                )
                problems.append(_problem(("pools", i, "partition"), pool.partition, text))
        if problems:
            raise ValidationError.from_exception_data("Config", problems)
        return self

    @model_validator(mode="after")
    def _fleet_decides_spot_counts(self) -> Config:
        if self.fleet is None:
            return self
        target = self.fleet.target_capacity
        problems: list[InitErrorDetails] = []
        spot = [i for i, p in enumerate(self.pools) if p.market is Market.SPOT]
        if not spot:
            problems.append(
                _problem(
                    ("fleet", "target_capacity"),
                    target,
                    "no pool has market: spot, so the fleet has nothing to spread its capacity "
                    "over; add a spot pool under pools, or remove fleet",
                )
            )
        for i in spot:
            pool = self.pools[i]
            if "count" in pool.model_fields_set:
                problems.append(
                    _problem(
                        ("pools", i, "count"),
                        pool.count,
                        f"not with fleet.target_capacity, which decides how many instances each "
                        f"spot pool gets (by its weight); remove count from pool {pool.name!r}, "
                        "or remove fleet",
                    )
                )
        if problems:
            raise ValidationError.from_exception_data("Config", problems)
        return self

    @model_validator(mode="after")
    def _alert_settings_fit_their_rules(self) -> Config:
        problems: list[InitErrorDetails] = []
        pools = [p.name for p in self.pools] or ["local"]
        for i, alert in enumerate(self.alerts):
            problems += _alert_problems(i, alert, pools, self.policy.deadline)
        if problems:
            raise ValidationError.from_exception_data("Config", problems)
        return self

    def alert_rules(self) -> list[dict[str, Any]]:
        """The alert rules as a run records them (a resume keeps the run's own)."""
        return [a.to_rule(self.policy.deadline) for a in self.alerts]

    @property
    def source(self) -> Path | None:
        """The file this configuration was read from; ``None`` when it is all defaults."""
        return self._source

    @property
    def container_runtime(self) -> str | None:
        """The container runtime, or ``None`` when commands run directly on the host."""
        return None if self.container == "none" else self.container

    def container_settings(self) -> dict[str, Any]:
        """What a run records of its container runtime (``runtime.containers``)."""
        return {
            "runtime": self.container_runtime,
            "network": self.container_network,
            "options": list(self.container_options),
        }

    def home_dir(self, cwd: Path) -> Path:
        """Where runs, the SQLite log and local checkpoints live (default ``./.stormproof``)."""
        return cwd / (self.home or ".stormproof")

    def pool_defs(self) -> tuple[PoolDef, ...]:
        """The configured pools, or this machine as one on-demand pool when none are.

        With ``fleet``, each spot pool's count is its share of the target capacity. Once
        resolved for the executor (``for_executor``), the pools as it sees them.
        """
        if self._pools is not None:
            return self._pools
        if not self.pools:
            return (local_pool(),)
        pools = tuple(pool.to_def() for pool in self.pools)
        if self.fleet is None:
            return pools
        spot = [p for p in pools if p.market is Market.SPOT]
        counts = diversify(self.fleet.target_capacity, spot)
        return tuple(
            dataclasses.replace(p, count=counts[p.name]) if p.name in counts else p for p in pools
        )

    def executor_options(self) -> dict[str, Any]:
        """What the run records for its executor: ``slurm:`` and the pools' partitions."""
        if self.executor != "slurm":
            return {}
        base = self.source.parent if self.source is not None else Path.cwd()
        return (self.slurm or SlurmConfig()).executor_options(self.pools, base)

    def place(self, loc: tuple[int | str, ...]) -> str:
        """``stormproof.yaml:7: pools[1].partition``: where a setting is written, for problems
        found after loading (what a cluster answered about it)."""
        line = _line_of(self._root, loc)
        return f"{self._shown}:{line}: {_place(loc)}" if line else f"{self._shown}: {_place(loc)}"

    def for_executor(
        self,
        executor: str,
        delegated: bool,
        describe: Callable[[tuple[PoolDef, ...]], tuple[PoolDef, ...]],
    ) -> Config:
        """This configuration with its pools as ``executor`` sees them.

        With an executor that delegates placement every pool is delegated, and
        ``describe`` (the executor's ``describe_pools``) may fill what the file left out
        (one node's shape, the node count) from the batch system. Config that does
        nothing on this executor is an error that names its line: ``max_jobs`` on a
        modelled pool, ``fleet`` with a batch system; so is a pool whose shape nobody gave.
        """
        if not delegated:
            modelled = _modelled_problems(self.pools, executor)
            if modelled:
                raise ConfigError(self._render([(loc, text) for loc, _, text in modelled]))
            resolved = self.model_copy()
            resolved._pools = self.pool_defs()
            return resolved
        if self.fleet is not None:
            message = (
                f"does nothing on executor {executor!r}, whose batch system places attempts "
                "on its own nodes; remove fleet (a pool's count is its number of nodes)"
            )
            raise ConfigError(self._render([(("fleet",), message)]))
        configured = tuple(p.to_def(delegated=True) for p in self.pools) or (
            dataclasses.replace(local_pool(), delegated=True),
        )
        try:
            pools = tuple(describe(configured))
        except SettingError as err:  # the batch system's answer about one setting: its line
            raise ConfigError(self._render([(err.loc, err.problem)])) from None
        problems: list[tuple[tuple[int | str, ...], str]] = []
        for i, pool in enumerate(pools):
            for key, known in (
                ("vcpus", pool.capacity.vcpus > 0),
                ("memory", pool.capacity.memory_mib > 0),
                ("count", pool.count > 0),
            ):
                if not known:
                    message = (
                        f"executor {executor!r} could not tell the {_NODE_WORDS[key]} of pool "
                        f"{pool.name!r}: give {key}, like {_NODE_EXAMPLES[key]}"
                    )
                    problems.append((("pools", i, key) if self.pools else ("pools",), message))
        if problems:
            raise ConfigError(self._render(problems))
        resolved = self.model_copy()
        resolved._pools = pools
        return resolved

    def _render(self, problems: Sequence[tuple[tuple[int | str, ...], str]]) -> str:
        """Problems found after loading, in the loader's words (file, line, place, fix)."""
        messages = []
        for loc, text in problems:
            line = _line_of(self._root, loc)
            place = _place(loc)
            messages.append(f"{f':{line}: ' if line else ': '}{place}: {text}")
        return _render(self._shown, messages)


_NODE_WORDS = {"vcpus": "vCPUs per node", "memory": "memory per node (MiB)", "count": "nodes"}
_NODE_EXAMPLES = {"vcpus": "4", "memory": "8192", "count": "16"}


_Problem = tuple[tuple[int | str, ...], Any, str]  # where, the value there, what to do


def _modelled_problems(pools: Sequence[PoolConfig], executor: str) -> list[_Problem]:
    """What a modelled pool lacks or has in vain: its shape is needed, ``max_jobs`` does nothing."""
    problems: list[_Problem] = []
    for i, pool in enumerate(pools):
        for key, value in (("vcpus", pool.vcpus), ("memory", pool.memory)):
            if value is None:
                text = f"required field is missing: give {_EXAMPLES[key]}"
                problems.append((("pools", i, key), None, text))
        if pool.max_jobs is not None:
            text = (
                f"does nothing on executor {executor!r}, which places attempts on the pool's "
                "instances itself; remove max_jobs (it bounds the jobs a batch system holds, "
                "for an executor that delegates placement, like slurm)"
            )
            problems.append((("pools", i, "max_jobs"), pool.max_jobs, text))
    return problems


def _inert_settings(config: Config) -> list[InitErrorDetails]:
    """Settings given that nothing would read, given what else is (or is not) set."""
    out: list[InitErrorDetails] = []
    if config.container == "none":
        for key in ("container_network", "container_options"):
            if key in config.model_fields_set:
                value = getattr(config, key)
                why = "does nothing without `container:` (apptainer, docker or podman)"
                out.append(_problem((key,), value, f"{why}; set container, or remove {key}"))
    for i, pool in enumerate(config.pools):
        source = bool(pool.interruption_rate) or pool.trace is not None
        if "time_scale" in pool.model_fields_set and not source:
            out.append(
                _problem(
                    ("pools", i, "time_scale"),
                    pool.time_scale,
                    "does nothing without interruption_rate or trace (it scales their time); "
                    "add one, or remove time_scale",
                )
            )
        if "trace_offset" in pool.model_fields_set and pool.trace is None:
            out.append(
                _problem(
                    ("pools", i, "trace_offset"),
                    pool.trace_offset,
                    "does nothing without trace (it says where in the trace the run starts); "
                    "add trace, or remove trace_offset",
                )
            )
    tiers = config.checkpoint_tiers
    if (tiers.cold is None) != (tiers.cold_after is None):
        key, other = ("cold", "cold_after") if tiers.cold is not None else ("cold_after", "cold")
        out.append(
            _problem(
                ("checkpoint_tiers", key),
                getattr(tiers, key),
                f"does nothing without checkpoint_tiers.{other} (checkpoints move to cold after "
                f"cold_after); set {other}, or remove {key}",
            )
        )
    return out


_LEASE_DOES_NOTHING = (
    "only a PostgreSQL store's lease lapses; store {!r} holds a run by a lock that ends with "
    "its orchestrator and never lapses, so remove lease (or use store: postgresql://…)"
)


def _expiring_lease(store: str) -> bool:
    """Whether ``store`` is one whose driver lease lapses unless renewed (``lease:`` applies)."""
    return store.split("://", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def _alert_problems(
    i: int, alert: AlertConfig, pools: list[str], deadline: float | None
) -> list[InitErrorDetails]:
    """Settings a rule needs and does not have, or has and would ignore (config that does
    nothing is an error)."""
    required, optional = ALERT_SETTINGS[alert.on]
    out = []
    for key in ("above", "per", "pool", "deadline", "every"):
        value = getattr(alert, key)
        if value is None and key in required:
            example = {"above": "a number, like 5", "per": "a duration, like 10m"}[key]
            out.append(_problem(("alerts", i, key), None, f"{alert.on} needs {key}: {example}"))
        elif value is not None and key not in required + optional:
            takes = ", ".join(required + optional) or "nothing but notify"
            out.append(
                _problem(
                    ("alerts", i, key),
                    value,
                    f"{alert.on} does not use {key} (it takes {takes}); remove it",
                )
            )
    if alert.pool is not None and alert.pool not in pools:
        hint = _suggest(alert.pool, pools)
        out.append(
            _problem(
                ("alerts", i, "pool"),
                alert.pool,
                f"no pool is named {alert.pool!r}{hint}; pools: {', '.join(pools)}",
            )
        )
    if alert.on == "deadline_at_risk" and alert.deadline is None and deadline is None:
        out.append(
            _problem(
                ("alerts", i, "on"),
                alert.on,
                "deadline_at_risk needs a deadline: set policy.deadline, or deadline: on the "
                "rule (like 36h)",
            )
        )
    if alert.per is not None and alert.per <= 0:
        out.append(_problem(("alerts", i, "per"), alert.per, "per must be more than 0 seconds"))
    if alert.every is not None and alert.every < 1:
        out.append(_problem(("alerts", i, "every"), alert.every, "every must be at least 1s"))
    return out


def _problem(loc: tuple[int | str, ...], value: Any, message: str) -> InitErrorDetails:
    """A validation problem at ``loc``, rendered like the field checks (file, line, place)."""
    error = PydanticCustomError("value_error", "{error}", {"error": message})
    return InitErrorDetails(type=error, loc=loc, input=value)


def local_machine() -> Resources:
    """This machine's size: what the default pool offers when no pools are configured."""
    vcpus = os.cpu_count() or 1
    try:
        memory_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        memory_mib = 1024
    return Resources(vcpus=float(vcpus), memory_mib=int(memory_mib), gpus=0)


def local_pool() -> PoolDef:
    """The default pool: one free, uninterruptible instance the size of this machine."""
    return PoolDef(
        name="local",
        market=Market.ON_DEMAND,
        capacity=local_machine(),
        count=1,
        price_usd_per_h=0.0,
        instance_type="local",
    )


# --- loading -----------------------------------------------------------------------------


def load_config(path: Path | None, cwd: Path, environ: Mapping[str, str]) -> Config:
    """Read ``path`` (or ``cwd/stormproof.yaml`` if it exists), apply ``STORMPROOF_*`` overrides.

    ``environ`` is passed in rather than read from ``os.environ`` so that
    tests and embedding programs decide what the environment is.
    """
    if path is not None:
        file = path if path.is_absolute() else cwd / path
        shown = str(path)
        if not file.exists():  # a device or a pipe is refused by the reader, saying what it is
            raise ConfigError(
                f"{shown}: no such configuration file (give an existing file to --config, "
                f"or leave it out to use ./{CONFIG_FILE_NAME} or the defaults)"
            )
    else:
        file = cwd / CONFIG_FILE_NAME
        shown = CONFIG_FILE_NAME
        if not file.is_file():
            return _with_env(Config(), environ)
    config = _parse_file(file, shown, environ)
    config._source = file
    return _with_env(config, environ)


def _parse_file(file: Path, shown: str, environ: Mapping[str, str]) -> Config:
    from stormproof.limits import CONFIG_MAX_BYTES, active_limits, read_bounded, yaml_tree_problems

    try:
        raw = read_bounded(file, "configuration file", CONFIG_MAX_BYTES, raise_hint=False)
        text = raw.decode("utf-8")
    except InputRefused as err:
        raise ConfigError(f"{shown}: {err.messages[0]}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{shown}: cannot read it: {err}") from None
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        limits = yaml_tree_problems(root, active_limits()) if root is not None else []
        if limits:
            raise ConfigError(_render(shown, [f":{line}: {text}" for line, text in limits]))
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as err:
        raise ConfigError(f"{shown}{_yaml_problem(err)}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{shown}: not valid YAML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{shown}: the document is nested too deeply") from None
    finally:
        loader.dispose()
    if data is None:
        return Config()
    if not isinstance(data, dict):
        raise ConfigError(
            f"{shown}: expected settings like `executor: local` at the top level, got {_kind(data)}"
        )
    # the executor the environment will choose decides which pool checks apply
    context = {"executor": environ.get(ENV_EXECUTOR, "").strip()}
    try:
        config = Config.model_validate(data, context=context)
    except ValidationError as err:
        messages = [_message(e, root) for e in err.errors()]
        raise ConfigError(_render(shown, messages)) from None
    config._root, config._shown = root, shown
    return config


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false are booleans.

    YAML 1.1 also reads ``on``, ``off``, ``yes``, ``no`` as booleans, which
    would turn the alert rule ``{on: workflow_failed}`` into ``{True: ...}``.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _yaml_problem(err: yaml.MarkedYAMLError) -> str:
    """``:line:col: not valid YAML: problem (context at line N)``."""
    mark = err.problem_mark or err.context_mark
    where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
    message = f"{where}: not valid YAML: {err.problem or err.context or 'cannot parse it'}"
    context = err.context_mark
    if err.problem and err.context and context is not None and context is not mark:
        message += f" ({err.context} at line {context.line + 1})"
    return message


def _with_env(config: Config, environ: Mapping[str, str]) -> Config:
    update: dict[str, Any] = {}
    for var, field in ((ENV_EXECUTOR, "executor"), (ENV_STORE, "store"), (ENV_HOME, "home")):
        value = environ.get(var, "").strip()
        if value:
            update[field] = value
    raw = environ.get(ENV_MAX_PARALLEL, "").strip()
    if raw:
        try:
            max_parallel = int(raw)
        except ValueError:
            max_parallel = 0
        if max_parallel < 1:
            raise ConfigError(
                f"{ENV_MAX_PARALLEL}={raw!r}: expected a whole number of at least 1, like 8 "
                f"(or unset it)"
            )
        update["policy"] = config.policy.model_copy(update={"max_parallel": max_parallel})
    if not update:
        return config
    if config.lease is not None and not _expiring_lease(update.get("store", config.store)):
        where = f"{config.source}: " if config.source is not None else ""
        raise ConfigError(f"{where}lease: " + _LEASE_DOES_NOTHING.format(update["store"]))
    result = config.model_copy(update=update)
    result._source = config._source
    result._root, result._shown = config._root, config._shown
    return result


# --- error messages ----------------------------------------------------------------------

_FIELDS: dict[tuple[str, ...], tuple[str, ...]] = {
    (): tuple(Config.model_fields),
    ("pools",): tuple(PoolConfig.model_fields),
    ("policy",): tuple(PolicyConfig.model_fields),
    ("policy", "breaker"): tuple(BreakerConfig.model_fields),
    ("fleet",): tuple(FleetConfig.model_fields),
    ("slurm",): tuple(SlurmConfig.model_fields),
    ("alerts",): tuple(AlertConfig.model_fields),
}

_EXAMPLES: dict[str, str] = {
    "name": "a name like spot-c5",
    "market": "spot or on_demand",
    "vcpus": "the vCPUs of one instance, like 4",
    "memory": "the MiB of memory of one instance, like 8192",
    "price": "USD per instance-hour, like 0.068",
    "max_jobs": "the jobs at most outstanding in the pool, like 100",
    "count": "how many instances, like 4",
    "target_capacity": "capacity units on spot, like 8",
}


def _place(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(error: Any, root: yaml.Node | None) -> str:
    loc: tuple[int | str, ...] = tuple(error["loc"])
    line = _line_of(root, loc)
    where = f":{line}: " if line else ": "
    place = _place(loc)
    return f"{where}{place + ': ' if place else ''}{_explain(error, loc)}"


def _explain(error: Any, loc: tuple[int | str, ...]) -> str:
    kind: str = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    field = str(loc[-1]) if loc else ""
    if kind == "extra_forbidden":
        parent = tuple(p for p in loc[:-1] if isinstance(p, str))
        known = _FIELDS.get(parent, ())
        hint = _suggest(field, known) or f" (known fields: {', '.join(known)})"
        return f"unknown field{hint}"
    if kind == "missing":
        example = _EXAMPLES.get(field)
        return "required field is missing" + (f": give {example}" if example else "")
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in RANGE_WORDS:
        key, phrase = RANGE_WORDS[kind]
        bound = ctx.get(key)
        bound = f"{bound:g}" if isinstance(bound, (int, float)) else bound
        example = _EXAMPLES.get(field)
        return f"{phrase} {bound}, got {value!r}" + (f" ({example})" if example else "")
    if kind == "string_pattern_mismatch":
        return (
            f"{value!r} is not a safe name: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit (at most 64 characters)"
        )
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected a whole number, got {value!r}"
    if kind in ("float_parsing", "float_type"):
        return f"expected a number, got {value!r}"
    if kind in ("string_type", "string_too_short"):
        return f"expected a non-empty text value, got {value!r}"
    if kind == "list_type":
        return f"expected a list (lines starting with '- '), got {_kind(value)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping of settings (key: value), got {_kind(value)}"
    return str(error["msg"])


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _line_of(root: yaml.Node | None, loc: Sequence[int | str]) -> int:
    """The 1-based line of ``loc`` in the YAML document, as close as it allows (0: unknown)."""
    if root is None:
        return 0
    node: yaml.Node = root
    line = root.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    # The key's line: right for an unknown key and for a block value below it.
                    line = key.start_mark.line + 1
                    child = value
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def _render(shown: str, messages: list[str]) -> str:
    if len(messages) == 1:
        return f"{shown}{messages[0]}"
    lines = [f"{shown}: {len(messages)} problems"]
    lines += [f"  - {shown}{m}" for m in messages]
    return "\n".join(lines)
