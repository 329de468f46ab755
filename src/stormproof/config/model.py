"""``Config``: the whole file as one strict model, and the checks that span its sections
(config that does nothing on the chosen executor, store or rule is an error naming its key)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from stormproof.config.capacity import capacity_problems, default_executor
from stormproof.config.executors import (
    AWS_EXECUTORS,
    AwsConfig,
    DaskConfig,
    SlurmConfig,
)
from stormproof.config.fields import (
    CONFIG_FILE_NAME,
    EXAMPLES,
    SettingError,
    StrictSection,
    none_as_empty_list,
    none_as_empty_mapping,
    optional_duration,
    parse_container,
    suggestion,
)
from stormproof.config.places import line_of, render_messages, setting_path
from stormproof.config.sections import (
    ALERT_SETTINGS,
    AlertConfig,
    CheckpointTiersConfig,
    FleetConfig,
    PolicyConfig,
    PoolConfig,
)
from stormproof.core.capacity import diversify
from stormproof.core.defs import (
    Market,
    PoolDef,
    Resources,
)
from stormproof.errors import ConfigError


class Config(StrictSection):
    """The whole configuration; every field has a default so that no file is needed."""

    executor: str = Field(default="local", min_length=1)
    #: Where instances come from: ``local`` (modelled on this machine, or the batch system's
    #: nodes) or ``aws`` (EC2 instances stormproof launches itself; ``executor: ssm``).
    capacity: Literal["local", "aws"] = "local"
    store: str = Field(default="sqlite", min_length=1)
    #: How long a PostgreSQL store's driver lease lasts unless renewed (default 30 s): how long
    #: a standby waits after the orchestrator died. SQLite's lease is a lock that never lapses.
    lease: Annotated[float | None, BeforeValidator(optional_duration)] = None
    home: str | None = None
    checkpoints: str | None = None
    checkpoint_tiers: Annotated[CheckpointTiersConfig, BeforeValidator(none_as_empty_mapping)] = (
        Field(default_factory=CheckpointTiersConfig)
    )
    pools: Annotated[list[PoolConfig], BeforeValidator(none_as_empty_list)] = Field(
        default_factory=list
    )
    #: The spot fleet's target capacity; without it every pool starts with its ``count``.
    fleet: FleetConfig | None = None
    policy: Annotated[PolicyConfig, BeforeValidator(none_as_empty_mapping)] = Field(
        default_factory=PolicyConfig
    )
    #: Alert rules (``monitor.alerts``): evaluated from each run's events, sent through apprise.
    alerts: Annotated[list[AlertConfig], BeforeValidator(none_as_empty_list)] = Field(
        default_factory=list
    )
    container: Annotated[
        Literal["none", "apptainer", "docker", "podman"], BeforeValidator(parse_container)
    ] = "none"
    #: ``executor: aws_batch`` only (an error with another executor).
    aws: AwsConfig | None = None
    #: ``executor: slurm`` only (an error with another executor).
    slurm: SlurmConfig | None = None
    #: The network containers join (``--network``): ``host`` (the default: what MPI and most
    #: HPC codes expect, and apptainer's own default), ``none``, or one the runtime knows.
    container_network: str = Field(default="host", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    #: More arguments for the runtime's ``run`` (apptainer: ``exec``), before the image, like
    #: ``[--ulimit, nofile=1024:1024]`` where a site's sandbox forbids raising limits.
    container_options: Annotated[list[str], BeforeValidator(none_as_empty_list)] = Field(
        default_factory=list
    )
    #: ``executor: dask`` only (an error with another executor).
    dask: DaskConfig | None = None

    _source: Path | None = PrivateAttr(default=None)
    #: The file's YAML tree and name as given, so checks made after loading name the line.
    _root: yaml.Node | None = PrivateAttr(default=None)
    _shown: str = PrivateAttr(default=CONFIG_FILE_NAME)
    #: The pools as the executor sees them (``for_executor``), once resolved.
    _pools: tuple[PoolDef, ...] | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _executor_of_the_capacity(cls, data: Any) -> Any:
        """``capacity: aws`` without an ``executor:`` runs attempts through SSM."""
        return default_executor(data)

    @model_validator(mode="after")
    def _capacity_fits(self, info: ValidationInfo) -> Config:
        """``capacity: aws`` needs an executor that reaches EC2 instances, pools with instance
        types, subnets and an AMI; what it cannot use is an error naming its place."""
        executor = (info.context or {}).get("executor") or self.executor
        problems = [
            _problem(loc, value, text) for loc, value, text in capacity_problems(self, executor)
        ]
        if problems:
            raise ValidationError.from_exception_data("Config", problems)
        return self

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
        if self.lease is not None and not expiring_lease(self.store):
            problem = _problem(("lease",), self.lease, LEASE_DOES_NOTHING.format(self.store))
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
    def _aws_settings_need_aws(self, info: ValidationInfo) -> Config:
        """``aws:``, ``pools[].instance_types`` and ``max_vcpus`` do nothing elsewhere: errors."""
        executor = (info.context or {}).get("executor") or self.executor
        if executor in AWS_EXECUTORS:
            return self
        problems: list[InitErrorDetails] = []
        text = (
            f"only used with executor: aws_batch or capacity: aws (this configuration runs on "
            f"{executor!r}); set executor: aws_batch or capacity: aws, or remove it"
        )
        if self.aws is not None:
            problems.append(_problem(("aws",), None, text))
        for i, pool in enumerate(self.pools):
            for key in ("instance_types", "max_vcpus"):
                if getattr(pool, key) is not None:
                    problems.append(_problem(("pools", i, key), getattr(pool, key), text))
        if problems:
            raise ValidationError.from_exception_data("Config", problems)
        return self

    @model_validator(mode="after")
    def _dask_section_for_dask(self, info: ValidationInfo) -> Config:
        """``dask:`` does nothing on another executor; ``executor: dask`` needs it."""
        executor = (info.context or {}).get("executor") or self.executor
        problems: list[InitErrorDetails] = []
        if executor != "dask" and self.dask is not None:
            text = (
                f"only used with executor: dask (this configuration runs on {executor!r}); "
                "set executor: dask, or remove the dask section"
            )
            problems.append(_problem(("dask",), None, text))
        if executor == "dask" and self.dask is None and self.executor == "dask":
            text = (
                "executor: dask needs a dask section: dask: {scheduler: tcp://HOST:8786} for a "
                "running cluster, or dask: {local: {workers: 2}} for one started with the run"
            )
            problems.append(_problem(("executor",), executor, text))
        names = [p.name for p in self.pools]
        for name in self.dask.pools if self.dask is not None else {}:
            if name not in names:
                known = ", ".join(names) or "none (give pools first)"
                text = f"no pool is named {name!r}{suggestion(name, names)}; pools: {known}"
                problems.append(_problem(("dask", "pools", name), name, text))
        if problems:
            raise ValidationError.from_exception_data("Config", problems)
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

    @property
    def executor_runs_images(self) -> bool:
        """Whether the executor runs every attempt in its image itself (AWS Batch)."""
        return self.executor == "aws_batch"

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
        """What a run records for its executor: ``slurm:`` and the pools' partitions,
        ``aws:`` and the pools' instance types, or ``dask:`` and the pools' markers."""
        if self.executor == "dask" and self.dask is not None:
            return self.dask.executor_options(self.pools, local_machine())
        if self.executor in AWS_EXECUTORS:
            from stormproof.aws.settings import aws_options

            return aws_options(self.aws or AwsConfig(), self.pools, self.checkpoints, self.capacity)
        if self.executor != "slurm":
            return {}
        base = self.source.parent if self.source is not None else Path.cwd()
        return (self.slurm or SlurmConfig()).executor_options(self.pools, base)

    def place(self, loc: tuple[int | str, ...]) -> str:
        """``stormproof.yaml:7: pools[1].partition``: where a setting is written, for problems
        found after loading (what a cluster answered about it)."""
        line = line_of(self._root, loc)
        return (
            f"{self._shown}:{line}: {setting_path(loc)}"
            if line
            else f"{self._shown}: {setting_path(loc)}"
        )

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
        if not delegated and self.capacity == "aws":
            return self._described(executor, self.pool_defs(), describe)
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
        return self._described(executor, configured, describe)

    def _described(
        self,
        executor: str,
        configured: tuple[PoolDef, ...],
        describe: Callable[[tuple[PoolDef, ...]], tuple[PoolDef, ...]],
    ) -> Config:
        """The pools with what ``describe`` (the executor's system) filled in; a shape still
        unknown is an error naming the pool's line (``capacity: aws`` fills an instance's
        shape from its smallest instance type, a batch system one node's)."""
        if not configured[0].delegated:  # capacity: aws: max_jobs does nothing on instances
            found = _modelled_problems(self.pools, executor)
            modelled = [(loc, text) for loc, _, text in found if loc[-1] == "max_jobs"]
            if modelled:
                raise ConfigError(self._render(modelled))
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
            line = line_of(self._root, loc)
            place = setting_path(loc)
            messages.append(f"{f':{line}: ' if line else ': '}{place}: {text}")
        return render_messages(self._shown, messages)


_NODE_WORDS = {"vcpus": "vCPUs per node", "memory": "memory per node (MiB)", "count": "nodes"}
_NODE_EXAMPLES = {"vcpus": "4", "memory": "8192", "count": "16"}


_Problem = tuple[tuple[int | str, ...], Any, str]  # where, the value there, what to do


def _modelled_problems(pools: Sequence[PoolConfig], executor: str) -> list[_Problem]:
    """What a modelled pool lacks or has in vain: its shape is needed, ``max_jobs`` does nothing."""
    problems: list[_Problem] = []
    for i, pool in enumerate(pools):
        for key, value in (("vcpus", pool.vcpus), ("memory", pool.memory)):
            if value is None:
                text = f"required field is missing: give {EXAMPLES[key]}"
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


LEASE_DOES_NOTHING = (
    "only a PostgreSQL store's lease lapses; store {!r} holds a run by a lock that ends with "
    "its orchestrator and never lapses, so remove lease (or use store: postgresql://…)"
)


def expiring_lease(store: str) -> bool:
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
        hint = suggestion(alert.pool, pools)
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
