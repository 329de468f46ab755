"""``stormproof aws setup`` / ``teardown`` / ``doctor`` / ``policy`` through the real CLI,
against moto's server (an emulator: every AWS API here, S3 included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.aws._moto import Moto
from tests.aws.fixtures import PROJECT, config_text, moto_cli

BUCKET = "sptest-bucket"


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    (tmp_path / "stormproof.yaml").write_text(config_text(bucket=BUCKET))
    return tmp_path


def tagged(moto: Moto) -> dict[str, list[str]]:
    """Everything in moto that carries the project's tag or lives under its IAM path."""
    batch, iam, sqs, events, s3 = (moto.client(s) for s in ("batch", "iam", "sqs", "events", "s3"))
    mine = {"stormproof:project": PROJECT}

    def has(tags: dict[str, str] | None) -> bool:
        return all((tags or {}).get(k) == v for k, v in mine.items())

    found: dict[str, list[str]] = {
        "queues": [
            q["jobQueueName"]
            for q in batch.describe_job_queues()["jobQueues"]
            if has(q.get("tags"))
        ],
        "environments": [
            e["computeEnvironmentName"]
            for e in batch.describe_compute_environments()["computeEnvironments"]
            if has(e.get("tags"))
        ],
        "definitions": [
            d["jobDefinitionName"]
            for d in batch.describe_job_definitions(status="ACTIVE")["jobDefinitions"]
            if has(d.get("tags"))
        ],
        "roles": [r["RoleName"] for r in iam.list_roles(PathPrefix=f"/{PROJECT}/")["Roles"]],
        "profiles": [
            p["InstanceProfileName"]
            for p in iam.list_instance_profiles(PathPrefix=f"/{PROJECT}/")["InstanceProfiles"]
        ],
        "policies": [
            p["PolicyName"]
            for p in iam.list_policies(Scope="Local", PathPrefix=f"/{PROJECT}/")["Policies"]
        ],
        "sqs": [
            u
            for u in sqs.list_queues(QueueNamePrefix=PROJECT).get("QueueUrls", [])
            if has(sqs.list_queue_tags(QueueUrl=u).get("Tags"))
        ],
        "rules": [r["Name"] for r in events.list_rules(NamePrefix=PROJECT)["Rules"]],
        "buckets": [b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"] == BUCKET],
    }
    return {k: v for k, v in found.items() if v}


def test_setup_then_teardown_leaves_no_tagged_resource_and_nothing_else_is_touched(
    cwd: Path, moto: Moto
) -> None:
    moto.client("sqs").create_queue(QueueName=f"{PROJECT}-someone-elses")  # untagged
    moto.client("iam").create_role(RoleName=f"{PROJECT}-theirs", AssumeRolePolicyDocument="{}")
    setup = moto_cli(cwd, moto, "aws", "setup")
    assert setup.returncode == 0, setup.stdout + setup.stderr
    made = tagged(moto)
    assert made["queues"] == [f"{PROJECT}-spot", f"{PROJECT}-ondemand"]
    assert sorted(made["environments"]) == [f"{PROJECT}-ondemand-ce", f"{PROJECT}-spot-ce"]
    assert sorted(made["roles"]) == [f"{PROJECT}-{r}" for r in ("batch", "instance", "job")]
    assert made["policies"] == [f"{PROJECT}-orchestrator"] and made["buckets"] == [BUCKET]
    assert sorted(made["rules"]) == [f"{PROJECT}-rebalance", f"{PROJECT}-spot-warning"]
    spot = moto.client("batch").describe_compute_environments(
        computeEnvironments=[f"{PROJECT}-spot-ce"]
    )["computeEnvironments"][0]
    resources = spot["computeResources"]
    assert resources["type"] == "SPOT" and resources["maxvCpus"] == 16
    assert resources["allocationStrategy"] == "SPOT_PRICE_CAPACITY_OPTIMIZED"
    assert resources["instanceTypes"] == ["c5.large", "c5.xlarge"]
    again = moto_cli(cwd, moto, "aws", "setup")  # idempotent: what is there is kept
    assert again.returncode == 0, again.stderr
    assert tagged(moto) == made
    moto.client("s3").put_object(Bucket=BUCKET, Key="stormproof/status/r/a/1.json", Body=b"{}")

    dry = moto_cli(cwd, moto, "aws", "teardown", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "batch delete_job_queue" in dry.stdout and tagged(moto) == made  # removed nothing
    down = moto_cli(cwd, moto, "aws", "teardown")
    assert down.returncode == 0, down.stdout + down.stderr
    assert tagged(moto) == {}
    assert any("someone-elses" in u for u in moto.client("sqs").list_queues()["QueueUrls"])
    assert moto.client("iam").get_role(RoleName=f"{PROJECT}-theirs")


def test_setup_dry_run_prints_every_call_and_makes_none(cwd: Path, moto: Moto) -> None:
    dry = moto_cli(cwd, moto, "aws", "setup", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    calls = [ln.split(" {", 1)[0] for ln in lines if not ln.startswith("  (")]
    assert calls[:3] == ["s3 create_bucket", "s3 put_bucket_tagging", "iam create_role"]
    assert calls.count("batch create_compute_environment") == 2
    assert calls.count("batch create_job_queue") == 2
    assert "sqs create_queue" in calls and calls.count("events put_rule") == 2
    assert "  (then wait until compute environment sptest-spot-ce VALID)" in lines
    assert tagged(moto) == {}


def test_the_printed_policy_is_least_privilege_json(cwd: Path, moto: Moto) -> None:
    out = moto_cli(cwd, moto, "aws", "policy", "--account", "123456789012")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    actions = {a for s in doc["Statement"] for a in s["Action"]}
    assert "batch:SubmitJob" in actions and not any(a.endswith("*") for a in actions)
    submit = next(s for s in doc["Statement"] if "batch:SubmitJob" in s["Action"])
    assert f"arn:aws:batch:us-east-1:123456789012:job-queue/{PROJECT}-spot" in submit["Resource"]


def test_doctor_says_what_is_missing_then_that_it_is_ready(cwd: Path, moto: Moto) -> None:
    before = moto_cli(cwd, moto, "aws", "doctor")
    assert before.returncode == 1, before.stdout + before.stderr
    assert f"job queue '{PROJECT}-spot' does not exist; run `stormproof aws setup`" in before.stdout
    assert f"{BUCKET} does not exist" in before.stdout
    assert moto_cli(cwd, moto, "aws", "setup").returncode == 0
    after = moto_cli(cwd, moto, "aws", "doctor")
    assert "credentials" in after.stdout and "123456789012" in after.stdout
    assert "missing" not in after.stdout, after.stdout
    assert after.returncode == 0, after.stdout + after.stderr


def test_aws_commands_need_the_aws_executor(tmp_path: Path, moto: Moto) -> None:
    proc = moto_cli(tmp_path, moto, "aws", "setup", "--dry-run")
    assert proc.returncode == 2
    assert "set executor: aws_batch" in proc.stderr


def test_credentials_and_region_come_from_a_named_profile_in_the_shared_files(
    cwd: Path, moto: Moto
) -> None:
    (cwd / "credentials").write_text(
        "[lab]\naws_access_key_id = test\naws_secret_access_key = test\n"
    )
    (cwd / "config").write_text("[profile lab]\nregion = eu-west-1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.pop("STORMPROOF_HOME", None)
    env.update(
        AWS_ENDPOINT_URL=moto.endpoint,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_SHARED_CREDENTIALS_FILE=str(cwd / "credentials"),
        AWS_CONFIG_FILE=str(cwd / "config"),
        AWS_PROFILE="lab",
        XDG_CACHE_HOME=str(cwd / "cache"),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "stormproof", "aws", "doctor"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    lines = proc.stdout.splitlines()
    assert any("region" in ln and "eu-west-1" in ln for ln in lines), proc.stdout + proc.stderr
    assert any("credentials" in ln and "123456789012" in ln for ln in lines), proc.stdout
    assert "Traceback" not in proc.stderr


def test_capacity_aws_setup_makes_the_nodes_template_and_role_and_teardown_removes_all(
    tmp_path: Path, moto: Moto
) -> None:
    from tests.aws.fixtures import ec2_config_text

    (tmp_path / "stormproof.yaml").write_text(ec2_config_text(moto))
    ec2 = moto.client("ec2")
    before = moto_cli(tmp_path, moto, "aws", "doctor")
    assert before.returncode == 1 and f"{PROJECT}-nodes is missing" in before.stdout
    setup = moto_cli(tmp_path, moto, "aws", "setup")
    assert setup.returncode == 0, setup.stdout + setup.stderr
    made = tagged(moto)
    assert "queues" not in made and "environments" not in made  # no Batch for capacity: aws
    assert made["roles"] == [f"{PROJECT}-node"] and made["profiles"] == [f"{PROJECT}-node"]
    attached = moto.client("iam").list_attached_role_policies(RoleName=f"{PROJECT}-node")
    assert [p["PolicyName"] for p in attached["AttachedPolicies"]] == [
        "AmazonSSMManagedInstanceCore"
    ]
    (template,) = ec2.describe_launch_templates(
        Filters=[{"Name": "tag:stormproof:project", "Values": [PROJECT]}]
    )["LaunchTemplates"]
    assert template["LaunchTemplateName"] == f"{PROJECT}-nodes"
    data = ec2.describe_launch_template_versions(LaunchTemplateName=f"{PROJECT}-nodes")[
        "LaunchTemplateVersions"
    ][0]["LaunchTemplateData"]
    assert data["ImageId"] == "ami-12c6146b" and data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/{PROJECT}/{PROJECT}-node")
    ready = moto_cli(tmp_path, moto, "aws", "doctor")
    assert "missing" not in ready.stdout and ready.returncode == 0, ready.stdout + ready.stderr
    assert "AmazonSSMManagedInstanceCore" in ready.stdout
    # a run's instance left behind (its orchestrator gone for good): teardown finds it by tag
    ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "stormproof:project", "Value": PROJECT}]}
        ],
    )
    down = moto_cli(tmp_path, moto, "aws", "teardown")
    assert down.returncode == 0, down.stdout + down.stderr
    assert tagged(moto) == {}
    assert not ec2.describe_launch_templates(
        Filters=[{"Name": "tag:stormproof:project", "Values": [PROJECT]}]
    )["LaunchTemplates"]
    live = ec2.describe_instances(
        Filters=[
            {"Name": "tag:stormproof:project", "Values": [PROJECT]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
    )["Reservations"]
    assert live == []
