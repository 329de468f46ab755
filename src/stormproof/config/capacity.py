"""``capacity:``: where instances come from, and what ``capacity: aws`` needs.

``capacity: local`` (the default) is what every executor did before: modelled pools on this
machine, or a batch system's own nodes. ``capacity: aws`` launches EC2 instances for the
modelled pools (``capacity/aws.py``) and runs attempts on them through SSM Run Command
(``executor: ssm``, its default). A combination that cannot work, or a setting it would not
read, is one problem each, naming its place and the fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stormproof.config.executors import SSM_EXECUTOR

if TYPE_CHECKING:
    from stormproof.config.model import Config

_Problem = tuple[tuple[int | str, ...], Any, str]

_POOL_EXAMPLE = "{name: spot, market: spot, instance_types: [c5.large, c5.xlarge], count: 2}"


def default_executor(data: Any) -> Any:
    """The file's settings with ``executor: ssm`` when it says ``capacity: aws`` and no
    executor (the one executor that reaches the instances it launches)."""
    if isinstance(data, dict) and data.get("capacity") == "aws" and "executor" not in data:
        return {**data, "executor": SSM_EXECUTOR}
    return data


def capacity_problems(config: Config, executor: str) -> list[_Problem]:
    if config.capacity == "aws":
        return _aws_problems(config, executor)
    return _local_problems(config, executor)


def _local_problems(config: Config, executor: str) -> list[_Problem]:
    out: list[_Problem] = []
    if executor == SSM_EXECUTOR:
        out.append(
            (
                ("executor",),
                executor,
                "executor ssm runs attempts on the EC2 instances that capacity: aws launches; "
                "set capacity: aws (with aws.ami, aws.subnets and pools with instance_types), "
                "or choose another executor",
            )
        )
    only = "only used with capacity: aws (it launches EC2 instances); set capacity: aws, or "
    if config.aws is not None:
        for key in ("ami", "launch_template"):
            value = getattr(config.aws, key)
            if value is not None:
                out.append((("aws", key), value, only + f"remove {key}"))
    for i, pool in enumerate(config.pools):
        if pool.subnets is not None:
            out.append((("pools", i, "subnets"), pool.subnets, only + "remove subnets"))
    return out


def _aws_problems(config: Config, executor: str) -> list[_Problem]:
    out: list[_Problem] = []
    if executor != SSM_EXECUTOR:
        out.append(
            (
                ("capacity",),
                "aws",
                f"aws launches EC2 instances, which executor {executor!r} cannot reach; "
                f"remove executor: {executor} (capacity: aws runs attempts through SSM "
                "Run Command, executor: ssm), or remove capacity",
            )
        )
    if not config.pools:
        out.append(
            (
                ("capacity",),
                "aws",
                f"aws needs pools: the EC2 capacity to launch, like pools: [{_POOL_EXAMPLE}]",
            )
        )
    for i, pool in enumerate(config.pools):
        if not pool.instance_types:
            out.append(
                (
                    ("pools", i),
                    pool.name,
                    f"pool {pool.name!r} has no instance_types: capacity: aws launches them; "
                    "give the EC2 types it may use, like instance_types: [c5.large, c5.xlarge] "
                    "(or with weights: {c5.large: 1, c5.xlarge: 2})",
                )
            )
        if pool.max_vcpus is not None:
            out.append(
                (
                    ("pools", i, "max_vcpus"),
                    pool.max_vcpus,
                    "does nothing with capacity: aws (a pool launches count instances, or its "
                    "share of fleet.target_capacity); remove max_vcpus",
                )
            )
    out += _aws_section_problems(config)
    return out


def _aws_section_problems(config: Config) -> list[_Problem]:
    aws = config.aws
    if aws is None:
        return [
            (
                ("capacity",),
                "aws",
                "aws needs an aws section: the instances' image, their subnets and the "
                "bucket for exit statuses, like aws: {ami: ami-0abcdef1234567890, subnets: "
                "[subnet-0a1, subnet-0b2], bucket: my-lab-stormproof}",
            )
        ]
    out: list[_Problem] = []
    if aws.ami is None and aws.launch_template is None:
        out.append(
            (
                ("aws",),
                None,
                "capacity: aws needs the instances' image: aws.ami (an AMI with Python, "
                "stormproof and the SSM agent; `stormproof aws setup` makes a launch template of "
                "it) or aws.launch_template (your own)",
            )
        )
    if aws.ami is not None and aws.launch_template is not None:
        out.append(
            (
                ("aws", "launch_template"),
                aws.launch_template,
                "give aws.ami (setup makes the launch template) or aws.launch_template (your "
                "own), not both; remove one",
            )
        )
    if not aws.subnets and any(p.subnets is None for p in config.pools):
        out.append(
            (
                ("aws",),
                None,
                "capacity: aws launches into subnets: give aws.subnets (one per availability "
                "zone, like subnets: [subnet-0a1, subnet-0b2]), or subnets on every pool",
            )
        )
    s3_checkpoints = (config.checkpoints or "").startswith("s3://")
    if aws.bucket is None and not s3_checkpoints:
        out.append(
            (
                ("aws",),
                None,
                "capacity: aws needs an S3 bucket for the attempts' exit status: give aws.bucket "
                "(setup creates it), or checkpoints: s3://bucket/prefix",
            )
        )
    if config.checkpoints and not s3_checkpoints:
        out.append(
            (
                ("checkpoints",),
                config.checkpoints,
                "with capacity: aws the instances upload checkpoints themselves, so they must "
                "go to S3: checkpoints: s3://bucket/prefix (or remove checkpoints)",
            )
        )
    batch_only = "does nothing with capacity: aws ({}); remove {}"
    if aws.image is not None:
        why = "attempts run on the instances' AMI, not in a Batch image"
        out.append((("aws", "image"), aws.image, batch_only.format(why, "image")))
    if "spot_strategy" in aws.model_fields_set:
        why = "it is AWS Batch's; EC2 Fleet launches spot price-capacity-optimized"
        out.append(
            (("aws", "spot_strategy"), aws.spot_strategy, batch_only.format(why, "spot_strategy"))
        )
    return out
