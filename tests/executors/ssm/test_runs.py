"""Whole runs with ``capacity: aws`` (executor ssm) through the real CLI: moto's server for
EC2, SSM and SQS (an emulator), a stand-in for the SSM agent of each instance that runs
every command for real as a local process (``tests/aws/_ssm_agent.py``: ``stormproof exec``
with that instance's IMDS stand-in), SeaweedFS as the real S3 for checkpoints and status."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.aws._moto import Moto
from tests.aws._ssm_agent import SsmAgents, wait_for
from tests.aws.fixtures import PROJECT, Project

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
COUNTER = EXAMPLES / "checkpointing" / "counter.py"


def tagged_instances(moto: Moto, states: tuple[str, ...] = ("pending", "running")) -> list[str]:
    """The project's EC2 instances in ``states`` (what teardown and the bill would see)."""
    found = moto.client("ec2").describe_instances(
        Filters=[
            {"Name": "tag:stormproof:project", "Values": [PROJECT]},
            {"Name": "instance-state-name", "Values": list(states)},
        ]
    )
    return [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]


def attempt_commands(agents: SsmAgents) -> list[str]:
    """The comments of the attempts' commands (not the kills'), one per SendCommand."""
    return [c["Comment"] for c in agents.commands() if not c["Comment"].startswith("stop")]


def ended(project: Project, run: str) -> list[tuple[str, Any]]:
    rows = project.history(run)
    return [(r["data"]["attempt_id"], r["data"].get("error")) for r in rows if r["kind"] == "AttemptEnded"]


def test_the_molecular_dynamics_example_runs_on_instances_the_core_launched(
    ec2_project: Project, agents: SsmAgents, moto: Moto
) -> None:
    project = ec2_project
    shutil.copytree(EXAMPLES, project.cwd / "examples")
    wf = project.cwd / "examples" / "molecular-dynamics.yaml"
    shorter = {
        "EQUILIBRATION_STEPS: 800": "EQUILIBRATION_STEPS: 300",
        "SIMULATION_TIME: 2000": "SIMULATION_TIME: 800",
    }  # fewer MD steps, same stages
    text = wf.read_text()
    for old, new in shorter.items():
        assert old in text
        text = text.replace(old, new)
    wf.write_text(text)
    run = project("run", "examples/molecular-dynamics.yaml", "--name", "md", "-q", timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = project.history("md")
    launched = [r["data"]["instance_id"] for r in rows if r["kind"] == "LaunchInstance"]
    assert len(launched) >= 3  # the pools' counts, launched by the core's decisions
    every = tagged_instances(moto, ("pending", "running", "shutting-down", "terminated"))
    assert len(every) == len(launched)  # one EC2 instance per launch decision, no more
    assert tagged_instances(moto) == []  # all terminated at the run's end
    stages = ["data-preprocessing", "equilibration", "production-run", "analysis"]
    comments = attempt_commands(agents)
    assert sorted(c.split("/")[-2] for c in comments) == sorted(stages)  # one command each
    started = {r["data"]["attempt_id"]: r["data"] for r in rows if r["kind"] == "AttemptStarted"}
    ec2_of = {c["Comment"]: c["InstanceIds"][0] for c in agents.commands()}
    for stage in stages:  # each ran on the EC2 instance of the core instance it was placed on
        instance, _, command_id = started[f"{stage}/1"]["handle"].partition(":")
        assert instance in ec2_of.values() and command_id
    assert any(r["kind"] == "CheckpointCommitted" for r in rows)  # uploaded by the agents
    data = project.cwd / ".stormproof" / "runs" / "md" / "data"
    assert (data / "results").is_dir() and (data / "production.log").exists()
