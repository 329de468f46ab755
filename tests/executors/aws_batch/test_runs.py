"""Whole runs on executor aws_batch through the real CLI: moto's server for the AWS APIs
(an emulator), the emulated Batch hosts running each job's ``stormproof exec`` as a real
process, SeaweedFS as the real S3 for checkpoints and exit status."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.aws._moto import BatchHosts, batch_jobs
from tests.aws.fixtures import Project

pytestmark = pytest.mark.slow


EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_the_molecular_dynamics_example_runs_on_batch_end_to_end(
    project: Project, hosts: BatchHosts
) -> None:
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
    jobs = {j.job_name: j for j in batch_jobs().values()}
    stages = ["data-preprocessing", "equilibration", "production-run", "analysis"]
    assert sorted(n.split("--")[1] for n in jobs) == sorted(stages)  # one job per stage
    for job in jobs.values():
        command = job._container_details()["command"]
        assert command[:2] == ["stormproof", "exec"] and job.status == "SUCCEEDED"
        env = {e["name"]: e["value"] for e in job._container_details()["environment"]}
        assert env["STORMPROOF_RUN"] == "md" and "STORMPROOF_CHECKPOINT_DIR" not in env
    rows = project.history("md")
    started = {r["data"]["attempt_id"]: r["data"] for r in rows if r["kind"] == "AttemptStarted"}
    for stage in stages:  # the job's name and id are in the log, and the EC2 host it ran on
        name, _, job_id = started[f"{stage}/1"]["handle"].partition(":")
        assert jobs[name].job_id == job_id and started[f"{stage}/1"]["nodes"][0].startswith("i-")
    assert any(r["kind"] == "CheckpointCommitted" for r in rows)  # uploaded by the agents
    data = project.cwd / ".stormproof" / "runs" / "md" / "data"
    assert (data / "results").is_dir() and (data / "production.log").exists()


COUNTER = Path(__file__).resolve().parents[3] / "examples" / "checkpointing" / "counter.py"


def counter_workflow(project: Project, count_to: int = 40, every: int = 5) -> None:
    project.cwd.joinpath("wf.yaml").write_text(
        "name: counter\n"
        "tasks:\n"
        f"  - id: count\n"
        f"    command: [{sys.executable}, {COUNTER}]\n"
        f"    environment: {{COUNT_TO: {count_to}, CHECKPOINT_EVERY: {every}, "
        "STEP_SECONDS: 0.1}\n"
        "    checkpoint_enabled: true\n"
        "    timeout: 5m\n"
    )


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def output_of(hosts: BatchHosts, job_name_part: str) -> str:
    texts = []
    for job_id, job in batch_jobs().items():
        if job_name_part in job.job_name:
            log = hosts.workdir / job_id / "output.log"
            texts.append(log.read_text() if log.exists() else "")
    return "\n".join(texts)


def test_a_spot_reclaim_mid_job_uploads_the_checkpoint_and_the_retry_restores_it(
    project: Project, hosts: BatchHosts
) -> None:
    counter_workflow(project)
    proc = project.start("run", "wf.yaml", "--name", "c", "-q")
    wait_for(lambda: "checkpoint 1 at step" in output_of(hosts, "count--1"), 60, "a checkpoint")
    host = wait_for(
        lambda: hosts.running_names() and hosts.host_of(hosts.running_names()[0]), 10, "the host"
    )
    hosts.reclaim(host, notice_s=20.0)  # the agent stops the counter, which commits at once
    assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    first = output_of(hosts, "count--1")
    second = output_of(hosts, "count--2")
    stopped_at = int(first.rsplit("checkpoint ", 1)[1].split(" at step ")[1].split()[0])
    assert f"resumed from step {stopped_at}" in second
    assert "done: counted to 40" in second
    rows = project.history("c")
    ended = [r["data"] for r in rows if r["kind"] == "AttemptEnded"]
    assert [(e["attempt_id"], e.get("error")) for e in ended] == [
        ("count/1", "Capacity.Interrupted"),
        ("count/2", None),
    ]
    assert any(r["kind"] == "AttemptPreempted" for r in rows)
    committed = [
        r["data"]["seq"]
        for r in rows
        if r["kind"] == "CheckpointCommitted" and r["data"]["attempt_id"] == "count/1"
    ]
    restored = [r["data"]["seq"] for r in rows if r["kind"] == "CheckpointRestored"]
    assert restored == [max(committed)]  # the one the agent uploaded within the notice
    assert not [r for r in rows if r["kind"] == "CheckpointCorrupt"]


def test_kill_9_of_the_orchestrator_then_resume_adopts_every_batch_job_and_submits_none_twice(
    project: Project, hosts: BatchHosts
) -> None:
    project.cwd.joinpath("wf.yaml").write_text(
        "name: fan\n"
        "tasks:\n"
        "  - {id: a, command: [sleep, '1']}\n"
        "  - {id: b, command: [sleep, '3']}\n"
        "  - {id: c, command: [sleep, '3']}\n"
        "  - {id: d, command: ['true'], depends_on: [a, b, c]}\n"
    )
    proc = project.start("run", "wf.yaml", "--name", "fan", "-q")
    wait_for(lambda: len(hosts.running_names()) == 3, 60, "three jobs running")
    proc.kill()  # kill -9: no goodbye in the log
    proc.wait()
    wait_for(lambda: len(hosts.running_names()) < 3, 30, "a job ending while no one watches")
    resumed = project("resume", "fan", "-q")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    submitted = sorted(j.job_name.split("--")[1] for j in batch_jobs().values())
    assert submitted == ["a", "b", "c", "d"]  # each attempt once, none submitted again
    rows = project.history("fan")
    ended = sorted(r["data"]["attempt_id"] for r in rows if r["kind"] == "AttemptEnded")
    assert ended == ["a/1", "b/1", "c/1", "d/1"]


def test_an_eventbridge_warning_through_sqs_interrupts_the_attempts_on_that_host(
    project: Project, hosts: BatchHosts, moto: Any
) -> None:
    from tests.aws.fixtures import PROJECT
    from tests.aws.test_interruptions import recorded

    project.cwd.joinpath("wf.yaml").write_text(
        "name: warned\n"
        "tasks:\n"
        "  - id: a\n"
        "    command: sh -c 'test -e $STORMPROOF_DATA_DIR/once || "
        "{ touch $STORMPROOF_DATA_DIR/once; sleep 60; }'\n"
    )
    proc = project.start("run", "wf.yaml", "--name", "warned", "-q")
    host = wait_for(
        lambda: hosts.running_names() and hosts.host_of(hosts.running_names()[0]),
        60,
        "the job running",
    )
    once = project.cwd / ".stormproof" / "runs" / "warned" / "data" / "once"
    wait_for(once.exists, 30, "the command sleeping")
    sqs = moto.client("sqs")
    url = sqs.get_queue_url(QueueName=f"{PROJECT}-interruptions")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=recorded("spot-warning.json", host, time.time()))
    assert proc.wait(timeout=90) == 0, proc.stderr.read() if proc.stderr else ""
    rows = project.history("warned")
    (notice,) = [r["data"] for r in rows if r["kind"] == "InterruptionNotice"]
    assert notice["instance_id"] == host and notice["source"] == "eventbridge:spot-warning"
    ended = [r["data"] for r in rows if r["kind"] == "AttemptEnded"]
    assert [(e["attempt_id"], e.get("error")) for e in ended] == [
        ("a/1", "Capacity.Interrupted"),
        ("a/2", None),
    ]


def test_cancel_terminates_every_job_of_the_run(project: Project, hosts: BatchHosts) -> None:
    project.cwd.joinpath("wf.yaml").write_text(
        "name: long\n"
        "tasks:\n"
        "  - {id: a, command: [sleep, '60']}\n"
        "  - {id: b, command: [sleep, '60']}\n"
        "  - {id: c, command: ['true'], depends_on: [a, b]}\n"
    )
    started = project("run", "wf.yaml", "--name", "long", "--detach")
    assert started.returncode == 0, started.stderr
    wait_for(lambda: len(hosts.running_names()) == 2, 60, "two jobs running")
    cancel = project("cancel", "long")
    assert cancel.returncode == 1, cancel.stdout + cancel.stderr  # 1: the run was cancelled
    wait_for(lambda: not hosts.running_names(), 30, "every job gone")
    jobs = list(batch_jobs().values())
    assert sorted(j.job_name.split("--")[1] for j in jobs) == ["a", "b"]
    assert all(
        j.status == "FAILED" and j.job_stopped_reason.startswith("stormproof:") for j in jobs
    )
