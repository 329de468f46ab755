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
    return [
        (r["data"]["attempt_id"], r["data"].get("error"))
        for r in rows
        if r["kind"] == "AttemptEnded"
    ]


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


def counter_workflow(project: Project, count_to: int = 40, every: int = 5) -> None:
    project.cwd.joinpath("wf.yaml").write_text(
        "name: counter\n"
        "tasks:\n"
        "  - id: count\n"
        f"    command: [{sys.executable}, {COUNTER}]\n"
        f"    environment: {{COUNT_TO: {count_to}, CHECKPOINT_EVERY: {every}, "
        "STEP_SECONDS: 0.1}\n"
        "    checkpoint_enabled: true\n"
        "    timeout: 5m\n"
    )


@pytest.mark.parametrize("warning", ["imds", "eventbridge"])
def test_a_spot_notice_mid_attempt_uploads_the_checkpoint_and_the_retry_elsewhere_restores_it(
    ec2_project: Project, agents: SsmAgents, moto: Moto, imds: Any, warning: str
) -> None:
    project = ec2_project
    counter_workflow(project)
    proc = project.start("run", "wf.yaml", "--name", "c", "-q")
    wait_for(lambda: "checkpoint 1 at step" in agents.output("c/count/1"), 60, "a checkpoint")
    first = agents.instance_of("c/count/1")
    if warning == "imds":  # the instance's own metadata: the agent there sees it
        imds.notice(first, 20.0)
    else:  # EventBridge's warning, through the project's SQS queue to the orchestrator
        from tests.aws.test_interruptions import recorded

        sqs = moto.client("sqs")
        url = sqs.get_queue_url(QueueName=f"{PROJECT}-interruptions")["QueueUrl"]
        sqs.send_message(
            QueueUrl=url, MessageBody=recorded("spot-warning.json", first, time.time())
        )
    assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    out1, out2 = agents.output("c/count/1"), agents.output("c/count/2")
    stopped_at = int(out1.rsplit("checkpoint ", 1)[1].split(" at step ")[1].split()[0])
    assert f"resumed from step {stopped_at}" in out2 and "done: counted to 40" in out2
    second = next(i for c, i in agents.started if c == _command_id(agents, "c/count/2"))
    assert second != first  # not on the instance that got the notice
    rows = project.history("c")
    assert ended(project, "c") == [("count/1", "Capacity.Interrupted"), ("count/2", None)]
    (notice,) = [r["data"] for r in rows if r["kind"] == "InterruptionNotice"]
    assert notice["source"] == ("imds" if warning == "imds" else "eventbridge:spot-warning")
    assert 0 < notice["notice_s"] <= (20 if warning == "imds" else 120)  # drained until reclaimed
    committed = [
        r["data"]["seq"]
        for r in rows
        if r["kind"] == "CheckpointCommitted" and r["data"]["attempt_id"] == "count/1"
    ]
    restored = [r["data"]["seq"] for r in rows if r["kind"] == "CheckpointRestored"]
    assert restored == [max(committed)]  # the one the agent uploaded within the notice
    assert tagged_instances(moto) == []


def _command_id(agents: SsmAgents, comment_part: str) -> str:
    return next(
        str(c["CommandId"])
        for c in agents.commands()
        if comment_part in c["Comment"] and not c["Comment"].startswith("stop")
    )


def test_an_instance_terminated_behind_the_core_s_back_is_node_lost_and_retried_elsewhere(
    ec2_project: Project, agents: SsmAgents, moto: Moto
) -> None:
    project = ec2_project
    project.cwd.joinpath("wf.yaml").write_text(
        "name: lost\n"
        "tasks:\n"
        "  - id: a\n"
        "    command: sh -c 'test -e $STORMPROOF_DATA_DIR/once || "
        "{ touch $STORMPROOF_DATA_DIR/once; sleep 60; }'\n"
    )
    proc = project.start("run", "wf.yaml", "--name", "lost", "-q")
    once = project.cwd / ".stormproof" / "runs" / "lost" / "data" / "once"
    wait_for(once.exists, 60, "the command sleeping")
    first = agents.instance_of("lost/a/1")
    moto.client("ec2").terminate_instances(InstanceIds=[first])  # nobody asked the core
    assert proc.wait(timeout=90) == 0, proc.stderr.read() if proc.stderr else ""
    assert ended(project, "lost") == [("a/1", "Node.Lost"), ("a/2", None)]
    second = next(i for c, i in agents.started if c == _command_id(agents, "lost/a/2"))
    assert second != first
    rows = project.history("lost")
    (lost,) = [r["data"] for r in rows if r["kind"] == "InstanceLost"]
    assert first in lost["reason"]
    assert tagged_instances(moto) == []


def test_kill_9_then_resume_adopts_the_instances_and_the_commands_and_sends_none_twice(
    ec2_project: Project, agents: SsmAgents, moto: Moto
) -> None:
    project = ec2_project
    project.cwd.joinpath("wf.yaml").write_text(
        "name: fan\n"
        "tasks:\n"
        "  - {id: a, command: [sleep, '1']}\n"
        "  - {id: b, command: [sleep, '4']}\n"
        "  - {id: c, command: [sleep, '4']}\n"
        "  - {id: d, command: ['true'], depends_on: [a, b, c]}\n"
    )
    proc = project.start("run", "wf.yaml", "--name", "fan", "-q")
    wait_for(lambda: len(agents.running) == 3, 60, "three commands running")
    before = set(tagged_instances(moto))
    proc.kill()  # kill -9: no goodbye in the log, the instances and commands keep going
    proc.wait()
    wait_for(lambda: len(agents.running) < 3, 30, "a command ending while no one watches")
    resumed = project("resume", "fan", "-q")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    comments = attempt_commands(agents)
    assert sorted(c.split("/")[-2] for c in comments) == ["a", "b", "c", "d"]  # none twice
    assert len(set(comments)) == len(comments)
    rows = project.history("fan")
    launched = [r["data"]["instance_id"] for r in rows if r["kind"] == "LaunchInstance"]
    every = tagged_instances(moto, ("pending", "running", "shutting-down", "terminated"))
    assert len(every) == len(launched) and before <= set(every)  # adopted, none launched twice
    assert sorted(a for a, _ in ended(project, "fan")) == ["a/1", "b/1", "c/1", "d/1"]
    assert tagged_instances(moto) == []


def test_cancel_stops_every_command_and_terminates_every_instance(
    ec2_project: Project, agents: SsmAgents, moto: Moto
) -> None:
    project = ec2_project
    project.cwd.joinpath("wf.yaml").write_text(
        "name: long\n"
        "tasks:\n"
        "  - {id: a, command: [sleep, '60']}\n"
        "  - {id: b, command: [sleep, '60']}\n"
        "  - {id: c, command: ['true'], depends_on: [a, b]}\n"
    )
    started = project("run", "wf.yaml", "--name", "long", "--detach")
    assert started.returncode == 0, started.stderr
    wait_for(lambda: len(agents.running) == 2, 60, "two commands running")
    cancel = project("cancel", "long")
    assert cancel.returncode == 1, cancel.stdout + cancel.stderr  # 1: the run was cancelled
    wait_for(lambda: not agents.running, 30, "every command ended")
    assert sorted(c.split("/")[-2] for c in attempt_commands(agents)) == ["a", "b"]
    stops = [c for c in agents.commands() if c["Comment"].startswith("stop")]
    assert len(stops) == 2  # each attempt's agent was told to stop
    statuses = [c["Status"] for c in agents.commands() if not c["Comment"].startswith("stop")]
    assert statuses == ["Failed", "Failed"]  # SIGTERM: the agent exited 143 for its command
    wait_for(lambda: tagged_instances(moto) == [], 30, "every instance terminated")
