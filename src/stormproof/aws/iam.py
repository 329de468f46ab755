"""Least-privilege IAM policies, generated from the configuration.

The recipe attaches FullAccess for five services. Here each principal gets the actions its
code calls and nothing else, on the project's resources where the service allows it:

``orchestrator``  the machine running ``stormproof run``: Batch jobs in the project's queues,
                  the interruption queue, EC2 fleets and SSM Run Command on the project's
                  instances (``capacity: aws``), prices, the bucket.
``job``           the containers and ``capacity: aws``'s instances (``stormproof exec``): the
                  bucket's status and checkpoint keys.
``setup``         whoever runs ``stormproof aws setup``/``teardown``/``doctor``.

``ACTIONS`` is the list per principal; ``tests/aws/test_iam.py`` reads the source for the
boto3 calls each principal's modules make and holds it to exactly that list.
"""

from __future__ import annotations

import json
from typing import Any

from stormproof.aws import names
from stormproof.aws.settings import AwsOptions

#: API operations whose IAM action has another name.
ACTION_OF = {
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:DeleteObjects": "s3:DeleteObject",
    "s3:HeadObject": "s3:GetObject",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
}
#: Actions a call needs besides its own: passing a role to the service, tagging what it
#: creates (the project's tag is on everything).
IMPLIED = {
    "batch:SubmitJob": ("batch:TagResource",),
    "batch:RegisterJobDefinition": ("batch:TagResource", "iam:PassRole"),
    "batch:CreateComputeEnvironment": ("batch:TagResource", "iam:PassRole"),
    "batch:CreateJobQueue": ("batch:TagResource",),
    "ec2:CreateFleet": ("ec2:CreateTags", "ec2:RunInstances", "iam:PassRole"),
    "ec2:CreateLaunchTemplate": ("ec2:CreateTags",),
    "sqs:CreateQueue": ("sqs:TagQueue",),
    "events:PutRule": ("events:TagResource",),
    "iam:CreateRole": ("iam:TagRole",),
    "iam:CreatePolicy": ("iam:TagPolicy",),
    "iam:CreateInstanceProfile": ("iam:TagInstanceProfile",),
}
#: s3fs makes these on the checkpoint store (save, list, restore, prune).
CHECKPOINT_STORE_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket")

ACTIONS: dict[str, tuple[str, ...]] = {
    "orchestrator": (
        "batch:DescribeComputeEnvironments",
        "batch:DescribeJobDefinitions",
        "batch:DescribeJobQueues",
        "batch:DescribeJobs",
        "batch:ListJobs",
        "batch:RegisterJobDefinition",
        "batch:SubmitJob",
        "batch:TagResource",
        "batch:TerminateJob",
        "ec2:CreateFleet",
        "ec2:CreateTags",
        "ec2:DescribeInstanceStatus",
        "ec2:DescribeInstances",
        "ec2:DescribeSpotPriceHistory",
        "ec2:RunInstances",
        "ec2:TerminateInstances",
        "ecs:DescribeContainerInstances",
        "iam:PassRole",
        "pricing:GetProducts",
        "s3:GetObject",
        "sqs:DeleteMessage",
        "sqs:GetQueueUrl",
        "sqs:ReceiveMessage",
        "ssm:CancelCommand",
        "ssm:GetCommandInvocation",
        "ssm:ListCommands",
        "ssm:SendCommand",
        "sts:GetCallerIdentity",
        *CHECKPOINT_STORE_ACTIONS,
    ),
    "job": ("s3:PutObject", *CHECKPOINT_STORE_ACTIONS),
    "setup": (
        "batch:CreateComputeEnvironment",
        "batch:CreateJobQueue",
        "batch:DeleteComputeEnvironment",
        "batch:DeleteJobQueue",
        "batch:DeregisterJobDefinition",
        "batch:DescribeComputeEnvironments",
        "batch:DescribeJobDefinitions",
        "batch:DescribeJobQueues",
        "batch:TagResource",
        "batch:UpdateComputeEnvironment",
        "batch:UpdateJobQueue",
        "ec2:CreateLaunchTemplate",
        "ec2:CreateTags",
        "ec2:DeleteLaunchTemplate",
        "ec2:DescribeInstances",
        "ec2:DescribeLaunchTemplates",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSubnets",
        "ec2:TerminateInstances",
        "events:DeleteRule",
        "events:ListRules",
        "events:ListTagsForResource",
        "events:ListTargetsByRule",
        "events:PutRule",
        "events:PutTargets",
        "events:RemoveTargets",
        "events:TagResource",
        "iam:AddRoleToInstanceProfile",
        "iam:AttachRolePolicy",
        "iam:CreateInstanceProfile",
        "iam:CreatePolicy",
        "iam:CreateRole",
        "iam:DeleteInstanceProfile",
        "iam:DeletePolicy",
        "iam:DeleteRole",
        "iam:DeleteRolePolicy",
        "iam:DetachRolePolicy",
        "iam:ListAttachedRolePolicies",
        "iam:ListInstanceProfiles",
        "iam:ListPolicies",
        "iam:ListRolePolicies",
        "iam:ListRoles",
        "iam:PassRole",
        "iam:PutRolePolicy",
        "iam:RemoveRoleFromInstanceProfile",
        "iam:SimulatePrincipalPolicy",
        "iam:TagInstanceProfile",
        "iam:TagPolicy",
        "iam:TagRole",
        "s3:CreateBucket",
        "s3:DeleteBucket",
        "s3:DeleteObject",
        "s3:GetBucketTagging",
        "s3:ListBucket",
        "s3:PutBucketTagging",
        "servicequotas:GetServiceQuota",
        "sqs:CreateQueue",
        "sqs:DeleteQueue",
        "sqs:GetQueueUrl",
        "sqs:ListQueueTags",
        "sqs:ListQueues",
        "sqs:TagQueue",
        "sts:GetCallerIdentity",
    ),
}


def _arn(service: str, region: str, account: str, resource: str) -> str:
    return f"arn:aws:{service}:{region}:{account}:{resource}"


def orchestrator_policy(opts: AwsOptions, account: str, region: str) -> dict[str, Any]:
    """What ``stormproof run`` needs on the project's resources, scoped where IAM allows."""
    project = opts.project
    queues = [_arn("batch", region, account, f"job-queue/{opts.queue(p)}") for p in opts.pools]
    definitions = _arn("batch", region, account, f"job-definition/{project}-*")
    jobs = _arn("batch", region, account, "job/*")
    bucket = opts.bucket or f"{project}-bucket"
    sqs = _arn("sqs", region, account, names.interruption_queue(project))
    job_role = f"arn:aws:iam::{account}:role/{project}/{names.role(project, 'job')}"
    instance_role = f"arn:aws:iam::{account}:role/{project}/{names.role(project, 'instance')}"
    node_role = f"arn:aws:iam::{account}:role/{project}/{names.role(project, 'node')}"
    statements = [
        _allow(
            "SubmitToTheProjectQueues",
            ["batch:SubmitJob", "batch:TagResource"],
            [*queues, definitions, jobs],
        ),
        _allow("RegisterTheProjectJobDefinitions", ["batch:RegisterJobDefinition"], [definitions]),
        _allow("WatchAndStopJobs", ["batch:TerminateJob"], [jobs]),
        _allow(
            "DescribeBatch",  # Describe/List calls take no resource-level permissions
            [
                "batch:DescribeJobs",
                "batch:ListJobs",
                "batch:DescribeJobQueues",
                "batch:DescribeComputeEnvironments",
                "batch:DescribeJobDefinitions",
                "ecs:DescribeContainerInstances",
                "ec2:DescribeInstances",
                "ec2:DescribeInstanceStatus",
                "ec2:DescribeSpotPriceHistory",
                "pricing:GetProducts",
                "sts:GetCallerIdentity",
            ],
            ["*"],
        ),
        _allow(
            "PassTheJobAndInstanceRoles", ["iam:PassRole"], [job_role, instance_role, node_role]
        ),
        _allow(  # capacity: aws: Run Command on the project's instances only
            "RunCommandsOnTheProjectInstances",
            ["ssm:SendCommand"],
            [f"arn:aws:ec2:{region}:{account}:instance/*"],
            {"StringEquals": {f"ssm:resourceTag/{names.TAG_KEY}": project}},
        ),
        _allow(
            "RunTheShellScriptDocument",
            ["ssm:SendCommand"],
            [f"arn:aws:ssm:{region}::document/AWS-RunShellScript"],
        ),
        _allow(  # these take no resource-level permissions
            "WatchAndCancelCommands",
            ["ssm:ListCommands", "ssm:GetCommandInvocation", "ssm:CancelCommand"],
            ["*"],
        ),
        _allow(
            "ReadInterruptionWarnings",
            ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueUrl"],
            [sqs],
        ),
        _allow(
            "LaunchTheProjectInstances",  # capacity: aws
            ["ec2:CreateFleet", "ec2:RunInstances", "ec2:CreateTags", "ec2:TerminateInstances"],
            ["*"],
            {"StringEquals": {f"aws:RequestTag/{names.TAG_KEY}": project}},
        ),
        _allow(
            "TerminateOnlyTheProjectInstances",
            ["ec2:TerminateInstances"],
            ["*"],
            {"StringEquals": {f"aws:ResourceTag/{names.TAG_KEY}": project}},
        ),
        *_bucket_statements(bucket, ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]),
    ]
    return {"Version": "2012-10-17", "Statement": statements}


def job_policy(opts: AwsOptions) -> dict[str, Any]:
    """What the containers need: the run's status and checkpoint keys in the bucket."""
    bucket = opts.bucket or f"{opts.project}-bucket"
    statements = _bucket_statements(bucket, ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"])
    if opts.checkpoints and opts.checkpoints.startswith("s3://"):
        other = opts.checkpoints[len("s3://") :].split("/", 1)[0]
        if other != bucket:
            statements += _bucket_statements(
                other, ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
            )
    return {"Version": "2012-10-17", "Statement": statements}


def setup_policy(opts: AwsOptions, account: str) -> dict[str, Any]:
    """What ``aws setup``/``teardown``/``doctor`` need (an administrator's, once)."""
    project = opts.project
    statements = [
        _allow("ManageTheProject", list(ACTIONS["setup"]), ["*"]),
        _allow(
            "PassOnlyTheProjectRoles",
            ["iam:PassRole"],
            [f"arn:aws:iam::{account}:role/{project}/*"],
        ),
    ]
    return {"Version": "2012-10-17", "Statement": statements}


def trust(service: str) -> str:
    """The trust policy that lets ``service`` (``batch.amazonaws.com`` …) assume a role."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )


def actions_of(policy: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for statement in policy["Statement"]:
        action = statement["Action"]
        out.update([action] if isinstance(action, str) else action)
    return out


def _allow(
    sid: str, actions: list[str], resources: list[str], condition: dict[str, Any] | None = None
) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": sorted(set(actions)),
        "Resource": resources,
    }
    if condition:
        statement["Condition"] = condition
    return statement


def _bucket_statements(bucket: str, object_actions: list[str]) -> list[dict[str, Any]]:
    return [
        _allow(f"Objects{_sid(bucket)}", object_actions, [f"arn:aws:s3:::{bucket}/*"]),
        _allow(f"List{_sid(bucket)}", ["s3:ListBucket"], [f"arn:aws:s3:::{bucket}"]),
    ]


def _sid(text: str) -> str:
    return "".join(part.capitalize() for part in text.replace(".", "-").split("-"))[:60]
