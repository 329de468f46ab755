"""``stormproof logs`` of attempts that ran on EC2 instances through SSM, through the real CLI:
the agent (``stormproof exec``, run by the SSM agent stand-in) uploads the output to the real
S3 server (SeaweedFS); ``logs`` and ``logs -f`` read it there. Each error is caused for real:
an attempt that has uploaded nothing yet, no credentials, an identity that may not read, a
bucket that is gone, objects that are not there (an attempt from before the agent kept them)."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import IO, Any

import boto3
import pytest

from tests.aws._moto import Moto
from tests.aws._ssm_agent import wait_for
from tests.aws.fixtures import WRITER_KEY, WRITER_SECRET, Project, ec2_config_text
from tests.checkpoints._seaweed import BUCKET, KEY, SECRET, Seaweed

pytestmark = pytest.mark.slow


def status_of(run: str) -> str:
    """Where the agent puts the status of ``run``'s talk/1, and its logs beside it (the
    shared S3 server outlives the test: each test has its own run name)."""
    return f"s3://{BUCKET}/stormproof/status/{run}/talk/1"


def talk(project: Project, moto: Moto, log_upload: str, go: Path) -> None:
    """A run whose one task prints to both streams, waits for ``go``, and prints again."""
    config = ec2_config_text(moto).replace(
        "  prices: false\n", f"  prices: false\n  log_upload: {log_upload}\n"
    )
    project.write("stormproof.yaml", config)
    project.write(
        "wf.yaml",
        "name: talk\n"
        "tasks:\n"
        "  - id: talk\n"
        f'    command: "echo one; echo oops >&2; while [ ! -f {go} ]; do sleep 0.1; done; '
        'echo two"\n'
        "    timeout: 5m\n",
    )


def as_user(project: Project, **env: str) -> Project:
    """The same project, run by someone whose environment differs by ``env`` ("": unset)."""
    environ = {k: v for k, v in project.environ.items() if k not in env or env[k]}
    environ.update({k: v for k, v in env.items() if v})
    return Project(project.cwd, project.procs, environ=environ)


def one_line_error(proc: Any) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return str(lines[0])


def lines_of(pipe: IO[str] | None) -> queue.Queue[str | None]:
    """The lines a running command writes to ``pipe`` as they come (``None`` at its end), read
    by a thread: a line is never stuck in a buffer that ``select`` does not see."""
    assert pipe is not None
    found: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in pipe:
            found.put(line.rstrip("\n"))
        found.put(None)

    threading.Thread(target=read, daemon=True).start()
    return found


def started(project: Project, run: str) -> bool:
    return any(r["kind"] == "AttemptStarted" for r in project.history(run))


def test_logs_follows_an_ssm_attempt_until_it_ends_then_prints_it_from_s3(
    ec2_project: Project, moto: Moto, tmp_path: Path
) -> None:
    project, go = ec2_project, tmp_path / "go"
    talk(project, moto, "1s", go)
    run = project.start("run", "wf.yaml", "--name", "follow", "-q")
    wait_for(lambda: started(project, "follow"), 60, "the attempt to start")
    follow = project.start("logs", "follow", "talk", "-f")
    lines = lines_of(follow.stdout)
    seen = [lines.get(timeout=60)]
    while "one" not in seen:
        seen.append(lines.get(timeout=60))
    assert seen[0] == f"── talk/1 ({status_of('follow')}.{{stdout,stderr}}.log) ──"
    assert "two" not in seen and run.poll() is None  # it is following, not replaying the end
    go.touch()
    assert follow.wait(timeout=120) == 0, follow.stderr.read() if follow.stderr else ""
    while seen[-1] is not None:
        seen.append(lines.get(timeout=10))
    assert "two" in seen and "oops" in seen
    assert run.wait(timeout=120) == 0

    both = project("logs", "follow", "talk")
    assert both.returncode == 0, both.stderr
    assert both.stdout == (
        f"── stdout of talk/1 ({status_of('follow')}.stdout.log) ──\none\ntwo\n"
        f"── stderr of talk/1 ({status_of('follow')}.stderr.log) ──\noops\n"
    )
    only = project("logs", "follow", "talk", "--stream", "stderr", "--attempt", "1")
    assert only.stdout == "oops\n"
    assert "has no attempt 2; attempts: 1" in one_line_error(
        project("logs", "follow", "talk", "--attempt", "2")
    )


def test_each_way_logs_cannot_read_an_aws_attempt_is_one_line_naming_the_fix(
    ec2_project: Project, moto: Moto, seaweed: Seaweed, locked_seaweed: Seaweed, tmp_path: Path
) -> None:
    project, go = ec2_project, tmp_path / "go"
    talk(project, moto, "10m", go)
    run = project.start("run", "wf.yaml", "--name", "errors", "-q")
    wait_for(lambda: started(project, "errors"), 60, "the attempt to start")
    early = one_line_error(project("logs", "errors", "talk"))
    assert f"talk/1 has uploaded no output yet ({status_of('errors')}.stdout.log)" in early
    assert "the agent uploads every 600s (aws.log_upload); try again or use -f" in early

    nobody = as_user(
        project,
        AWS_ACCESS_KEY_ID="",
        AWS_SECRET_ACCESS_KEY="",
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
    )
    assert "no AWS credentials found" in one_line_error(nobody("logs", "errors", "talk"))

    go.touch()
    assert run.wait(timeout=120) == 0
    done = project("logs", "errors", "talk", "--stream", "stdout")
    assert done.stdout == "one\ntwo\n"  # uploaded at the end, long before 10 minutes

    writer = as_user(
        project,
        AWS_ENDPOINT_URL_S3=locked_seaweed.endpoint,
        AWS_ACCESS_KEY_ID=WRITER_KEY,
        AWS_SECRET_ACCESS_KEY=WRITER_SECRET,
    )
    denied = one_line_error(writer("logs", "errors", "talk"))
    assert denied.startswith(
        f"error: not allowed to read {status_of('errors')}.stdout.log (AccessDenied)"
    )
    assert f"s3:GetObject and s3:ListBucket on bucket {BUCKET!r}" in denied

    s3_of(locked_seaweed).delete_bucket(Bucket=BUCKET)
    elsewhere = as_user(project, AWS_ENDPOINT_URL_S3=locked_seaweed.endpoint)
    gone = one_line_error(elsewhere("logs", "errors", "talk"))
    assert f"bucket {BUCKET!r} does not exist, so the output of talk/1" in gone

    s3 = s3_of(seaweed)  # as an attempt from before the agent kept its output
    for stream in ("stdout", "stderr"):
        s3.delete_object(Bucket=BUCKET, Key=f"stormproof/status/errors/talk/1.{stream}.log")
    old = one_line_error(project("logs", "errors", "talk"))
    assert "talk/1 left no output in S3" in old and "ran before stormproof's agent kept" in old


def s3_of(server: Seaweed) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
