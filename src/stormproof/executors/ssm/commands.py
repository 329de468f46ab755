"""What one attempt becomes on an EC2 instance through SSM Run Command, and back.

Pure functions of the attempt and the run's AWS settings (tested and printed without AWS):

* ``send_request``: the ``SendCommand`` of ``AWS-RunShellScript`` on the one instance the
  core placed the attempt on. Its script makes the attempt's directory on the instance
  (under ``$TMPDIR``, default ``/tmp``), exports the task's environment and ``STORMPROOF_*``,
  records its own pid and ``exec``s the agent, ``stormproof exec``, around the task's command,
  so the agent *is* that pid. The attempt's id is in the command's ``Comment``
  (``aws.names.command_comment``), which ``ListCommands`` shows again after a restart.
  SSM's own execution timeout is the task's ``timeout`` plus ``aws.timeout_margin`` (the
  core's kill comes first), or SSM's longest, 48 hours, without one: the document's
  default of one hour would kill long tasks.
* ``signal_request``: the small command that sends SIGTERM to that pid, for a kill: the
  agent then stops the task with time to commit its checkpoint and uploads it, which a
  ``CancelCommand`` (the agent killed with its task) would not allow.
* ``settle``: how an attempt ended, from the agent's exit status in S3 first (it saw the
  command's own exit code and any notice), SSM's invocation second:

======================================================  =====================================
what is known                                           event
======================================================  =====================================
the agent's status ``ended``, stormproof killed it      ``AttemptExited`` (the core's kill)
the agent's status ``ended`` with a notice               ``AttemptPreempted`` (Capacity.Interrupted)
the agent's status ``ended``                            ``AttemptExited(exit_code)``
SSM ``Success``                                         ``AttemptExited(0)``
SSM ``Cancelled`` after stormproof's kill               ``AttemptExited(143)``
SSM ``TimedOut``, ``Execution Timed Out``               ``AttemptExited(timed_out=True)``
SSM ``Undeliverable``, ``Delivery Timed Out``,           ``AttemptLost`` (Node.Lost) naming the
``Terminated``, ``Cancelled`` by someone else            instance and what to check
SSM ``Failed`` with 127 and no agent status             ``AttemptSubmitFailed``: no stormproof
SSM ``Failed`` with an exit code                        ``AttemptExited(code)``
======================================================  =====================================
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping
from typing import Any

from stormproof.aws import names
from stormproof.aws.settings import AwsOptions
from stormproof.checkpoints import protocol
from stormproof.core.events import (
    AttemptExited,
    AttemptLost,
    AttemptPreempted,
    AttemptSubmitFailed,
    Event,
)
from stormproof.executors.aws_batch.jobs import agent_command
from stormproof.executors.base import AttemptJob

DOCUMENT = "AWS-RunShellScript"
#: SSM's longest execution timeout (the document's default is one hour).
MAX_EXECUTION_S = 172_800
#: How long SSM may wait for the instance's agent to take the command.
DELIVERY_TIMEOUT_S = 600
#: SSM's command statuses that are final.
ENDED = frozenset({"Success", "Cancelled", "Failed", "TimedOut"})
STARTED = frozenset({"InProgress", "Cancelling", *ENDED})
#: What a killed command's agent exits with (128 + SIGTERM).
TERMINATED_EXIT = 143
_NOT_DELIVERED = ("Undeliverable", "Delivery Timed Out", "Terminated")
_SHELL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def attempt_dir(job: AttemptJob) -> str:
    """The attempt's directory on the instance, as a shell word (``$TMPDIR`` expanded there)."""
    return f'"${{TMPDIR:-/tmp}}/stormproof/{names.job_name(job.run, job.attempt_id)}"'


def script(job: AttemptJob, options: AwsOptions) -> list[str]:
    """The lines of the ``AWS-RunShellScript`` that runs the attempt under the agent."""
    env = {
        k: v
        for k, v in job.env.items()
        if k != protocol.ENV_CHECKPOINT_DIR and _SHELL_NAME.match(k)
    }
    if options.region:
        env.setdefault("AWS_REGION", options.region)
    lines = [
        f"d={attempt_dir(job)}",
        'mkdir -p "$d/work" && cd "$d/work" || exit 125',
        *(f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())),
        'echo $$ > "$d/agent.pid"',
        "exec " + shlex.join(agent_command(job, options, options.checkpoints)),
    ]
    return lines


def execution_timeout_s(job: AttemptJob, options: AwsOptions) -> int:
    if job.timeout_s is None:
        return MAX_EXECUTION_S
    return min(MAX_EXECUTION_S, max(60, math.ceil(job.timeout_s + options.timeout_margin_s)))


def send_request(job: AttemptJob, instance_id: str, options: AwsOptions) -> dict[str, Any]:
    """The ``SendCommand`` parameters of one attempt on EC2 instance ``instance_id``."""
    request: dict[str, Any] = {
        "DocumentName": DOCUMENT,
        "InstanceIds": [instance_id],
        "Comment": names.command_comment(job.run, job.attempt_id),
        "TimeoutSeconds": DELIVERY_TIMEOUT_S,
        "Parameters": {
            "commands": script(job, options),
            "executionTimeout": [str(execution_timeout_s(job, options))],
        },
    }
    if options.bucket:  # the output beyond SSM's 24,000 characters, kept with the statuses
        request["OutputS3BucketName"] = options.bucket
        request["OutputS3KeyPrefix"] = f"stormproof/logs/{job.run}/{job.attempt_id}"
    return request


def signal_request(job: AttemptJob, instance_id: str) -> dict[str, Any]:
    """SIGTERM to the attempt's agent on the instance (if it still runs that attempt)."""
    lines = [
        f"p={attempt_dir(job)}/agent.pid",
        'test -f "$p" || exit 0',
        'pid=$(cat "$p")',
        # the pid is the agent's only while its command line names the attempt
        f'tr "\\0" " " < "/proc/$pid/cmdline" | grep -qF -- {shlex.quote(job.attempt_id)} '
        '&& kill -TERM "$pid"',
        "exit 0",
    ]
    return {
        "DocumentName": DOCUMENT,
        "InstanceIds": [instance_id],
        "Comment": "stop " + names.command_comment(job.run, job.attempt_id)[:95],
        "TimeoutSeconds": DELIVERY_TIMEOUT_S,
        "Parameters": {"commands": lines, "executionTimeout": ["60"]},
    }


def settle(
    now: float,
    attempt_id: str,
    instance_id: str,
    command: Mapping[str, Any],
    invocation: Mapping[str, Any] | None,
    agent: Mapping[str, Any] | None,
    *,
    killed: bool,
) -> Event:
    """The one event that ends an attempt whose command ended (see the module's table)."""
    if agent is not None and agent.get("state") == "ended":
        exit_code = agent.get("exit_code")
        agent_code = int(exit_code) if isinstance(exit_code, int) else 1
        if killed:
            return AttemptExited(now, attempt_id, agent_code)
        if agent.get("notice"):
            why = f"interruption notice ({agent['notice']}); the agent stopped the command"
            return AttemptPreempted(now, attempt_id, why)
        return AttemptExited(now, attempt_id, agent_code)
    status = str(command.get("Status", ""))
    details = str((invocation or {}).get("StatusDetails") or command.get("StatusDetails") or "")
    code = (invocation or {}).get("ResponseCode")
    if status == "Success":
        return AttemptExited(now, attempt_id, 0)
    if details in _NOT_DELIVERED or (status == "TimedOut" and "Delivery" in details):
        return AttemptLost(
            now,
            attempt_id,
            f"SSM could not run the command on {instance_id} ({details or status}): is the "
            "instance running, its SSM agent online, and may its role use SSM "
            "(AmazonSSMManagedInstanceCore)?",
        )
    if status == "TimedOut":
        return AttemptExited(now, attempt_id, 137, timed_out=True)
    if status == "Cancelled":
        if killed:
            return AttemptExited(now, attempt_id, TERMINATED_EXIT)
        return AttemptLost(now, attempt_id, f"its SSM command on {instance_id} was cancelled")
    if code == 127:
        return AttemptSubmitFailed(
            now,
            attempt_id,
            f"{instance_id} could not start `stormproof exec` (exit 127): the AMI needs "
            "Python and `pip install 'stormproof[aws]'` on the PATH of SSM's shell",
        )
    if isinstance(code, int) and code >= 0:
        return AttemptExited(now, attempt_id, code)
    return AttemptLost(now, attempt_id, f"SSM says {status or '?'} ({details or 'no details'})")
