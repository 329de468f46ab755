"""``stormproof exec`` as a real process: the IMDSv2 stand-in on 127.0.0.1 for notices, a real
checkpointing command (examples/checkpointing/counter.py), the real S3 server (SeaweedFS)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import s3fs

from stormproof.checkpoints.open import open_checkpoint_store
from tests.checkpoints._seaweed import BUCKET, Seaweed

from ._imds import ImdsStandIn

pytestmark = pytest.mark.slow
COUNTER = Path(__file__).resolve().parents[2] / "examples" / "checkpointing" / "counter.py"
HOST = "i-0123456789abcdef0"


def start_agent(
    seaweed: Seaweed,
    imds: ImdsStandIn,
    tmp_path: Path,
    run: str,
    attempt: str,
    count_to: int = 200,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        seaweed.env(),
        AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.endpoint(HOST),
        COUNT_TO=str(count_to),
        CHECKPOINT_EVERY="10",
        STEP_SECONDS="0.05",
        STORMPROOF_CHECKPOINT_SIGNAL="SIGUSR1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    cmd = [
        sys.executable,
        "-m",
        "stormproof",
        "exec",
        "--run",
        run,
        "--attempt",
        attempt,
        "--status",
        f"s3://{BUCKET}/status/{run}/{attempt}.json",
        "--checkpoints",
        f"s3://{BUCKET}/agent-ckpt",
        "--poll",
        "0.2s",
        "--",
        sys.executable,
        str(COUNTER),
    ]
    return subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def status(seaweed: Seaweed, run: str, attempt: str) -> dict[str, Any]:
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **seaweed.options())
    try:
        data: dict[str, Any] = json.loads(fs.cat(f"{BUCKET}/status/{run}/{attempt}.json"))
    except FileNotFoundError:
        return {}
    return data


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_a_spot_notice_stops_the_command_uploads_its_checkpoint_and_writes_the_status(
    seaweed: Seaweed, imds: ImdsStandIn, tmp_path: Path
) -> None:
    started_at = time.time()
    proc = start_agent(seaweed, imds, tmp_path, "ag1", "count/1")
    wait_for(lambda: status(seaweed, "ag1", "count/1").get("checkpoints"), 30, "a checkpoint")
    imds.notice(HOST, in_s=60)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    final = status(seaweed, "ag1", "count/1")
    assert final["state"] == "ended" and final["exit_code"] == 143
    assert (
        final["notice"].startswith("spot instance-action terminate")
        and final["instance_id"] == HOST
    )
    last = final["checkpoints"][-1]
    # each upload says how long it took from the task's commit to the checkpoint in S3
    assert all(0 < c["save_s"] < final["at"] - started_at for c in final["checkpoints"])
    stopped_at = int(out.rsplit("checkpoint ", 1)[1].split(" at step ")[1].split()[0])
    store = open_checkpoint_store(
        f"s3://{BUCKET}/agent-ckpt", tmp_path, storage_options=seaweed.options()
    )
    restored = store.restore("ag1", "count", last["seq"], tmp_path / "restored")
    assert restored.attempt == 1
    assert json.loads((tmp_path / "restored" / "counter.json").read_text()) == {"step": stopped_at}
    assert ("PUT", f"/{HOST}/latest/api/token") in imds.requests  # IMDSv2: a session token

    # the retry, told which checkpoint to restore, resumes where the notice stopped it
    again = start_agent(
        seaweed,
        imds.__class__(),
        tmp_path,
        "ag1",
        "count/2",
        count_to=stopped_at + 5,
        extra_env={"STORMPROOF_CHECKPOINT_SEQ": str(last["seq"])},
    )
    out2, err2 = again.communicate(timeout=60)
    assert again.returncode == 0, err2
    assert f"resumed from step {stopped_at}" in out2
    assert status(seaweed, "ag1", "count/2")["exit_code"] == 0


def test_sigterm_to_the_agent_is_a_notice_and_a_rebalance_asks_for_a_checkpoint(
    seaweed: Seaweed, imds: ImdsStandIn, tmp_path: Path
) -> None:
    proc = start_agent(seaweed, imds, tmp_path, "ag2", "count/1", count_to=100000)
    wait_for(lambda: status(seaweed, "ag2", "count/1").get("state") == "running", 30, "start")
    time.sleep(0.3)
    imds.rebalance(HOST)  # a risk, not a notice: a checkpoint now, and it carries on
    wait_for(
        lambda: len(status(seaweed, "ag2", "count/1").get("checkpoints", [])) >= 1,
        30,
        "the rebalance checkpoint",
    )
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)  # what TerminateJob / docker stop does
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "SIGTERM to the agent" in status(seaweed, "ag2", "count/1")["notice"]


def test_without_a_metadata_service_the_command_just_runs_and_its_code_is_kept(
    seaweed: Seaweed, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(seaweed.env(), AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:9")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stormproof",
            "exec",
            "--run",
            "ag3",
            "--attempt",
            "t/1",
            "--status",
            f"s3://{BUCKET}/status/ag3/t/1.json",
            "--shell",
            "--",
            "exit 7",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 7, proc.stderr
    assert status(seaweed, "ag3", "t/1")["exit_code"] == 7


# ---------------------------------------------------------------------- the output it keeps
def start_plain_agent(
    seaweed: Seaweed, tmp_path: Path, run: str, shell: str, *options: str
) -> subprocess.Popen[bytes]:
    """``stormproof exec`` of a shell command, off EC2, with its status in the bucket."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(seaweed.env(), PYTHONUNBUFFERED="1")
    cmd = [
        *(sys.executable, "-m", "stormproof", "exec", "--run", run, "--attempt", "t/1"),
        *("--status", f"s3://{BUCKET}/status/{run}/t/1.json", "--no-imds", *options),
        *("--shell", "--", shell),
    ]
    return subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def uploaded(seaweed: Seaweed, run: str, stream: str) -> tuple[bytes, dict[str, str]] | None:
    """The object the agent uploaded beside the status, and its metadata (None: none yet)."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=seaweed.endpoint,
        aws_access_key_id=seaweed.env()["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=seaweed.env()["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    try:
        got = s3.get_object(Bucket=BUCKET, Key=f"status/{run}/t/1.{stream}.log")
    except s3.exceptions.NoSuchKey:
        return None
    return got["Body"].read(), got["Metadata"]


def test_the_output_is_uploaded_while_the_command_runs_and_whole_at_the_end(
    seaweed: Seaweed, tmp_path: Path
) -> None:
    proc = start_plain_agent(
        seaweed,
        tmp_path,
        "out1",
        "echo first; echo first-err >&2; sleep 4; echo second; echo second-err >&2",
        "--log-upload",
        "1s",
    )
    early = wait_for(lambda: uploaded(seaweed, "out1", "stdout"), 30, "the first upload")
    assert proc.poll() is None  # uploaded before the command ended
    assert early[0] == b"first\n"
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert uploaded(seaweed, "out1", "stdout") == (
        b"first\nsecond\n",
        {"stormproof-bytes": "13", "stormproof-head": "13", "stormproof-cut": "0"},
    )
    stderr = uploaded(seaweed, "out1", "stderr")
    assert stderr is not None and stderr[0] == b"first-err\nsecond-err\n"
    assert out == b"first\nsecond\n" and b"first-err\nsecond-err\n" in err  # still teed on
    assert status(seaweed, "out1", "t/1")["exit_code"] == 0


def test_a_runaway_output_keeps_its_head_and_tail_and_says_how_much_was_cut(
    seaweed: Seaweed, tmp_path: Path
) -> None:
    lines = "".join(f"line {i:04d}\n" for i in range(1000)).encode()  # 10,000 bytes
    printer = "i=0; while [ $i -lt 1000 ]; do printf 'line %04d\\n' $i; i=$((i+1)); done"
    proc = start_plain_agent(seaweed, tmp_path, "out2", printer, "--log-max-bytes", "1000")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out == lines  # the agent's own stdout (SSM's, CloudWatch's) has all of it
    got = uploaded(seaweed, "out2", "stdout")
    assert got is not None
    body, meta = got
    assert body.startswith(lines[:500]) and body.endswith(lines[-500:])
    assert body[500:-500] == (
        b"[stormproof: 9000 bytes of stdout left out here; the first 500 and the last 500 "
        b"bytes are kept]\n"
    )
    assert meta == {"stormproof-bytes": "10000", "stormproof-head": "500", "stormproof-cut": "9000"}


def test_sigterm_to_the_agent_still_uploads_what_the_command_printed(
    seaweed: Seaweed, tmp_path: Path
) -> None:
    proc = start_plain_agent(
        seaweed, tmp_path, "out3", "echo before; sleep 60", "--log-upload", "10m"
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"before\n"  # printed, and no upload is due for 10 minutes
    assert uploaded(seaweed, "out3", "stdout") is None
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    got = uploaded(seaweed, "out3", "stdout")
    assert got is not None and got[0] == b"before\n"
    final = status(seaweed, "out3", "t/1")
    assert final["state"] == "ended" and "SIGTERM to the agent" in final["notice"]
