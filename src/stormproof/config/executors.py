"""The sections only one executor reads: ``slurm:`` and ``aws:``. A setting in them on another
executor does nothing, which ``Config`` refuses."""

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
    one_of,
)
from stormproof.config.sections import (
    PoolConfig,
)
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
AWS_EXECUTORS = ("aws_batch",)
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

    @field_validator("project")
    @classmethod
    def _project_name(cls, project: str) -> str:
        if not re.match(r"^[a-z0-9][a-z0-9-]{0,30}[a-z0-9]$", project):
            raise ValueError(
                f"{project!r} must be 2 to 32 lowercase letters, digits and '-' (it starts every "
                "resource name, and S3 and Batch names allow no more), like my-lab"
            )
        return project

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
