"""``executor: ssm``'s requests and its reading of how a command ended: pure functions, no AWS.

The scripts are also run for real by a shell here (the start line, the pid file and the
SIGTERM a kill sends), since what SSM's agent would run is only a script."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import time
from pathlib import Path

import pytest

from stormproof.aws.settings import AwsOptions
from stormproof.core.events import (
    AttemptExited,
    AttemptLost,
    AttemptPreempted,
    AttemptSubmitFailed,
)
from stormproof.executors.base import AttemptJob
from stormproof.executors.ssm import commands

OPTIONS = AwsOptions(project="p", bucket="b-1", region="eu-west-1", checkpoints="s3://b-1/ck")


def job(tmp_path: Path, command: list[str] | str, timeout_s: float | None = None) -> AttemptJob:
    return AttemptJob(
        run="r",
        attempt_id="t/2",
        task_id="t",
        number=2,
        command=command,
        env={
            "GREETING": "it's $HOME; `no`",
            "STORMPROOF_CHECKPOINT_DIR": "/orchestrator/only",
            "bad name": "x",
        },
        attempt_dir=tmp_path,
        instances=("spot-0",),
        timeout_s=timeout_s,
    )


def test_the_send_request_runs_the_agent_with_the_attempt_in_the_comment(tmp_path: Path) -> None:
    request = commands.send_request(job(tmp_path, ["echo", "a b"], 3600), "i-0abc", OPTIONS)
    assert request["DocumentName"] == "AWS-RunShellScript" and request["InstanceIds"] == ["i-0abc"]
    assert request["Comment"].startswith("stormproof ") and request["Comment"].endswith("r/t/2")
    assert request["Parameters"]["executionTimeout"] == ["3660"]  # the task's timeout + margin
    last = request["Parameters"]["commands"][-1]
    assert last.startswith("exec stormproof exec --run r --attempt t/2 --status ")
    assert "s3://b-1/stormproof/status/r/t/2.json" in last
    assert "--checkpoints s3://b-1/ck" in last  # the task keeps checkpoints: the agent uploads
    assert last.endswith("-- echo 'a b'")
    assert request["OutputS3BucketName"] == "b-1"
    no_timeout = commands.send_request(job(tmp_path, "true"), "i-0abc", OPTIONS)
    assert no_timeout["Parameters"]["executionTimeout"] == [str(commands.MAX_EXECUTION_S)]


def test_the_script_exports_the_environment_quoted_and_the_kill_reaches_only_its_agent(
    tmp_path: Path,
) -> None:
    """The script, run by a real shell with ``stormproof`` replaced by a stand-in that prints
    its environment and sleeps; the signal request's script then stops it with SIGTERM."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "stormproof"
    fake.write_text(
        "#!/bin/sh\n"
        'printf "%s|%s|%s\\n" "$GREETING" "$AWS_REGION" "$PWD"\n'
        "trap 'kill $!; exit 143' TERM\n"
        "sleep 30 & wait\n"
    )
    fake.chmod(0o755)
    the_job = job(tmp_path, ["true"])
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "TMPDIR": str(tmp_path / "tmp")}
    script = "\n".join(commands.send_request(the_job, "i-1", OPTIONS)["Parameters"]["commands"])
    assert "STORMPROOF_CHECKPOINT_DIR" not in script and "bad name" not in script
    proc = subprocess.Popen(["/bin/sh", "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    greeting, region, cwd = line.split("|")
    assert greeting == "it's $HOME; `no`" and region == "eu-west-1"
    assert cwd.startswith(str(tmp_path / "tmp" / "stormproof")) and cwd.endswith("/work")
    stop = "\n".join(commands.signal_request(the_job, "i-1")["Parameters"]["commands"])
    other = dataclasses.replace(the_job, attempt_id="t/3", number=3)
    nothing = "\n".join(commands.signal_request(other, "i-1")["Parameters"]["commands"])
    assert subprocess.run(["/bin/sh", "-c", nothing], env=env).returncode == 0  # no such agent
    time.sleep(0.2)
    assert proc.poll() is None
    assert subprocess.run(["/bin/sh", "-c", stop], env=env).returncode == 0
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM  # the agent (here: its stand-in) got it
    proc.stdout.close()


ENDED = {"state": "ended", "exit_code": 3, "notice": None}


@pytest.mark.parametrize(
    ("status", "invocation", "agent", "killed", "expected"),
    [
        ("Failed", None, ENDED, False, AttemptExited(1.0, "t/1", 3)),
        ("InProgress", None, {**ENDED, "exit_code": 143}, True, AttemptExited(1.0, "t/1", 143)),
        ("Failed", None, {**ENDED, "notice": "spot"}, False, AttemptPreempted),
        ("Success", None, None, False, AttemptExited(1.0, "t/1", 0)),
        ("Cancelled", None, None, True, AttemptExited(1.0, "t/1", 143)),
        ("Cancelled", None, None, False, AttemptLost),
        ("TimedOut", {"StatusDetails": "Execution Timed Out"}, None, False, "timed_out"),
        ("TimedOut", {"StatusDetails": "Delivery Timed Out"}, None, False, AttemptLost),
        (
            "Failed",
            {"StatusDetails": "Undeliverable", "ResponseCode": -1},
            None,
            False,
            AttemptLost,
        ),
        (
            "Failed",
            {"StatusDetails": "Failed", "ResponseCode": 127},
            None,
            False,
            AttemptSubmitFailed,
        ),
        (
            "Failed",
            {"StatusDetails": "Failed", "ResponseCode": 2},
            None,
            False,
            AttemptExited(1.0, "t/1", 2),
        ),
    ],
)
def test_how_a_command_ended_agent_status_first_ssm_second(
    status: str,
    invocation: dict[str, object] | None,
    agent: dict[str, object] | None,
    killed: bool,
    expected: object,
) -> None:
    event = commands.settle(1.0, "t/1", "i-1", {"Status": status}, invocation, agent, killed=killed)
    if expected == "timed_out":
        assert isinstance(event, AttemptExited) and event.timed_out
    elif isinstance(expected, type):
        assert isinstance(event, expected), event
        if isinstance(event, AttemptLost) and "SSM could not" in event.reason:
            assert "i-1" in event.reason and "AmazonSSMManagedInstanceCore" in event.reason
    else:
        assert event == expected
