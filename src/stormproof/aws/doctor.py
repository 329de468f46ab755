"""``stormproof aws doctor``: is this account ready for the configuration, and if not, why.

Each check is one line: ``ok``, or ``missing``/``problem`` with the fix. It checks, in
order: credentials (``GetCallerIdentity``), the region, the policy (the orchestrator's
actions through ``SimulatePrincipalPolicy`` for the caller), the bucket, each pool's
compute environment and job queue, the interruption queue, and the vCPU quotas for spot
and on-demand instances against the pools' ``max_vcpus``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stormproof.aws import iam as policies
from stormproof.aws import names
from stormproof.aws.clients import Aws, AwsError, error_code, explain
from stormproof.aws.settings import AwsOptions

#: Service Quotas codes: vCPUs of running standard spot / on-demand instances.
SPOT_VCPU_QUOTA = "L-34B43A08"
ON_DEMAND_VCPU_QUOTA = "L-1216C47A"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: could not be checked
    detail: str


def run_checks(aws: Aws, opts: AwsOptions, say: Callable[[Check], None]) -> list[Check]:
    checks: list[Check] = []

    def add(check: Check) -> None:
        checks.append(check)
        say(check)

    add(Check("region", True, str(aws.region)))
    try:
        identity = aws.client("sts").get_caller_identity()
    except Exception as exc:
        add(Check("credentials", False, str(explain(exc, "GetCallerIdentity", ""))))
        return checks
    add(Check("credentials", True, f"{identity['Arn']} (account {identity['Account']})"))
    add(_policy(aws, opts, identity))
    add(_bucket(aws, opts))
    for check in _nodes(aws, opts) if opts.capacity == "aws" else _batch(aws, opts):
        add(check)
    add(_interruption_queue(aws, opts))
    for check in _quotas(aws, opts):
        add(check)
    return checks


def principal_arn(caller_arn: str) -> str:
    """An assumed-role session's ARN as the role's (what SimulatePrincipalPolicy takes)."""
    if ":assumed-role/" in caller_arn:
        head, _, rest = caller_arn.partition(":assumed-role/")
        role = rest.split("/", 1)[0]
        return head.replace(":sts:", ":iam:") + f":role/{role}"
    return caller_arn


def _policy(aws: Aws, opts: AwsOptions, identity: dict[str, Any]) -> Check:
    wanted = sorted(a for a in policies.ACTIONS["orchestrator"])
    try:
        result = aws.client("iam").simulate_principal_policy(
            PolicySourceArn=principal_arn(identity["Arn"]), ActionNames=wanted
        )
    except Exception as exc:
        why = explain(exc, "SimulatePrincipalPolicy", principal_arn(identity["Arn"]))
        return Check("policy", None, f"could not be checked ({why})")
    denied = [
        r["EvalActionName"]
        for r in result.get("EvaluationResults", [])
        if r.get("EvalDecision") != "allowed"
    ]
    if denied:
        return Check(
            "policy",
            False,
            f"{len(denied)} action(s) denied: {', '.join(denied[:8])}; attach the "
            f"{names.role(opts.project, 'orchestrator')} policy (`stormproof aws setup` makes "
            "it; `stormproof aws policy` prints it)",
        )
    return Check("policy", True, f"all {len(wanted)} actions a run calls are allowed")


def _bucket(aws: Aws, opts: AwsOptions) -> Check:
    if not opts.bucket:
        return Check("bucket", False, "no bucket: set aws.bucket in stormproof.yaml")
    try:
        aws.client("s3").list_objects_v2(Bucket=opts.bucket, MaxKeys=1)
    except Exception as exc:
        if error_code(exc) == "NoSuchBucket":
            return Check("bucket", False, f"{opts.bucket} does not exist: `stormproof aws setup`")
        return Check("bucket", False, str(explain(exc, "ListObjectsV2", opts.bucket)))
    return Check("bucket", True, opts.bucket)


def _batch(aws: Aws, opts: AwsOptions) -> list[Check]:
    from stormproof.executors.aws_batch.pools import queue_problems

    pools = list(opts.pools)
    queues = [opts.queue(p) for p in pools]
    envs = [opts.compute_environment(p) for p in pools]
    batch = aws.client("batch")
    try:
        found_queues = batch.describe_job_queues(jobQueues=queues)["jobQueues"]
        found_envs = batch.describe_compute_environments(computeEnvironments=envs)[
            "computeEnvironments"
        ]
    except Exception as exc:
        return [Check("batch", False, str(explain(exc, "DescribeJobQueues", ", ".join(queues))))]
    out = []
    for pool, queue, env in zip(pools, queues, envs, strict=True):
        problems = queue_problems([pool], [queue], [env], found_queues, found_envs)
        detail = "; ".join(problems) if problems else f"{env} VALID, {queue} ENABLED"
        out.append(Check(f"pool {pool}", not problems, detail))
    return out


def _nodes(aws: Aws, opts: AwsOptions) -> list[Check]:
    """``capacity: aws``: the instances' launch template, and their profile with SSM's policy
    (without it Run Command cannot reach them)."""
    template = opts.template()
    try:
        aws.client("ec2").describe_launch_templates(LaunchTemplateNames=[template])
        found = Check("launch template", True, template)
    except Exception as exc:
        if "NotFound" in error_code(exc) or "does not exist" in str(exc):
            fix = "`stormproof aws setup`" if opts.ami else "create it, or fix aws.launch_template"
            found = Check("launch template", False, f"{template} is missing: {fix}")
        else:
            found = Check(
                "launch template", False, str(explain(exc, "DescribeLaunchTemplates", ""))
            )
    if not opts.ami:
        return [found]  # the user's own template: its profile is theirs to check
    role = names.role(opts.project, "node")
    iam = aws.client("iam")
    try:
        profiles = iam.list_instance_profiles(PathPrefix=f"/{opts.project}/")["InstanceProfiles"]
        attached = iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    except Exception as exc:
        if error_code(exc) == "NoSuchEntity":
            return [found, Check("node role", False, f"{role} is missing: `stormproof aws setup`")]
        return [
            found,
            Check(
                "node role",
                None,
                f"could not be checked ({explain(exc, 'ListInstanceProfiles', role)})",
            ),
        ]
    if not any(p["InstanceProfileName"] == role for p in profiles):
        return [
            found,
            Check(
                "node role", False, f"instance profile {role} is missing: `stormproof aws setup`"
            ),
        ]
    if not any(p["PolicyName"] == "AmazonSSMManagedInstanceCore" for p in attached):
        detail = (
            f"{role} lacks AmazonSSMManagedInstanceCore (Run Command cannot reach the "
            "instances): `stormproof aws setup`"
        )
        return [found, Check("node role", False, detail)]
    return [found, Check("node role", True, f"{role}, with AmazonSSMManagedInstanceCore")]


def _interruption_queue(aws: Aws, opts: AwsOptions) -> Check:
    name = names.interruption_queue(opts.project)
    if not opts.interruption_queue:
        return Check("interruptions", True, "aws.interruption_queue is off: not read")
    try:
        aws.client("sqs").get_queue_url(QueueName=name)
    except Exception as exc:
        if "NonExistentQueue" in error_code(exc) or "QueueDoesNotExist" in error_code(exc):
            return Check("interruptions", False, f"queue {name} is missing: `stormproof aws setup`")
        return Check("interruptions", False, str(explain(exc, "GetQueueUrl", name)))
    return Check("interruptions", True, f"queue {name}")


def _quotas(aws: Aws, opts: AwsOptions) -> list[Check]:
    need = {"spot": 0, "on_demand": 0}
    for side in opts.pools.values():
        need[side.get("market", "spot")] = need.get(side.get("market", "spot"), 0) + int(
            side.get("max_vcpus") or 16
        )
    out = []
    for market, code in (("spot", SPOT_VCPU_QUOTA), ("on_demand", ON_DEMAND_VCPU_QUOTA)):
        if not need.get(market):
            continue
        try:
            quota = aws.client("service-quotas").get_service_quota(
                ServiceCode="ec2", QuotaCode=code
            )["Quota"]["Value"]
        except Exception as exc:
            why = explain(exc, "GetServiceQuota", f"ec2 {code}")
            out.append(Check(f"quota {market}", None, f"could not be checked ({why})"))
            continue
        ok = float(quota) >= need[market]
        detail = f"{need[market]} vCPUs configured, quota {float(quota):g}"
        if not ok:
            detail += (
                "; lower the pools' max_vcpus or ask for more in the Service Quotas console "
                f"(quota {code})"
            )
        out.append(Check(f"quota {market}", ok, detail))
    return out


def problems(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.ok is False]


__all__ = ["AwsError", "Check", "problems", "run_checks"]
