"""stormproof.yaml's ``capacity:``: ``capacity: aws`` (EC2 instances stormproof launches, run
through ``executor: ssm``), and every combination that does nothing or cannot work: one
line each, naming the file, the line, the place and the fix; ``stormproof plan`` exits 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stormproof.config import load_config
from stormproof.errors import ConfigError

GOOD = """\
capacity: aws
checkpoints: s3://my-lab/ckpt
aws:
  ami: ami-0abcdef1234567890
  subnets: [subnet-0a1, subnet-0b2]
  prices: false
pools:
  - {name: spot, market: spot, instance_types: {c5.large: 1, c5.xlarge: 2}, count: 2}
  - {name: od, market: on_demand, instance_types: [m5.large], subnets: [subnet-0c3]}
"""


def error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    (tmp_path / "stormproof.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(None, tmp_path, environ or {})
    return str(info.value)


def test_capacity_aws_runs_through_ssm_and_records_what_the_fleet_needs(tmp_path: Path) -> None:
    (tmp_path / "stormproof.yaml").write_text(GOOD)
    config = load_config(None, tmp_path, {})
    assert (config.capacity, config.executor) == ("aws", "ssm")
    options = config.executor_options()
    assert options["capacity"] == "aws" and options["ami"] == "ami-0abcdef1234567890"
    assert options["bucket"] == "my-lab"  # from the s3:// checkpoints
    assert options["pools"]["spot"]["instance_types"] == {"c5.large": 1.0, "c5.xlarge": 2.0}
    assert options["pools"]["od"]["subnets"] == ["subnet-0c3"]
    assert load_config(None, tmp_path.parent, {}).capacity == "local"  # no file: local


def test_an_instance_is_the_smallest_instance_type_unless_the_pool_says(tmp_path: Path) -> None:
    from stormproof.executors.ssm import SsmExecutor

    (tmp_path / "stormproof.yaml").write_text(GOOD.replace("count: 2}", "count: 2, vcpus: 1}"))
    config = load_config(None, tmp_path, {})
    options = config.executor_options()
    pools = config.for_executor(
        "ssm", False, lambda p: SsmExecutor.describe_pools(p, options)
    ).pool_defs()
    assert [(p.capacity.vcpus, p.count, p.delegated) for p in pools] == [
        (1.0, 2, False),  # its own vcpus; memory from c5.large, the smaller type
        (2.0, 1, False),
    ]
    assert pools[0].capacity.memory_mib > 0 and pools[0].instance_type == "c5.large,c5.xlarge"


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        (
            GOOD + "executor: slurm\n",
            "stormproof.yaml:1: capacity",
            "which executor 'slurm' cannot reach; remove executor: slurm",
        ),
        (
            GOOD.replace("instance_types: [m5.large], ", ""),
            "stormproof.yaml:9: pools[1]",
            "pool 'od' has no instance_types",
        ),
        (
            GOOD.replace("  subnets: [subnet-0a1, subnet-0b2]\n", ""),
            "stormproof.yaml:3: aws",
            "give aws.subnets",
        ),
        (
            GOOD.replace("  ami: ami-0abcdef1234567890\n", ""),
            "stormproof.yaml:3: aws",
            "aws.ami",
        ),
        (
            GOOD.replace("aws:\n", "aws:\n  launch_template: mine\n"),
            "stormproof.yaml:4: aws.launch_template",
            "not both",
        ),
        (
            GOOD.replace("checkpoints: s3://my-lab/ckpt\n", ""),
            "stormproof.yaml:2: aws",
            "S3 bucket for the attempts' exit status",
        ),
        (
            GOOD.replace("s3://my-lab/ckpt", "./ckpt").replace("aws:\n", "aws:\n  bucket: b-1\n"),
            "stormproof.yaml:2: checkpoints",
            "must go to S3",
        ),
        (
            GOOD.replace("aws:\n", "aws:\n  image: x/y:1\n"),
            "stormproof.yaml:4: aws.image",
            "does nothing with capacity: aws",
        ),
        (
            GOOD.replace("count: 2}", "count: 2, max_vcpus: 8}"),
            "stormproof.yaml:8: pools[0].max_vcpus",
            "does nothing with capacity: aws",
        ),
        (
            "capacity: aws\naws: {ami: ami-0abcdef1234567890, subnets: [s], bucket: b-1}\n",
            "stormproof.yaml:1: capacity",
            "needs pools",
        ),
        (
            "capacity: aws\npools: [{name: s, market: spot, instance_types: [c5.large]}]\n",
            "stormproof.yaml:1: capacity",
            "needs an aws section",
        ),
        (
            "executor: ssm\n",
            "stormproof.yaml:1: executor",
            "set capacity: aws",
        ),
        (
            "aws: {ami: ami-0abcdef1234567890}\nexecutor: aws_batch\n",
            "stormproof.yaml:1: aws.ami",
            "only used with capacity: aws",
        ),
        (
            "executor: aws_batch\npools: [{name: s, market: spot, instance_types: [c5.large], "
            "subnets: [subnet-1]}]\n",
            "stormproof.yaml:2: pools[0].subnets",
            "only used with capacity: aws",
        ),
        (
            GOOD.replace("capacity: aws", "capacity: gcp"),
            "stormproof.yaml:1: capacity",
            "'local' or 'aws'",
        ),
    ],
)
def test_each_combination_that_cannot_work_is_one_clear_line(
    tmp_path: Path, text: str, where: str, says: str
) -> None:
    message = error(tmp_path, text)
    assert where in message and says in message, message


def test_the_environment_s_executor_is_checked_against_capacity_aws(tmp_path: Path) -> None:
    message = error(tmp_path, GOOD, {"STORMPROOF_EXECUTOR": "local"})
    assert "executor 'local' cannot reach" in message


def test_plan_refuses_bad_capacity_config_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "stormproof.yaml").write_text(GOOD + "executor: dask\n")
    (tmp_path / "wf.yaml").write_text("name: w\ntasks: [{id: a, command: 'true'}]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "stormproof", "plan", "wf.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "stormproof.yaml:1: capacity: aws launches EC2 instances" in proc.stderr
    assert not (tmp_path / ".stormproof").exists()  # nothing made, nothing lost


def test_aws_log_upload_is_recorded_for_the_agents_and_a_bad_value_is_one_line(
    tmp_path: Path,
) -> None:
    (tmp_path / "stormproof.yaml").write_text(GOOD)
    assert load_config(None, tmp_path, {}).executor_options()["log_upload_s"] == 30.0
    (tmp_path / "stormproof.yaml").write_text(GOOD.replace("aws:\n", "aws:\n  log_upload: 2m\n"))
    assert load_config(None, tmp_path, {}).executor_options()["log_upload_s"] == 120.0
    for bad, says in [
        ("0", "0s is too often: give at least 1 second, like 30s"),
        ("0.5", "0.5s is too often"),
        ("soon", "expected a duration like 600, '10m' or '2h30m', got 'soon'"),
        ("true", "expected a duration"),
    ]:
        text = GOOD.replace("aws:\n", f"aws:\n  log_upload: {bad}\n")
        assert f"stormproof.yaml:4: aws.log_upload: {says}" in error(tmp_path, text), bad
