"""``stormproof aws teardown``: find what carries the project's tag, remove it, nothing else.

Discovery is read-only (``--dry-run`` makes only those calls and prints the rest); the
removal goes in dependency order: queues are disabled, then deleted, before the compute
environments they use; roles leave their instance profile and lose their policies before
they go; the bucket is emptied before it is deleted (``--keep-bucket`` keeps it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from stormproof.aws import names
from stormproof.aws.clients import Aws, error_code, explain
from stormproof.aws.infra import Call, send
from stormproof.aws.settings import AwsOptions

_GONE = (
    "NoSuchEntity",
    "NoSuchBucket",
    "AWS.SimpleQueueService.NonExistentQueue",
    "ResourceNotFoundException",
    "InvalidInstanceID.NotFound",
    "InvalidLaunchTemplateId.NotFound",
)


def teardown_plan(aws: Aws, opts: AwsOptions, keep_bucket: bool) -> list[Call]:
    """Every removing call, for what discovery found tagged with the project."""
    project = opts.project
    mine = {names.TAG_KEY: project}
    plan: list[Call] = []
    plan += _instances(aws, project)
    plan += _batch(aws, mine)
    plan += _interruptions(aws, project, mine)
    plan += _iam(aws, project)
    if opts.bucket and not keep_bucket:
        plan += _bucket(aws, opts.bucket, mine)
    return plan


def _tagged(tags: Any, mine: dict[str, str]) -> bool:
    if isinstance(tags, list):
        tags = {t.get("Key", t.get("key")): t.get("Value", t.get("value")) for t in tags}
    return all((tags or {}).get(k) == v for k, v in mine.items())


def _instances(aws: Aws, project: str) -> list[Call]:
    ec2 = aws.client("ec2")
    tag = [{"Name": f"tag:{names.TAG_KEY}", "Values": [project]}]
    live = [
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}
    ]
    ids = [
        i["InstanceId"]
        for r in ec2.describe_instances(Filters=tag + live).get("Reservations", [])
        for i in r.get("Instances", [])
    ]
    calls = [Call("ec2", "terminate_instances", {"InstanceIds": ids}, _GONE)] if ids else []
    for template in ec2.describe_launch_templates(Filters=tag).get("LaunchTemplates", []):
        calls.append(
            Call(
                "ec2",
                "delete_launch_template",
                {"LaunchTemplateId": template["LaunchTemplateId"]},
                _GONE,
            )
        )
    return calls


def _batch(aws: Aws, mine: dict[str, str]) -> list[Call]:
    batch = aws.client("batch")
    queues = [
        q
        for q in batch.describe_job_queues().get("jobQueues", [])
        if _tagged(q.get("tags"), mine) and q.get("status") != "DELETED"
    ]
    envs = [
        e
        for e in batch.describe_compute_environments().get("computeEnvironments", [])
        if _tagged(e.get("tags"), mine) and e.get("status") != "DELETED"
    ]
    definitions = [
        d
        for d in batch.describe_job_definitions(status="ACTIVE").get("jobDefinitions", [])
        if _tagged(d.get("tags"), mine)
    ]
    calls: list[Call] = []
    for q in queues:
        name = q["jobQueueName"]
        calls.append(
            Call(
                "batch",
                "update_job_queue",
                {"jobQueue": name, "state": "DISABLED"},
                wait=f"queue {name} settled",
            )
        )
        calls.append(
            Call("batch", "delete_job_queue", {"jobQueue": name}, wait=f"queue {name} gone")
        )
    for e in envs:
        name = e["computeEnvironmentName"]
        calls.append(
            Call(
                "batch",
                "update_compute_environment",
                {"computeEnvironment": name, "state": "DISABLED"},
                wait=f"compute environment {name} settled",
            )
        )
        calls.append(Call("batch", "delete_compute_environment", {"computeEnvironment": name}))
    for d in definitions:
        calls.append(
            Call("batch", "deregister_job_definition", {"jobDefinition": d["jobDefinitionArn"]})
        )
    return calls


def _interruptions(aws: Aws, project: str, mine: dict[str, str]) -> list[Call]:
    events, sqs = aws.client("events"), aws.client("sqs")
    calls: list[Call] = []
    for rule in events.list_rules(NamePrefix=project).get("Rules", []):
        tags = events.list_tags_for_resource(ResourceARN=rule["Arn"]).get("Tags", [])
        if not _tagged(tags, mine):
            continue
        targets = events.list_targets_by_rule(Rule=rule["Name"]).get("Targets", [])
        if targets:
            calls.append(
                Call(
                    "events",
                    "remove_targets",
                    {"Rule": rule["Name"], "Ids": [t["Id"] for t in targets]},
                )
            )
        calls.append(Call("events", "delete_rule", {"Name": rule["Name"]}, _GONE))
    for url in sqs.list_queues(QueueNamePrefix=project).get("QueueUrls", []):
        if _tagged(sqs.list_queue_tags(QueueUrl=url).get("Tags", {}), mine):
            calls.append(Call("sqs", "delete_queue", {"QueueUrl": url}, _GONE))
    return calls


def _iam(aws: Aws, project: str) -> list[Call]:
    """Everything under the project's IAM path (``/<project>/``), where setup puts it."""
    iam, path = aws.client("iam"), f"/{project}/"
    calls: list[Call] = []
    for profile in iam.list_instance_profiles(PathPrefix=path).get("InstanceProfiles", []):
        name = profile["InstanceProfileName"]
        for role in profile.get("Roles", []):
            calls.append(
                Call(
                    "iam",
                    "remove_role_from_instance_profile",
                    {"InstanceProfileName": name, "RoleName": role["RoleName"]},
                    _GONE,
                )
            )
        calls.append(Call("iam", "delete_instance_profile", {"InstanceProfileName": name}, _GONE))
    for role in iam.list_roles(PathPrefix=path).get("Roles", []):
        name = role["RoleName"]
        for policy in iam.list_attached_role_policies(RoleName=name).get("AttachedPolicies", []):
            calls.append(
                Call(
                    "iam",
                    "detach_role_policy",
                    {"RoleName": name, "PolicyArn": policy["PolicyArn"]},
                    _GONE,
                )
            )
        for policy_name in iam.list_role_policies(RoleName=name).get("PolicyNames", []):
            calls.append(
                Call(
                    "iam",
                    "delete_role_policy",
                    {"RoleName": name, "PolicyName": policy_name},
                    _GONE,
                )
            )
        calls.append(Call("iam", "delete_role", {"RoleName": name}, _GONE))
    for policy in iam.list_policies(Scope="Local", PathPrefix=path).get("Policies", []):
        calls.append(Call("iam", "delete_policy", {"PolicyArn": policy["Arn"]}, _GONE))
    return calls


def _bucket(aws: Aws, bucket: str, mine: dict[str, str]) -> list[Call]:
    s3 = aws.client("s3")
    try:
        tags = s3.get_bucket_tagging(Bucket=bucket).get("TagSet", [])
    except Exception as exc:
        if error_code(exc) in ("NoSuchBucket", "NoSuchTagSet", "NoSuchTagSetError"):
            return []  # gone already, or not ours (untagged): left alone
        raise explain(exc, "GetBucketTagging", bucket) from None
    if not _tagged(tags, mine):
        return []
    calls: list[Call] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if token:
            kwargs["ContinuationToken"] = token
        page = s3.list_objects_v2(**kwargs)
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            calls.append(
                Call(
                    "s3",
                    "delete_objects",
                    {"Bucket": bucket, "Delete": {"Objects": keys, "Quiet": True}},
                )
            )
        token = page.get("NextContinuationToken")
        if not token:
            break
    calls.append(Call("s3", "delete_bucket", {"Bucket": bucket}, _GONE))
    return calls


def remove(aws: Aws, calls: list[Call], say: Callable[[str], None], wait_s: float = 600) -> None:
    """Send teardown's calls in order; "not found" is gone already."""
    send(
        aws,
        calls,
        say,
        lambda exc, call: error_code(exc) in call.done_if,
        ("gone", "already"),
        _settle,
        wait_s,
    )


def _settle(aws: Aws, call: Call, timeout_s: float) -> None:
    """Batch changes state asynchronously: wait until a queue or environment is done
    updating (or gone) before the next call depends on it."""
    batch = aws.client("batch")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "jobQueue" in call.params:
            found = batch.describe_job_queues(jobQueues=[call.params["jobQueue"]])["jobQueues"]
        else:
            found = batch.describe_compute_environments(
                computeEnvironments=[call.params["computeEnvironment"]]
            )["computeEnvironments"]
        status = found[0].get("status") if found else "DELETED"
        if status not in ("UPDATING", "DELETING", "CREATING"):
            return
        time.sleep(2)
