"""The generated IAM policies name exactly the actions the code calls: no more, no less.

The source is read, not run: every boto3 call on a client held under its service's name
(``batch.submit_job``, ``self.sqs.receive_message``, ``aws.client("sts").get_caller_identity``)
and every planned ``Call("iam", "create_role", …)`` of setup and teardown, mapped to its
IAM action through botocore's own service models.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import boto3
import pytest

from stormproof.aws import iam
from stormproof.aws.settings import AwsOptions

SRC = Path(__file__).resolve().parents[2] / "src" / "stormproof"
SERVICES = {
    "batch",
    "ec2",
    "ecs",
    "s3",
    "sqs",
    "ssm",
    "events",
    "iam",
    "sts",
    "service-quotas",
    "pricing",
}
#: boto3's service name -> IAM's action prefix, where they differ.
PREFIX = {"service-quotas": "servicequotas"}
NOT_CALLS = {"client", "pricing_client", "get_paginator", "close", "meta", "can_paginate"}
PRINCIPALS = {
    "orchestrator": (
        "executors/aws_batch/executor.py",
        "aws/interruptions.py",
        "aws/prices.py",
        "capacity/aws.py",
        "executors/ssm/executor.py",
        "aws/output_reader.py",
    ),
    "job": ("aws/agent.py",),
    "setup": ("aws/infra.py", "aws/teardown.py", "aws/doctor.py"),
}
#: What s3fs does for the checkpoint store, out of sight of this scan.
DECLARED = {"orchestrator": iam.CHECKPOINT_STORE_ACTIONS, "job": iam.CHECKPOINT_STORE_ACTIONS}


def _service(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name) and node.id in SERVICES:
        return node.id
    if isinstance(node, ast.Attribute) and node.attr in SERVICES:
        return node.attr
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr == "pricing_client":
            return "pricing"
        if node.func.attr == "client" and node.args and isinstance(node.args[0], ast.Constant):
            return str(node.args[0].value)
    return None


def calls_in(path: Path) -> set[tuple[str, str]]:
    """(service, method) of every AWS call the module makes."""
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr not in NOT_CALLS:
            service = _service(func.value)
            if service is not None:
                found.add((service, func.attr))
        elif isinstance(func, ast.Name) and func.id == "Call" and len(node.args) >= 2:
            service, method = node.args[0], node.args[1]
            if isinstance(service, ast.Constant) and isinstance(method, ast.Constant):
                found.add((str(service.value), str(method.value)))
    return found


@functools.cache
def api_names(service: str) -> dict[str, str]:
    """boto3's method name -> the API operation, from botocore's model of ``service``."""
    client = boto3.session.Session().client(service, region_name="us-east-1")
    return dict(client.meta.method_to_api_mapping)


def iam_actions(calls: set[tuple[str, str]]) -> set[str]:
    out: set[str] = set()
    for service, method in calls:
        mapping = api_names(service)
        assert method in mapping, f"{service}.{method} is not a boto3 call"
        action = f"{PREFIX.get(service, service)}:{mapping[method]}"
        action = iam.ACTION_OF.get(action, action)
        out.add(action)
        out.update(iam.IMPLIED.get(action, ()))
    return out


@pytest.mark.parametrize("principal", sorted(PRINCIPALS))
def test_each_policy_names_exactly_what_its_code_calls(principal: str) -> None:
    calls: set[tuple[str, str]] = set()
    for module in PRINCIPALS[principal]:
        calls |= calls_in(SRC / module)
    assert calls, f"no AWS calls found for {principal}: the scan is broken"
    needed = iam_actions(calls) | set(DECLARED.get(principal, ()))
    listed = set(iam.ACTIONS[principal])
    assert sorted(needed - listed) == [], "called but not in the policy"
    assert sorted(listed - needed) == [], "in the policy but never called"


def test_the_generated_documents_grant_the_listed_actions_only() -> None:
    opts = AwsOptions(project="p", bucket="b", pools={"spot": {"market": "spot"}})
    assert iam.actions_of(iam.orchestrator_policy(opts, "1", "us-east-1")) == set(
        iam.ACTIONS["orchestrator"]
    )
    assert iam.actions_of(iam.job_policy(opts)) <= set(iam.ACTIONS["job"])
    assert iam.actions_of(iam.setup_policy(opts, "1")) == set(iam.ACTIONS["setup"])
    document = iam.orchestrator_policy(opts, "1", "us-east-1")
    assert all(s["Action"] != "*" and "*" not in s["Action"] for s in document["Statement"])


def test_the_scan_sees_a_call_added_to_the_code(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f(aws):\n    aws.client('batch').cancel_job(jobId='x', reason='y')\n")
    assert iam_actions(calls_in(module)) == {"batch:CancelJob"}
