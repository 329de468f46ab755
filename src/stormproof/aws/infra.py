"""``stormproof aws setup`` and ``teardown``: the recipe's 40 CLI calls as two commands.

``setup_plan`` is the list of calls, built from the configuration alone (pure, so
``--dry-run`` prints exactly what would be sent); ``apply`` sends them, treating "it is
already there" as done, so setup can be run again after a change or a failure.
``teardown_plan`` first finds what carries the project's tag (or lives under the
project's IAM path), then removes it in dependency order: job queues before compute
environments, roles after their profiles and policies. Nothing without the tag is touched.

What the recipe creates by hand, and what setup creates instead:

=========================================  ==============================================
recipe                                     ``stormproof aws setup``
=========================================  ==============================================
S3 bucket + folders                        the bucket (``aws.bucket``), tagged
DynamoDB workflow-state table              none: the event log (SQLite/PostgreSQL) is it
Step Functions role, FullAccess Lambda     ``<project>-orchestrator`` policy, generated to
role                                       the calls stormproof makes (``iam.py``)
Lambda functions, Step Functions           none: stormproof itself is the orchestrator
Batch queue (+ compute env. by hand)       per pool: a compute environment (spot or
                                           on-demand) and a job queue
(job definition)                           per image, registered by the first run using it
EventBridge rule → Lambda                  two rules (spot warning, rebalance) → SQS queue
CloudWatch dashboard, alarms, SNS          none: ``stormproof serve`` and ``alerts:``
=========================================  ==============================================
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from stormproof.aws import iam as policies
from stormproof.aws import names
from stormproof.aws.clients import Aws, error_code, explain
from stormproof.aws.settings import AwsOptions
from stormproof.config import BATCH_SPOT_STRATEGIES

#: What the instances of ``capacity: aws`` may do through SSM (Run Command reaches them).
SSM_MANAGED_POLICY = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
#: The instances' user data: nothing fancy. The AMI brings Python, stormproof and the SSM
#: agent (Amazon Linux has the agent and Python; add `pip install 'stormproof[aws]'`).
USER_DATA = """#!/bin/sh
# stormproof capacity: aws. The AMI must have Python 3.11+, stormproof ('pip install
# stormproof[aws]') on the PATH of SSM's shell, and the SSM agent (Amazon Linux has it).
systemctl enable --now amazon-ssm-agent 2>/dev/null || true
"""
#: Placeholders ``--dry-run`` prints where only AWS knows the value.
ACCOUNT = "<account>"
_MANAGED = "arn:aws:iam::aws:policy/service-role/"


@dataclass(frozen=True)
class Call:
    """One AWS API call: ``service.operation(**params)``."""

    service: str
    operation: str
    params: dict[str, Any]
    #: Error codes that mean the call's effect is already there (or already gone).
    done_if: tuple[str, ...] = ()
    #: Wait, after the call, until this is true (a compute environment VALID, …).
    wait: str = ""

    def show(self) -> str:
        return f"{self.service} {self.operation} {json.dumps(self.params, sort_keys=True)}"


@dataclass
class Context:
    """What the plan needs to know that only AWS can tell (placeholders in a dry run)."""

    account: str = ACCOUNT
    region: str = "<region>"
    subnets: list[str] = field(default_factory=list)
    security_groups: list[str] = field(default_factory=list)


def _tags(opts: AwsOptions) -> dict[str, str]:
    return {names.TAG_KEY: opts.project}


def _tag_list(opts: AwsOptions, key: str = "Key", value: str = "Value") -> list[dict[str, str]]:
    return [{key: k, value: v} for k, v in _tags(opts).items()]


# ---------------------------------------------------------------------- setup
def setup_plan(opts: AwsOptions, ctx: Context) -> list[Call]:
    """Every call setup makes, in order (``capacity: aws``: no Batch, the nodes' template)."""
    if opts.capacity == "aws":
        return [
            *_bucket(opts, ctx),
            *_node_role(opts, ctx),
            *_launch_template(opts, ctx),
            *_interruptions(opts, ctx),
        ]
    return [
        *_bucket(opts, ctx),
        *_roles(opts, ctx),
        *_compute(opts, ctx),
        *_interruptions(opts, ctx),
    ]


def _bucket(opts: AwsOptions, ctx: Context) -> list[Call]:
    bucket = opts.bucket
    if not bucket:
        return []
    params: dict[str, Any] = {"Bucket": bucket}
    if ctx.region not in ("us-east-1", "<region>"):
        params["CreateBucketConfiguration"] = {"LocationConstraint": ctx.region}
    return [
        Call("s3", "create_bucket", params, ("BucketAlreadyOwnedByYou",)),
        Call(
            "s3", "put_bucket_tagging", {"Bucket": bucket, "Tagging": {"TagSet": _tag_list(opts)}}
        ),
    ]


def _role_arn(opts: AwsOptions, ctx: Context, what: str) -> str:
    return f"arn:aws:iam::{ctx.account}:role/{opts.project}/{names.role(opts.project, what)}"


def _roles(opts: AwsOptions, ctx: Context) -> list[Call]:
    project, path = opts.project, f"/{opts.project}/"
    exists = ("EntityAlreadyExists", "EntityAlreadyExistsException")
    calls: list[Call] = []
    for what, service, managed in (
        ("batch", "batch.amazonaws.com", "AWSBatchServiceRole"),
        ("instance", "ec2.amazonaws.com", "AmazonEC2ContainerServiceforEC2Role"),
        ("job", "ecs-tasks.amazonaws.com", None),
    ):
        role = names.role(project, what)
        calls.append(
            Call(
                "iam",
                "create_role",
                {
                    "RoleName": role,
                    "Path": path,
                    "AssumeRolePolicyDocument": policies.trust(service),
                    "Tags": _tag_list(opts),
                },
                exists,
            )
        )
        if managed:
            calls.append(
                Call(
                    "iam", "attach_role_policy", {"RoleName": role, "PolicyArn": _MANAGED + managed}
                )
            )
    calls.append(
        Call(
            "iam",
            "put_role_policy",
            {
                "RoleName": names.role(project, "job"),
                "PolicyName": "checkpoints-and-status",
                "PolicyDocument": json.dumps(policies.job_policy(opts)),
            },
        )
    )
    return [*calls, *_profile(opts, names.role(project, "instance")), _orchestrator(opts, ctx)]


def _profile(opts: AwsOptions, role: str) -> list[Call]:
    """The instance profile of ``role`` (named after it), with the role in it."""
    exists = ("EntityAlreadyExists", "EntityAlreadyExistsException")
    return [
        Call(
            "iam",
            "create_instance_profile",
            {"InstanceProfileName": role, "Path": f"/{opts.project}/", "Tags": _tag_list(opts)},
            exists,
        ),
        Call(
            "iam",
            "add_role_to_instance_profile",
            {"InstanceProfileName": role, "RoleName": role},
            ("LimitExceeded",),
        ),
    ]


def _orchestrator(opts: AwsOptions, ctx: Context) -> Call:
    project, path = opts.project, f"/{opts.project}/"
    exists = ("EntityAlreadyExists", "EntityAlreadyExistsException")
    return Call(
        "iam",
        "create_policy",
        {
            "PolicyName": names.role(project, "orchestrator"),
            "Path": path,
            "PolicyDocument": json.dumps(
                policies.orchestrator_policy(opts, ctx.account, ctx.region)
            ),
            "Description": "What `stormproof run` calls (stormproof aws setup)",
            "Tags": _tag_list(opts),
        },
        exists,
    )


def _node_role(opts: AwsOptions, ctx: Context) -> list[Call]:
    """``capacity: aws``: the instances' role (SSM's managed policy, so Run Command reaches
    them; the bucket, for statuses, checkpoints and output), its profile, the orchestrator's
    policy."""
    role = names.role(opts.project, "node")
    exists = ("EntityAlreadyExists", "EntityAlreadyExistsException")
    return [
        Call(
            "iam",
            "create_role",
            {
                "RoleName": role,
                "Path": f"/{opts.project}/",
                "AssumeRolePolicyDocument": policies.trust("ec2.amazonaws.com"),
                "Tags": _tag_list(opts),
            },
            exists,
        ),
        Call("iam", "attach_role_policy", {"RoleName": role, "PolicyArn": SSM_MANAGED_POLICY}),
        Call(
            "iam",
            "put_role_policy",
            {
                "RoleName": role,
                "PolicyName": "checkpoints-and-status",
                "PolicyDocument": json.dumps(policies.job_policy(opts)),
            },
        ),
        *_profile(opts, role),
        _orchestrator(opts, ctx),
    ]


def _launch_template(opts: AwsOptions, ctx: Context) -> list[Call]:
    """``capacity: aws``: the launch template of the instances, made of ``aws.ami`` (none
    when the file names a template of its own): the nodes' profile, the security groups,
    IMDSv2 only (the agent asks with a token), the project's tag on every instance."""
    if not opts.ami:
        return []
    profile = (
        f"arn:aws:iam::{ctx.account}:instance-profile/{opts.project}/"
        f"{names.role(opts.project, 'node')}"
    )
    data: dict[str, Any] = {
        "ImageId": opts.ami,
        "IamInstanceProfile": {"Arn": profile},
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        "UserData": base64.b64encode(USER_DATA.encode()).decode(),
        "TagSpecifications": [{"ResourceType": "instance", "Tags": _tag_list(opts)}],
    }
    if ctx.security_groups:
        data["SecurityGroupIds"] = list(ctx.security_groups)
    return [
        Call(
            "ec2",
            "create_launch_template",
            {
                "LaunchTemplateName": opts.template(),
                "LaunchTemplateData": data,
                "TagSpecifications": [{"ResourceType": "launch-template", "Tags": _tag_list(opts)}],
            },
            ("InvalidLaunchTemplateName.AlreadyExistsException",),
        )
    ]


def _compute(opts: AwsOptions, ctx: Context) -> list[Call]:
    calls: list[Call] = []
    profile = (
        f"arn:aws:iam::{ctx.account}:instance-profile/{opts.project}/"
        f"{names.role(opts.project, 'instance')}"
    )
    for pool, side in opts.pools.items():
        spot = side.get("market") == "spot"
        resources: dict[str, Any] = {
            "type": "SPOT" if spot else "EC2",
            "allocationStrategy": BATCH_SPOT_STRATEGIES[opts.spot_strategy]
            if spot
            else "BEST_FIT_PROGRESSIVE",
            "minvCpus": 0,
            "maxvCpus": int(side.get("max_vcpus") or 16),
            "instanceTypes": list(side.get("instance_types") or {}) or ["optimal"],
            "subnets": ctx.subnets,
            "securityGroupIds": ctx.security_groups,
            "instanceRole": profile,
            "tags": _tags(opts),
        }
        env = opts.compute_environment(pool)
        calls.append(
            Call(
                "batch",
                "create_compute_environment",
                {
                    "computeEnvironmentName": env,
                    "type": "MANAGED",
                    "state": "ENABLED",
                    "computeResources": resources,
                    "serviceRole": _role_arn(opts, ctx, "batch"),
                    "tags": _tags(opts),
                },
                ("ClientException:exists",),
                wait=f"compute environment {env} VALID",
            )
        )
        calls.append(
            Call(
                "batch",
                "create_job_queue",
                {
                    "jobQueueName": opts.queue(pool),
                    "state": "ENABLED",
                    "priority": 1,
                    "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": env}],
                    "tags": _tags(opts),
                },
                ("ClientException:exists",),
            )
        )
    return calls


def _interruptions(opts: AwsOptions, ctx: Context) -> list[Call]:
    queue = names.interruption_queue(opts.project)
    queue_arn = f"arn:aws:sqs:{ctx.region}:{ctx.account}:{queue}"
    rules = names.interruption_rules(opts.project)
    rule_arns = [f"arn:aws:events:{ctx.region}:{ctx.account}:rule/{r}" for r in rules]
    access = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "EventBridgeInterruptionWarnings",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arns}},
            }
        ],
    }
    calls = [
        Call(
            "sqs",
            "create_queue",
            {
                "QueueName": queue,
                "Attributes": {"Policy": json.dumps(access), "MessageRetentionPeriod": "3600"},
                "tags": _tags(opts),
            },
        )
    ]
    for rule, detail_type in rules.items():
        pattern = {"source": ["aws.ec2"], "detail-type": [detail_type]}
        calls.append(
            Call(
                "events",
                "put_rule",
                {
                    "Name": rule,
                    "EventPattern": json.dumps(pattern),
                    "State": "ENABLED",
                    "Description": f"{detail_type} -> {queue} (stormproof)",
                    "Tags": _tag_list(opts),
                },
            )
        )
        calls.append(
            Call(
                "events",
                "put_targets",
                {"Rule": rule, "Targets": [{"Id": "interruption-queue", "Arn": queue_arn}]},
            )
        )
    return calls


# ---------------------------------------------------------------------- discovery
def discover_context(aws: Aws, opts: AwsOptions) -> Context:
    """Account, region and network, for a real (not dry) setup."""
    sts, ec2 = aws.client("sts"), aws.client("ec2")
    account = str(sts.get_caller_identity()["Account"])
    subnets, groups = list(opts.subnets), list(opts.security_groups)
    if not subnets:
        found = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])
        subnets = [s["SubnetId"] for s in found.get("Subnets", [])]
    if not groups:
        found = ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": ["default"]}]
        )
        groups = [g["GroupId"] for g in found.get("SecurityGroups", [])][:1]
    return Context(account, aws.region or "", subnets, groups)


def dry_context(opts: AwsOptions, region: str | None) -> Context:
    return Context(
        ACCOUNT,
        region or "<region>",
        list(opts.subnets) or ["<the default VPC's subnets>"],
        list(opts.security_groups) or ["<the default VPC's default security group>"],
    )


# ---------------------------------------------------------------------- applying
def apply(aws: Aws, calls: Iterable[Call], say: Callable[[str], None], wait_s: float = 600) -> None:
    """Send the calls in order; "already there" is done; a real error stops with its message."""
    send(aws, calls, say, _already, ("kept", "already there"), _wait, wait_s)


def send(
    aws: Aws,
    calls: Iterable[Call],
    say: Callable[[str], None],
    done_before: Callable[[Exception, Call], bool],
    skipped: tuple[str, str],
    wait: Callable[[Aws, Call, float], None],
    wait_s: float,
) -> None:
    """Setup's and teardown's loop: each call in order, printed as done, or as ``skipped``
    when its error says it was done before (``done_before``); any other error stops with
    its message; a call that names something to wait for waits (``wait``) before the next."""
    word, why = skipped
    for call in calls:
        client = aws.client(call.service)
        try:
            getattr(client, call.operation)(**call.params)
            say(f"  done  {call.service} {call.operation} {_subject(call)}")
        except Exception as exc:
            if not done_before(exc, call):
                raise explain(exc, _op_name(call), _subject(call)) from None
            say(f"  {word}  {call.service} {call.operation} {_subject(call)} ({why})")
        if call.wait:
            wait(aws, call, wait_s)


def _already(exc: Exception, call: Call) -> bool:
    if error_code(exc) in call.done_if:
        return True
    # Batch says "Object already exists" (ClientException; moto: InvalidParameterValue)
    return "ClientException:exists" in call.done_if and "already exists" in str(exc).lower()


def _wait(aws: Aws, call: Call, timeout_s: float) -> None:
    """A compute environment must be VALID before a job queue may use it."""
    name = call.params["computeEnvironmentName"]
    batch = aws.client("batch")
    deadline = time.monotonic() + timeout_s
    while True:
        env = batch.describe_compute_environments(computeEnvironments=[name])["computeEnvironments"]
        status = env[0].get("status") if env else "missing"
        if status == "VALID":
            return
        if status == "INVALID":
            from stormproof.aws.clients import AwsError

            raise AwsError(
                f"compute environment {name} is INVALID: {env[0].get('statusReason', '?')}; "
                "fix aws.subnets, aws.security_groups or the pool's instance_types and run "
                "`stormproof aws setup` again (it keeps what is already there)"
            )
        if time.monotonic() > deadline:
            from stormproof.aws.clients import AwsError

            raise AwsError(f"compute environment {name} is still {status} after {timeout_s:.0f}s")
        time.sleep(2)


def _op_name(call: Call) -> str:
    return "".join(part.capitalize() for part in call.operation.split("_"))


def _subject(call: Call) -> str:
    for key in (
        "computeEnvironmentName",
        "jobQueueName",
        "jobQueue",
        "computeEnvironment",
        "RoleName",
        "InstanceProfileName",
        "PolicyName",
        "PolicyArn",
        "Bucket",
        "QueueName",
        "QueueUrl",
        "Name",
        "Rule",
        "jobDefinition",
        "InstanceIds",
        "LaunchTemplateId",
        "LaunchTemplateName",
    ):
        if key in call.params:
            return str(call.params[key])
    return ""
