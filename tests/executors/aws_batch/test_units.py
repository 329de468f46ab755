"""The Batch executor's pure parts: state translation, job names, requests, pool shapes,
multi-node placement — no AWS needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stormproof.aws import names
from stormproof.aws.settings import AwsOptions
from stormproof.core.defs import Market, PoolDef, Resources
from stormproof.core.events import (
    AttemptExited,
    AttemptLost,
    AttemptPreempted,
    AttemptSubmitFailed,
)
from stormproof.executors.aws_batch import AwsBatchExecutor
from stormproof.executors.aws_batch import jobs as requests
from stormproof.executors.aws_batch.states import ended
from stormproof.executors.base import AttemptJob
from tests.aws.fixtures import config_text


def job(
    status: str, reason: str = "", exit_code: int | None = None, container_reason: str = ""
) -> dict[str, Any]:
    container: dict[str, Any] = {}
    if exit_code is not None:
        container["exitCode"] = exit_code
    if container_reason:
        container["reason"] = container_reason
    return {
        "status": status,
        "statusReason": reason,
        "attempts": [{"container": container}],
        "startedAt": 1,
    }


def end(
    desc: dict[str, Any],
    spot: bool = True,
    killed: bool = False,
    agent: dict[str, Any] | None = None,
) -> Any:
    return ended(1.0, "t/1", desc, spot=spot, killed=killed, image="img:1", agent=agent)


def test_batch_status_reasons_become_the_cores_events() -> None:
    assert end(job("SUCCEEDED", exit_code=0)) == AttemptExited(1.0, "t/1", 0)
    assert end(job("FAILED", "Essential container in task exited", 3)) == AttemptExited(
        1.0, "t/1", 3
    )
    oom = end(
        job(
            "FAILED",
            "Essential container in task exited",
            137,
            "OutOfMemoryError: Container killed due to memory usage",
        )
    )
    assert isinstance(oom, AttemptExited) and oom.out_of_memory and not oom.timed_out
    timeout = end(job("FAILED", "Job attempt duration exceeded timeout"))
    assert isinstance(timeout, AttemptExited) and timeout.timed_out
    gone = job("FAILED", "Host EC2 (instance i-0abc123) terminated.")
    assert isinstance(end(gone, spot=True), AttemptPreempted)
    assert isinstance(end(gone, spot=False), AttemptLost)
    pull = end(
        job("FAILED", "Task failed to start", None, "CannotPullContainerError: pull access denied")
    )
    assert isinstance(pull, AttemptSubmitFailed) and "image 'img:1'" in pull.message
    assert isinstance(end(job("FAILED", "Cancelled by the operator")), AttemptLost)
    ours = end(job("FAILED", "stormproof: killed (grace 30s)"), killed=True)
    assert ours == AttemptExited(1.0, "t/1", 143)


def test_the_agents_exit_status_settles_a_job_whose_host_vanished() -> None:
    gone = job("FAILED", "Host EC2 (instance i-0abc123) terminated.")
    finished = {"state": "ended", "exit_code": 0, "notice": None}
    assert end(gone, agent=finished) == AttemptExited(1.0, "t/1", 0)  # it ended before
    noticed = {"state": "ended", "exit_code": 143, "notice": "spot instance-action terminate"}
    assert isinstance(end(gone, spot=False, agent=noticed), AttemptPreempted)
    running = {"state": "running", "checkpoints": [{"seq": 1}]}
    assert isinstance(end(gone, spot=False, agent=running), AttemptLost)


def test_job_names_are_batch_safe_unique_and_stable() -> None:
    a = names.job_name("md.2026", "pre.process/3")
    b = names.job_name("md.2026", "pre-process/3")
    assert a != b and a == names.job_name("md.2026", "pre.process/3")
    assert a.startswith(names.run_prefix("md.2026")) and a.startswith("md-2026--pre-process--3--")
    long = names.job_name("r" * 64, "t" * 128 + "/12")
    for name in (a, b, long):
        assert len(name) <= 128 and all(c.isalnum() or c in "-_" for c in name)


def _job(**kw: Any) -> AttemptJob:
    base: dict[str, Any] = dict(
        run="r",
        attempt_id="t/1",
        task_id="t",
        number=1,
        command=["python3", "x.py"],
        env={"A": "1"},
        attempt_dir=Path("/tmp/r/t/1"),
        pool="spot",
        market="spot",
    )
    base.update(kw)
    return AttemptJob(**base)


def test_a_submit_request_carries_resources_timeout_env_and_no_batch_retries() -> None:
    opts = AwsOptions(project="p", bucket="b", timeout_margin_s=60.0)
    env = {"A": "1", "STORMPROOF_CHECKPOINT_DIR": "/orchestrator/path"}
    request = requests.submit_request(
        _job(vcpus=0.5, memory_mib=3000, gpus=1, timeout_s=30.0, env=env),
        opts,
        "def-arn",
        "s3://b/ckpt",
    )
    overrides = request["containerOverrides"]
    assert overrides["resourceRequirements"] == [
        {"type": "VCPU", "value": "1"},
        {"type": "MEMORY", "value": "3000"},
        {"type": "GPU", "value": "1"},
    ]
    assert overrides["environment"] == [{"name": "A", "value": "1"}]  # no orchestrator paths
    assert overrides["command"][:2] == ["stormproof", "exec"]
    assert overrides["command"][-3:] == ["--", "python3", "x.py"]
    assert "--checkpoints" in overrides["command"] and "--status" in overrides["command"]
    at = overrides["command"].index("--log-upload")  # the agents upload the output this often
    assert overrides["command"][at + 1] == "30s"
    often = AwsOptions(project="p", bucket="b", log_upload_s=5.0)
    assert (
        "5s" in requests.submit_request(_job(), often, "d", None)["containerOverrides"]["command"]
    )
    assert request["timeout"] == {"attemptDurationSeconds": 90}
    assert request["retryStrategy"] == {"attempts": 1}
    assert request["jobQueue"] == "p-spot" and request["jobName"] == names.job_name("r", "t/1")
    assert request["tags"]["stormproof:project"] == "p"
    wide = requests.submit_request(_job(nodes=4, pool="od"), opts, "mnp", None)
    assert wide["nodeOverrides"]["numNodes"] == 4 and "containerOverrides" not in wide
    shell = requests.submit_request(_job(command="echo hi | wc"), opts, "d", None)
    assert shell["containerOverrides"]["command"][-3:] == ["--shell", "--", "echo hi | wc"]


def test_pools_take_their_node_from_the_largest_instance_type_and_count_from_max_vcpus() -> None:
    opts = AwsOptions(
        pools={
            "spot": {
                "market": "spot",
                "instance_types": {"c5.large": 1, "c5.xlarge": 2},
                "max_vcpus": 16,
            }
        },
        prices=False,
    )
    pool = PoolDef("spot", Market.SPOT, Resources(0, 0), 0, delegated=True)
    (described,) = AwsBatchExecutor.describe_pools((pool,), opts.to_dict())
    assert described.capacity.vcpus == 4 and 7000 < described.capacity.memory_mib < 8192
    assert described.count == 4 and described.instance_type == "c5.large,c5.xlarge"


def _plan(tmp_path: Path, workflow: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "stormproof.yaml").write_text(config_text())
    (tmp_path / "wf.yaml").write_text(workflow)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "stormproof", "plan", "wf.yaml", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_plan_puts_multi_node_tasks_on_on_demand_and_says_why(tmp_path: Path) -> None:
    proc = _plan(
        tmp_path,
        "name: w\ntasks:\n  - {id: wide, command: ['true'], nodes: 2}\n"
        "  - {id: one, command: ['true']}\n",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert any("multi-node parallel job" in n and "on-demand" in n for n in report["notes"])
    assert not any("no container runtime" in n for n in report["notes"])
    pools = {task: data["pool"] for task, data in report["tasks"].items()}
    assert pools == {"wide": "ondemand", "one": "spot"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "pools:\n  - {name: s, market: spot, vcpus: 2, memory: 4096,"
            " instance_types: [c5.large]}\n",
            "pools[0].instance_types: only used with executor: aws_batch",
        ),
        ("aws: {project: proj}\n", "aws: only used with executor: aws_batch"),
        ("executor: aws_batch\naws: {spot_strategy: cheapest}\n", "is not one of"),
        (
            "executor: aws_batch\naws: {project: Bad_Name}\n",
            "aws.project: 'Bad_Name' must be 2 to 32 lowercase letters, digits and '-'",
        ),
        (
            "executor: aws_batch\npools:\n  - {name: s, market: spot, instance_types: 3}\n",
            "expected a list of EC2 instance types",
        ),
    ],
)
def test_aws_settings_in_the_wrong_place_are_errors_with_their_line(
    tmp_path: Path, text: str, message: str
) -> None:
    from stormproof.config import load_config
    from stormproof.errors import ConfigError

    (tmp_path / "stormproof.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(None, tmp_path, {})
    assert message in str(caught.value) and "stormproof.yaml:" in str(caught.value)
