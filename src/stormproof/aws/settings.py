"""The AWS settings a run records (``executor_options``) and reads back.

Recorded when the run starts (``Config.executor_options``), so a resume talks to the same
queues, bucket and region even if stormproof.yaml changed since.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from stormproof.aws import names

if TYPE_CHECKING:
    from stormproof.config import AwsConfig, PoolConfig

#: Under the bucket: ``<prefix>/status/<run>/<attempt>.json`` (the agent's exit status).
STATUS_PREFIX = "stormproof"


@dataclass(frozen=True)
class AwsOptions:
    project: str = "stormproof"
    region: str | None = None
    bucket: str | None = None
    image: str | None = None
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    spot_strategy: str = "price_capacity_optimized"
    poll_interval_s: float = 5.0
    max_poll_interval_s: float = 60.0
    submit_parallel: int = 8
    timeout_margin_s: float = 60.0
    interruption_queue: bool = True
    prices: bool = True
    #: How often the agent uploads the output that grew beside the status (``aws.log_upload``).
    log_upload_s: float = 30.0
    #: The checkpoint store's URL, when it is set (the agent uploads there).
    checkpoints: str | None = None
    #: Per pool: its market, instance types with weights, and compute environment maxvCpus
    #: (``capacity: aws``: its own subnets, if it has them).
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``local`` (Batch places) or ``aws`` (stormproof launches EC2 instances itself).
    capacity: str = "local"
    #: ``capacity: aws``: the AMI setup makes the launch template of, or the user's template.
    ami: str | None = None
    launch_template: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["subnets"] = list(self.subnets)
        data["security_groups"] = list(self.security_groups)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AwsOptions:
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in data.items() if k in known}
        for key in ("subnets", "security_groups"):
            if key in kept:
                kept[key] = tuple(kept[key])
        return cls(**kept)

    def queue(self, pool: str) -> str:
        return names.job_queue(self.project, pool)

    def compute_environment(self, pool: str) -> str:
        return names.compute_environment(self.project, pool)

    def template(self) -> str:
        """The launch template of ``capacity: aws``'s instances: the user's, or setup's."""
        return self.launch_template or names.launch_template(self.project)

    def pool_subnets(self, pool: str) -> tuple[str, ...]:
        """The subnets a pool's instances launch in: its own, else ``aws.subnets``."""
        own = self.pools.get(pool, {}).get("subnets")
        return tuple(own) if own else self.subnets

    def status_location(self, run: str, attempt_id: str) -> tuple[str, str] | None:
        """(bucket, key) of an attempt's exit status, when the run has a bucket."""
        if not self.bucket:
            return None
        return self.bucket, names.status_key(STATUS_PREFIX, run, attempt_id)

    def log_location(self, run: str, attempt_id: str, stream: str) -> tuple[str, str] | None:
        """(bucket, key) of the ``stdout`` or ``stderr`` the attempt's agent uploads."""
        where = self.status_location(run, attempt_id)
        return None if where is None else (where[0], names.log_key(where[1], stream))


def aws_options(
    aws: AwsConfig, pools: Sequence[PoolConfig], checkpoints: str | None, capacity: str = "local"
) -> dict[str, Any]:
    """What a run on AWS records: the ``aws:`` section and each pool's EC2 side."""
    bucket = aws.bucket
    if bucket is None and checkpoints and checkpoints.startswith("s3://"):
        bucket = checkpoints[len("s3://") :].split("/", 1)[0]
    per_pool = {
        p.name: {
            "market": p.market.value,
            "instance_types": dict(p.instance_types or {})
            or ({p.instance: 1.0} if p.instance != "local" else {}),
            "max_vcpus": p.max_vcpus,
            **({"subnets": list(p.subnets)} if p.subnets else {}),
        }
        for p in pools
    }
    return AwsOptions(
        project=aws.project,
        region=aws.region,
        bucket=bucket,
        image=aws.image,
        subnets=tuple(aws.subnets),
        security_groups=tuple(aws.security_groups),
        spot_strategy=aws.spot_strategy,
        poll_interval_s=aws.poll_interval,
        max_poll_interval_s=aws.max_poll_interval,
        submit_parallel=aws.submit_parallel,
        timeout_margin_s=aws.timeout_margin,
        interruption_queue=aws.interruption_queue,
        prices=aws.prices,
        log_upload_s=aws.log_upload,
        checkpoints=checkpoints,
        pools=per_pool,
        capacity=capacity,
        ami=aws.ami,
        launch_template=aws.launch_template,
    ).to_dict()
