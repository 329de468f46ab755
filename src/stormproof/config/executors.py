"""The sections only one executor reads: ``slurm:``, ``aws:`` and ``dask:``. A setting in them
on another executor does nothing, which ``Config`` refuses."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)

from stormproof.config.fields import (
    StrictSection,
    none_as_empty_list,
    none_as_empty_mapping,
    one_of,
)
from stormproof.config.sections import (
    PoolConfig,
)
from stormproof.core.defs import Resources
from stormproof.spec.model import parse_duration

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


class SlurmConfig(StrictSection):
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


#: Executors and capacity backends that read ``aws:`` and ``pools[].instance_types``.
AWS_EXECUTORS = ("aws_batch", "ssm")
#: The executor that runs attempts on the EC2 instances ``capacity: aws`` launches.
SSM_EXECUTOR = "ssm"
#: Batch's spot allocation strategies, by stormproof's words for them (``spot_strategy``).
BATCH_SPOT_STRATEGIES = {
    "price_capacity_optimized": "SPOT_PRICE_CAPACITY_OPTIMIZED",
    "capacity_optimized": "SPOT_CAPACITY_OPTIMIZED",
    "lowest_price": "BEST_FIT",
    "best_fit_progressive": "BEST_FIT_PROGRESSIVE",
}


class AwsConfig(StrictSection):
    """``aws:``: the AWS resources stormproof uses and how it watches them (``docs/aws.md``).

    ``stormproof aws setup`` creates them from this section and the pools; ``executor:
    aws_batch`` and the EC2 Fleet backend use them; ``stormproof aws teardown`` removes what
    carries the ``project`` tag and nothing else.
    """

    #: Prefix of every resource name and the value of its ``stormproof:project`` tag.
    project: str = "stormproof"
    #: Default: the usual AWS settings (``AWS_REGION``, ``AWS_DEFAULT_REGION``, the profile).
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    #: The S3 bucket for attempts' exit status (and checkpoints, unless ``checkpoints:`` says).
    bucket: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    #: The image of tasks without ``container_image``; it must have stormproof installed.
    image: str | None = Field(default=None, min_length=1)
    #: Subnets (one per availability zone) and security groups of the compute environments.
    subnets: Annotated[list[str], BeforeValidator(none_as_empty_list)] = Field(default_factory=list)
    security_groups: Annotated[list[str], BeforeValidator(none_as_empty_list)] = Field(
        default_factory=list
    )
    #: How Batch picks instances in a spot compute environment.
    spot_strategy: Annotated[str, BeforeValidator(one_of(*BATCH_SPOT_STRATEGIES))] = (
        "price_capacity_optimized"
    )
    #: The shortest pause between two looks at the jobs; it grows while nothing changes.
    poll_interval: Annotated[float, BeforeValidator(parse_duration)] = 5.0
    max_poll_interval: Annotated[float, BeforeValidator(parse_duration)] = 60.0
    #: ``SubmitJob`` calls in flight at once.
    submit_parallel: int = Field(default=8, ge=1, le=64)
    #: Batch's own timeout is a task's ``timeout`` plus this (the core's kill comes first).
    timeout_margin: Annotated[float, BeforeValidator(parse_duration)] = 60.0
    #: Read EC2's interruption warnings from the SQS queue ``aws setup`` subscribes to them.
    interruption_queue: bool = True
    #: Price pools that give no ``price`` from AWS (spot price history, the pricing API),
    #: cached for a day; a configured ``price`` always wins.
    prices: bool = True
    #: How often each attempt's agent uploads its output that grew to the bucket, beside its
    #: status, for ``stormproof logs`` (and once more when it ends).
    log_upload: Annotated[float, BeforeValidator(parse_duration)] = 30.0
    #: ``capacity: aws``: the AMI of the instances (``aws setup`` makes a launch template of
    #: it with the instances' role); it must have Python, stormproof and the SSM agent.
    ami: str | None = Field(default=None, pattern=r"^ami-[0-9a-f]{8,17}$")
    #: ``capacity: aws``: a launch template of your own instead (name), used as it is.
    launch_template: str | None = Field(
        default=None, pattern=r"^[a-zA-Z0-9().\-/_]{3,128}$", min_length=3
    )

    @field_validator("project")
    @classmethod
    def _project_name(cls, project: str) -> str:
        if not re.match(r"^[a-z0-9][a-z0-9-]{0,30}[a-z0-9]$", project):
            raise ValueError(
                f"{project!r} must be 2 to 32 lowercase letters, digits and '-' (it starts every "
                "resource name, and S3 and Batch names allow no more), like my-lab"
            )
        return project

    @field_validator("log_upload")
    @classmethod
    def _log_upload(cls, seconds: float) -> float:
        if seconds < 1:
            raise ValueError(
                f"{seconds:g}s is too often: give at least 1 second, like 30s (each upload is "
                "a PUT per stream that grew)"
            )
        return seconds

    @model_validator(mode="after")
    def _intervals(self) -> AwsConfig:
        if self.poll_interval <= 0:
            raise ValueError("poll_interval must be more than 0 seconds, like 5s")
        if self.max_poll_interval < self.poll_interval:
            raise ValueError(
                f"max_poll_interval ({self.max_poll_interval:g}s) is shorter than poll_interval "
                f"({self.poll_interval:g}s); make it at least as long"
            )
        return self


_SCHEDULER_ADDRESS = re.compile(
    r"^(?:(tcp|tls|ws|wss|ucx)://)?(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$"
)


def _scheduler_address(value: Any) -> Any:
    match = _SCHEDULER_ADDRESS.match(value.strip()) if isinstance(value, str) else None
    if match is None or (match.group(3) and not 0 < int(match.group(3)) < 65536):
        raise ValueError(
            f"{value!r} is not a Dask scheduler address: give the one `dask scheduler` prints, "
            "like tcp://10.0.0.5:8786"
        )
    return value.strip()


class DaskLocalConfig(StrictSection):
    """``dask.local``: a cluster of worker processes started with the run (docs/dask.md)."""

    workers: int = Field(default=2, ge=1, le=256)
    threads_per_worker: int = Field(default=1, ge=1, le=256)
    #: Each worker's ``vcpus`` and ``memory`` (MiB) resources; default: this machine split
    #: evenly between the workers.
    vcpus: float | None = Field(default=None, gt=0)
    memory: int | None = Field(default=None, gt=0)

    def to_options(self, machine: Resources) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "threads_per_worker": self.threads_per_worker,
            "vcpus": self.vcpus or max(1.0, float(int(machine.vcpus) // self.workers)),
            "memory_mib": self.memory or max(256, machine.memory_mib // self.workers),
        }


class DaskPoolConfig(StrictSection):
    """``dask.pools.NAME``: which workers are the pool's."""

    #: The resource its workers declare (``--resources "pool-spot=1,..."``); default
    #: ``pool-NAME``; ``null``: every worker of the cluster.
    resource: str | None = Field(default=None, min_length=1, max_length=128)
    #: Workers whose name starts with this are the pool's too: stormproof gives each the
    #: pool's resource as it joins (for deployments that name workers but set no resources).
    name_prefix: str | None = Field(default=None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _prefix_marks(self) -> DaskPoolConfig:
        explicit = "resource" in self.model_fields_set
        if self.name_prefix is not None and explicit and self.resource is None:
            raise ValueError(
                "name_prefix needs a resource to give its workers: remove resource: null "
                "(the default is pool-NAME), or remove name_prefix"
            )
        return self


class DaskConfig(StrictSection):
    """``dask:``: the cluster ``executor: dask`` runs on: ``scheduler`` or ``local``."""

    scheduler: Annotated[str | None, BeforeValidator(_scheduler_address)] = None
    local: Annotated[DaskLocalConfig | None, BeforeValidator(none_as_empty_mapping)] = None
    pools: Annotated[dict[str, DaskPoolConfig], BeforeValidator(none_as_empty_mapping)] = Field(
        default_factory=dict
    )
    #: How long to try reaching the scheduler before saying it cannot be reached.
    connect_timeout: Annotated[float, BeforeValidator(parse_duration)] = 10.0

    @model_validator(mode="after")
    def _one_cluster(self) -> DaskConfig:
        given = [k for k in ("scheduler", "local") if k in self.model_fields_set]
        if len(given) != 1:
            raise ValueError(
                ("give only one of" if given else "give one of")
                + " scheduler (a running cluster, like scheduler: tcp://10.0.0.5:8786) and "
                "local (a cluster of processes started with the run, like local: {workers: 2})"
            )
        if self.connect_timeout <= 0:
            raise ValueError("connect_timeout must be more than 0 seconds, like 10s")
        prefixed = [name for name, p in self.pools.items() if p.name_prefix is not None]
        if self.local is not None and prefixed:
            raise ValueError(
                f"pools.{prefixed[0]}.name_prefix does nothing with local (its workers are "
                "started with every pool's resource): remove it, or use scheduler"
            )
        return self

    def executor_options(self, pools: Sequence[PoolConfig], machine: Resources) -> dict[str, Any]:
        """What a run records for the Dask executor (``executors.dask.options``)."""
        marked: dict[str, dict[str, Any]] = {}
        for pool in pools:
            named = self.pools.get(pool.name)
            explicit = named is not None and "resource" in named.model_fields_set
            resource = named.resource if explicit and named is not None else f"pool-{pool.name}"
            marked[pool.name] = {"resource": resource, "notice_s": pool.notice}
            if named is not None and named.name_prefix is not None:
                marked[pool.name]["name_prefix"] = named.name_prefix
        return {
            "scheduler": self.scheduler,
            "local": None if self.local is None else self.local.to_options(machine),
            "pools": marked,
            "connect_timeout_s": self.connect_timeout,
        }
