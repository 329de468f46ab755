"""``stormproof checkpoint commit``: exit codes and messages, in-process and as a real process.

Until the command is registered on the main CLI it is reached as the click group itself:
through ``CliRunner``, and through ``python -c`` in a real subprocess (which also checks
that the checkpoint signal cannot kill a commit).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from stormproof.checkpoints import protocol
from stormproof.cli.checkpoint_cmd import checkpoint

from .conftest import FakeRuntime

#: The command as a separate process, without the main CLI (argv[1:] is what click parses).
COMMAND = [
    sys.executable,
    "-c",
    "from stormproof.cli.checkpoint_cmd import checkpoint; checkpoint()",
]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(checkpoint, ["commit", *args], catch_exceptions=False)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("STORMPROOF_")}
    return subprocess.run(
        [*COMMAND, "commit", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_commit_waits_and_prints_the_seq(ckpt: Path, runtime: FakeRuntime) -> None:
    (ckpt / "state.bin").write_bytes(b"\x00" * 10)
    result = invoke("--meta", '{"step": 1200}')
    assert result.exit_code == 0, result.output
    assert result.stdout == "checkpoint 1 saved\n"
    assert runtime.saved[0].meta == {"step": 1200}
    assert runtime.saved[0].files == {"state.bin": b"\x00" * 10}


def test_no_wait_only_writes_the_marker(ckpt: Path) -> None:
    (ckpt / "x").write_text("1")
    result = invoke("--no-wait")
    assert result.exit_code == 0, result.output
    assert "committed" in result.stdout
    assert protocol.pending_commit(ckpt) == {}


def test_a_failed_save_exits_1_with_the_error(ckpt: Path, runtime: FakeRuntime) -> None:
    runtime.fail = "store unreachable"
    (ckpt / "x").write_text("1")
    result = invoke()
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "store unreachable" in result.stderr
    assert result.stdout == ""


def test_a_timeout_exits_1(ckpt: Path) -> None:
    (ckpt / "x").write_text("1")
    result = invoke("--timeout", "0.2s")
    assert result.exit_code == 1
    assert "not saved within 0.2s" in result.stderr


def test_outside_an_attempt_exits_2_and_says_why() -> None:
    result = invoke()
    assert result.exit_code == 2
    assert result.stderr.startswith("error: STORMPROOF_CHECKPOINT_DIR is not set")
    assert "checkpoint_enabled: true" in result.stderr


def test_an_empty_checkpoint_dir_exits_2(ckpt: Path) -> None:
    result = invoke()
    assert result.exit_code == 2
    assert "nothing to commit" in result.stderr
    assert str(ckpt) in result.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--meta", "{step: 1}"], "--meta is not valid JSON"),
        (["--meta", "[1]"], "--meta must be a JSON object"),
        (["--meta", '{"x": NaN}'], "not JSON-serialisable"),
        (["--timeout", "soon"], "--timeout: expected a duration"),
        (["--timeout", "0"], "--timeout must be more than 0"),
    ],
)
def test_bad_options_exit_2(ckpt: Path, args: list[str], words: str) -> None:
    (ckpt / "x").write_text("1")
    result = invoke(*args)
    assert result.exit_code == 2
    assert words in result.stderr
    assert not (ckpt / ".commit").exists()


def test_help_documents_the_exit_codes() -> None:
    result = CliRunner().invoke(checkpoint, ["commit", "--help"])
    assert result.exit_code == 0
    assert "--no-wait" in result.output and "--timeout" in result.output
    assert "Exit 0 when saved, 1 when the save failed or timed out, 2 on bad usage" in " ".join(
        result.output.split()
    )


# --- as a real process ----------------------------------------------------------------------


def test_real_process_commit(ckpt: Path, runtime: FakeRuntime) -> None:
    (ckpt / "state.json").write_text("{}")
    result = run("--meta", '{"step": 7}', env={"STORMPROOF_CHECKPOINT_DIR": str(ckpt)})
    assert (result.returncode, result.stdout, result.stderr) == (0, "checkpoint 1 saved\n", "")
    assert runtime.saved[0].meta == {"step": 7}


def test_real_process_exit_codes(tmp_path: Path) -> None:
    missing = run()
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: STORMPROOF_CHECKPOINT_DIR is not set")
    assert "Traceback" not in missing.stderr
    empty = run(env={"STORMPROOF_CHECKPOINT_DIR": str(tmp_path)})
    assert empty.returncode == 2 and "nothing to commit" in empty.stderr
    (tmp_path / "x").write_text("1")
    timeout = run("--timeout", "0.3", env={"STORMPROOF_CHECKPOINT_DIR": str(tmp_path)})
    assert timeout.returncode == 1 and "not saved within" in timeout.stderr


def test_real_process_failed_save(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("1")
    fake = FakeRuntime(tmp_path, fail="quota exceeded").start()
    try:
        result = run(env={"STORMPROOF_CHECKPOINT_DIR": str(tmp_path)})
    finally:
        fake.stop()
    assert result.returncode == 1
    assert result.stderr == "error: checkpoint not saved: quota exceeded\n"


def test_the_checkpoint_signal_does_not_kill_a_commit(tmp_path: Path) -> None:
    """stormproof signals the whole process group, the commit command included."""
    (tmp_path / "x").write_text("1")
    base = {k: v for k, v in os.environ.items() if not k.startswith("STORMPROOF_")}
    proc = subprocess.Popen(
        [*COMMAND, "commit"],
        env={**base, "STORMPROOF_CHECKPOINT_DIR": str(tmp_path),
             "STORMPROOF_CHECKPOINT_SIGNAL": "SIGUSR2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / ".commit").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (tmp_path / ".commit").exists()  # it is waiting, handlers in place
        proc.send_signal(signal.SIGUSR1)
        proc.send_signal(signal.SIGUSR2)
        time.sleep(0.2)
        assert proc.poll() is None
        protocol.finish_commit(tmp_path, protocol.CommitResult.saved(4))
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, stdout, stderr) == (0, "checkpoint 4 saved\n", "")
    assert json.loads((tmp_path / ".commit-result").read_text()) == {"ok": True, "seq": 4}


def test_through_the_main_cli(ckpt: Path, runtime: FakeRuntime) -> None:
    """``stormproof checkpoint commit`` as tasks call it (the group registered on the main CLI)."""
    (ckpt / "state.json").write_text("{}")
    base = {k: v for k, v in os.environ.items() if not k.startswith("STORMPROOF_")}
    ok = subprocess.run(
        [sys.executable, "-m", "stormproof", "checkpoint", "commit", "--meta", '{"step": 3}'],
        env={**base, "STORMPROOF_CHECKPOINT_DIR": str(ckpt)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "checkpoint 1 saved\n", "")
    assert runtime.saved[0].meta == {"step": 3}
    outside = subprocess.run(
        [sys.executable, "-m", "stormproof", "checkpoint", "commit"],
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert outside.returncode == 2
    assert outside.stderr.startswith("error: STORMPROOF_CHECKPOINT_DIR is not set")
