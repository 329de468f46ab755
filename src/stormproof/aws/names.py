"""Names of stormproof's AWS resources, all derived from the project and the pool.

Every resource ``stormproof aws setup`` creates is named ``<project>-…`` and tagged
``stormproof:project=<project>``, so ``teardown`` finds exactly those and nothing else.

A Batch job is named after its attempt. Batch allows letters, digits, ``-`` and ``_``
(at most 128); run names and task ids also allow ``.``, and an attempt id has a ``/``.
The readable part keeps what Batch allows and turns the rest into ``-``; a short hash of
the exact run and attempt id follows, so two attempts never share a name even where the
readable parts agree (``a.b`` and ``a-b``). ``job_name`` is the mapping; the name and the
job id are the attempt's handle in the run's log.
"""

from __future__ import annotations

import hashlib
import re

TAG_KEY = "stormproof:project"
#: Tag carrying the run on each job (and instance), for people reading the Batch console.
RUN_TAG_KEY = "stormproof:run"
_NOT_BATCH = re.compile(r"[^A-Za-z0-9_-]")
_MAX_JOB_NAME = 128
_HASH_CHARS = 8


def _batch_part(text: str) -> str:
    return _NOT_BATCH.sub("-", text)


def run_prefix(run: str) -> str:
    """What every job name of ``run`` starts with (``ListJobs`` filters on it)."""
    return f"{_batch_part(run)[:60]}--"


def job_name(run: str, attempt_id: str) -> str:
    """The Batch job name of one attempt: readable, unique, in Batch's alphabet."""
    digest = hashlib.sha256(f"{run}\0{attempt_id}".encode()).hexdigest()[:_HASH_CHARS]
    readable = run_prefix(run) + _batch_part(attempt_id.replace("/", "--"))
    room = _MAX_JOB_NAME - _HASH_CHARS - 2
    return f"{readable[:room]}--{digest}"


def compute_environment(project: str, pool: str) -> str:
    return f"{project}-{_batch_part(pool)}-ce"


def job_queue(project: str, pool: str) -> str:
    return f"{project}-{_batch_part(pool)}"


def job_definition(project: str, image: str, multi_node: bool = False) -> str:
    """One job definition per image (SubmitJob cannot override the image)."""
    digest = hashlib.sha256(image.encode()).hexdigest()[:12]
    return f"{project}-{'mnp' if multi_node else 'job'}-{digest}"


def interruption_queue(project: str) -> str:
    return f"{project}-interruptions"


def interruption_rules(project: str) -> dict[str, str]:
    """EventBridge rule name -> the detail-type it forwards to the interruption queue."""
    return {
        f"{project}-spot-warning": "EC2 Spot Instance Interruption Warning",
        f"{project}-rebalance": "EC2 Instance Rebalance Recommendation",
    }


def role(project: str, what: str) -> str:
    """``batch`` (Batch's service role), ``instance`` (ECS hosts), ``job`` (containers),
    ``fleet`` (Spot Fleet), ``orchestrator`` (the run's own permissions)."""
    return f"{project}-{what}"


def status_key(prefix: str, run: str, attempt_id: str) -> str:
    """Where the agent writes an attempt's exit status in the bucket."""
    return f"{prefix}/status/{run}/{attempt_id}.json"


def log_key(status_key: str, stream: str) -> str:
    """Where the agent uploads an attempt's ``stdout`` or ``stderr``: beside its status
    (``…/<task>/<n>.json`` -> ``…/<task>/<n>.stdout.log``)."""
    return f"{status_key.removesuffix('.json')}.{stream}.log"


def fleet_token(instance_id: str) -> str:
    """The client token of the EC2 Fleet request for one of the core's instances."""
    return f"stormproof-{instance_id}"[:64]


def launch_template(project: str) -> str:
    """The launch template ``aws setup`` makes for ``capacity: aws``'s instances."""
    return f"{project}-nodes"


def command_comment(run: str, attempt_id: str) -> str:
    """The ``Comment`` of an attempt's SSM command (at most 100 characters): readable, and
    unique by the hash of the exact run and attempt id, so ``ListCommands`` finds it again
    after a restart (``executor: ssm``)."""
    digest = hashlib.sha256(f"{run}\0{attempt_id}".encode()).hexdigest()[:_HASH_CHARS]
    return f"stormproof {digest} {run[:40]}/{attempt_id}"[:100]
