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
