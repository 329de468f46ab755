"""What one attempt becomes on Batch: its ``SubmitJob`` request, and its job definition.

Pure functions of the attempt and the run's AWS settings, so the requests can be tested
(and printed) without AWS.

* The command runs under the agent, ``stormproof exec``, which watches for interruption
  notices, uploads checkpoints and writes the exit status to S3 (``aws/agent.py``).
* Resources are ``resourceRequirements`` (whole vCPUs: EC2 compute environments take no
  fractions; memory in MiB; GPUs), the environment is the task's plus ``STORMPROOF_*``.
* Batch's own timeout is the task's plus a margin: the core's kill (with its grace) comes
  first, Batch's is the backstop. Batch never retries (``attempts: 1``): the core does.
* ``nodes > 1`` is a multi-node parallel job (on-demand compute environments only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from stormproof.aws import names
from stormproof.aws.settings import AwsOptions
from stormproof.checkpoints import protocol
from stormproof.executors.base import AttemptJob

#: Batch's smallest attempt duration.
MIN_TIMEOUT_S = 60
#: Variables that name the orchestrator's own paths: meaningless in a container, left out
#: except where the agent replaces them (the checkpoint directory).
_LOCAL_PATHS = (protocol.ENV_CHECKPOINT_DIR,)


def agent_command(job: AttemptJob, options: AwsOptions, checkpoints: str | None) -> list[str]:
    """``stormproof exec …`` around the task's command."""
    cmd = ["stormproof", "exec", "--run", job.run, "--attempt", job.attempt_id]
    where = options.status_location(job.run, job.attempt_id)
    if where is not None:
        cmd += [
            "--status",
            f"s3://{where[0]}/{where[1]}",
            "--log-upload",
            f"{options.log_upload_s:g}s",
        ]
    if checkpoints and protocol.ENV_CHECKPOINT_DIR in job.env:
        cmd += ["--checkpoints", checkpoints]
    if isinstance(job.command, str):
        return [*cmd, "--shell", "--", job.command]
    return [*cmd, "--", *job.command]


def resources(job: AttemptJob) -> list[dict[str, str]]:
    out = [
        {"type": "VCPU", "value": str(max(1, math.ceil(job.vcpus)))},
        {"type": "MEMORY", "value": str(max(4, job.memory_mib))},
    ]
    if job.gpus:
        out.append({"type": "GPU", "value": str(job.gpus)})
    return out


def environment(env: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in sorted(env.items()) if k not in _LOCAL_PATHS]


def timeout(job: AttemptJob, margin_s: float) -> dict[str, int] | None:
    if job.timeout_s is None:
        return None
    return {"attemptDurationSeconds": max(MIN_TIMEOUT_S, math.ceil(job.timeout_s + margin_s))}


def submit_request(
    job: AttemptJob,
    options: AwsOptions,
    definition: str,
    checkpoints: str | None,
) -> dict[str, Any]:
    """The ``SubmitJob`` parameters of one attempt."""
    overrides = {
        "command": agent_command(job, options, checkpoints),
        "environment": environment(job.env),
        "resourceRequirements": resources(job),
    }
    request: dict[str, Any] = {
        "jobName": names.job_name(job.run, job.attempt_id),
        "jobQueue": options.queue(job.pool),
        "jobDefinition": definition,
        "retryStrategy": {"attempts": 1},
        "tags": {names.TAG_KEY: options.project, names.RUN_TAG_KEY: job.run[:256]},
        "propagateTags": True,
    }
    if job.nodes > 1:
        request["nodeOverrides"] = {
            "numNodes": job.nodes,
            "nodePropertyOverrides": [{"targetNodes": "0:", "containerOverrides": overrides}],
        }
    else:
        request["containerOverrides"] = overrides
    limit = timeout(job, options.timeout_margin_s)
    if limit is not None:
        request["timeout"] = limit
    return request


def definition_request(
    project: str, image: str, job_role_arn: str | None, nodes: int = 1
) -> dict[str, Any]:
    """``RegisterJobDefinition`` for one image (SubmitJob cannot override the image)."""
    container: dict[str, Any] = {
        "image": image,
        "command": ["stormproof", "exec", "--help"],
        "resourceRequirements": [
            {"type": "VCPU", "value": "1"},
            {"type": "MEMORY", "value": "512"},
        ],
    }
    if job_role_arn:
        container["jobRoleArn"] = job_role_arn
    request: dict[str, Any] = {
        "jobDefinitionName": names.job_definition(project, image, nodes > 1),
        "retryStrategy": {"attempts": 1},
        "tags": {names.TAG_KEY: project},
        "propagateTags": True,
    }
    if nodes > 1:
        request["type"] = "multinode"
        request["nodeProperties"] = {
            "numNodes": nodes,
            "mainNode": 0,
            "nodeRangeProperties": [{"targetNodes": "0:", "container": container}],
        }
    else:
        request["type"] = "container"
        request["containerProperties"] = container
    return request


def chunks(items: Sequence[str], size: int = 100) -> list[list[str]]:
    """``DescribeJobs`` takes at most 100 ids per call."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
