"""Checkpoints through real runs: kill -9 a task, corrupt what is stored, and watch the retry.

The task counts steps, appends ``<attempt> <step>`` to a shared file for every
step it does, and commits ``{"step": N}`` every 5 steps with
``stormproof.task.commit()``. After ``PAUSE_AT`` steps it waits for a ``go``
file, so the test can act on a known set of stored checkpoints.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import Cli, wait_for

pytestmark = pytest.mark.slow

COUNTER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from stormproof import task

    data = Path(os.environ["STORMPROOF_DATA_DIR"])
    state = task.checkpoint_dir() / "state.json"
    start = 0
    if task.restored():
        start = json.loads(state.read_text())["step"]
        print(f"resumed from step {start}", flush=True)
    else:
        print("starting fresh", flush=True)
    attempt = os.environ["STORMPROOF_ATTEMPT"]
    for step in range(start, 30):
        if step == int(os.environ["PAUSE_AT"]):
            (data / "paused").write_text(attempt)
            while not (data / "go").exists():
                time.sleep(0.02)
        with open(data / "steps", "a") as f:
            f.write(f"{attempt} {step}\\n")
        time.sleep(0.01)
        if (step + 1) % 5 == 0:
            state.write_text(json.dumps({"step": step + 1}))
            task.commit({"step": step + 1})
    """
)


def workflow(cli: Cli, pause_at: int) -> None:
    (cli.cwd / "counter.py").write_text(COUNTER)
    cli.write(
        "wf.yaml",
        f"""
name: counting
global_config: {{keep_checkpoints: 5}}
tasks:
  - id: count
    command: [{json.dumps(sys.executable)}, counter.py]
    environment: {{PAUSE_AT: "{pause_at}"}}
    checkpoint_enabled: true
    retry: [{{error_equals: [States.ALL], interval_seconds: 0.2, max_attempts: 2}}]
""",
    )
    # the command runs in the attempt's work dir: give it the script's absolute path
    text = (cli.cwd / "wf.yaml").read_text().replace("counter.py", str(cli.cwd / "counter.py"))
    (cli.cwd / "wf.yaml").write_text(text)


def data(cli: Cli, run: str) -> Path:
    return cli.data_dir / run / "data"


def history(cli: Cli, run: str) -> list[dict]:  # type: ignore[type-arg]
    return json.loads(cli("history", run, "--json").stdout)  # type: ignore[no-any-return]


def task_pid(cli: Cli, run: str, attempt: str) -> int:
    for row in history(cli, run):
        if row["kind"] == "AttemptStarted" and row["data"]["attempt_id"] == attempt:
            return int(row["data"]["handle"])
    raise AssertionError(f"{attempt} never started")


def steps_of(cli: Cli, run: str, attempt: str) -> list[int]:
    lines = (data(cli, run) / "steps").read_text().split("\n")
    return [int(s) for a, _, s in (ln.partition(" ") for ln in lines if ln) if a == attempt]


def committed(cli: Cli, run: str) -> list[int]:
    return [r["data"]["seq"] for r in history(cli, run) if r["kind"] == "CheckpointCommitted"]


def pause_then_kill(cli: Cli, run: str, expect_seqs: int) -> None:
    wait_for(lambda: (data(cli, run) / "paused").exists(), what="the task to pause")
    wait_for(lambda: len(committed(cli, run)) >= expect_seqs, what="commits in the log")
    os.kill(task_pid(cli, run, "count/1"), signal.SIGKILL)
    (data(cli, run) / "go").write_text("")


def test_kill_9_of_a_task_resumes_from_its_last_checkpoint(cli: Cli) -> None:
    workflow(cli, pause_at=12)
    proc = cli.start("run", "wf.yaml", "--name", "k")
    pause_then_kill(cli, "k", expect_seqs=2)  # commits at steps 5 and 10
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    assert steps_of(cli, "k", "1") == list(range(12))
    # redone work is only what came after the last checkpoint (steps 10 and 11)
    assert steps_of(cli, "k", "2") == list(range(10, 30))
    restored = [r["data"] for r in history(cli, "k") if r["kind"] == "CheckpointRestored"]
    assert restored == [{"at": restored[0]["at"], "attempt_id": "count/2", "seq": 2}]
    logs = cli("logs", "k", "count", "--attempt", "2", "--stream", "stdout").stdout
    assert "resumed from step 10" in logs


def _flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-3])


CORRUPTIONS = {
    "flipped-byte": lambda seq_dir: _flip_byte(seq_dir / "state.json"),
    "truncated": lambda seq_dir: _truncate(seq_dir / "state.json"),
    "no-manifest": lambda seq_dir: (seq_dir / "MANIFEST.json").unlink(),
}


@pytest.mark.parametrize("how", list(CORRUPTIONS))
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(cli: Cli, how: str) -> None:
    workflow(cli, pause_at=12)
    proc = cli.start("run", "wf.yaml", "--name", "c")
    wait_for(lambda: (data(cli, "c") / "paused").exists(), what="the task to pause")
    wait_for(lambda: len(committed(cli, "c")) >= 2, what="two commits")
    CORRUPTIONS[how](cli.cwd / ".stormproof" / "checkpoints" / "c" / "count" / "00000002")
    pause_then_kill(cli, "c", expect_seqs=2)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    rows = history(cli, "c")
    corrupt = [r["data"] for r in rows if r["kind"] == "CheckpointCorrupt"]
    assert [(c["task_id"], c["seq"]) for c in corrupt] == [("count", 2)]
    assert corrupt[0]["problem"]
    restored = [r["data"]["seq"] for r in rows if r["kind"] == "CheckpointRestored"]
    assert restored == [1]
    assert steps_of(cli, "c", "2") == list(range(5, 30))


def test_no_valid_checkpoint_starts_fresh_and_says_so(cli: Cli) -> None:
    workflow(cli, pause_at=12)
    proc = cli.start("run", "wf.yaml", "--name", "f")
    wait_for(lambda: (data(cli, "f") / "paused").exists(), what="the task to pause")
    wait_for(lambda: len(committed(cli, "f")) >= 2, what="two commits")
    for seq in ("00000001", "00000002"):
        _flip_byte(cli.cwd / ".stormproof" / "checkpoints" / "f" / "count" / seq / "state.json")
    pause_then_kill(cli, "f", expect_seqs=2)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    rows = history(cli, "f")
    assert sorted(r["data"]["seq"] for r in rows if r["kind"] == "CheckpointCorrupt") == [1, 2]
    assert [r["data"]["seq"] for r in rows if r["kind"] == "CheckpointRestored"] == [0]
    assert steps_of(cli, "f", "2") == list(range(30))
    assert "starting fresh" in cli("logs", "f", "count", "--stream", "stdout").stdout


ONE_COMMIT = """
name: one
tasks:
  - id: t
    checkpoint_enabled: true
    keep_checkpoints_on_success: true
    command: |
      c="$STORMPROOF_CHECKPOINT_DIR"; echo hello > "$c/state"
      : > "$c/.commit.tmp" && mv "$c/.commit.tmp" "$c/.commit"
      while [ -e "$c/.commit" ]; do sleep 0.02; done
"""


def test_show_of_a_damaged_copy_exits_1_even_when_another_tier_verifies(cli: Cli) -> None:
    hot = cli.cwd / "hot"
    cli.write("stormproof.yaml", f"checkpoint_tiers:\n  hot: {hot}\n")
    cli.write("wf.yaml", ONE_COMMIT)
    assert cli("run", "wf.yaml", "--name", "h1").returncode == 0
    assert cli("checkpoints", "show", "h1", "t").returncode == 0
    (hot / "h1" / "t" / "00000001" / "state").write_text("HELLO\n")  # same size, other bytes
    shown = cli("checkpoints", "show", "h1", "t")
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert "does not verify: file state: sha256 mismatch" in shown.stdout
    assert "a restore uses the warm copy" in shown.stdout
