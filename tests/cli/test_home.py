"""The home (``--home``): every unusable one is a clear error, a read-only one is still read by
``status``, ``history`` and ``logs``, and nothing follows a link planted inside it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Cli

WF = (
    "name: w\ntasks:\n  - {id: a, command: [echo, hello]}\n"
    "  - {id: b, command: [echo, bye], depends_on: [a]}\n"
)


def _ok_home(cli: Cli, home: Path, name: str = "r") -> None:
    cli.write("wf.yaml", WF)
    proc = cli("run", "wf.yaml", "--name", name, "--quiet", "--home", str(home))
    assert proc.returncode == 0, proc.stderr


def _refused(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert fragment in " ".join(proc.stderr.split()), proc.stderr


@pytest.mark.parametrize(
    "command", [["run", "wf.yaml"], ["status"], ["status", "r"], ["history", "r"]]
)
def test_a_home_that_is_a_file_is_refused(cli: Cli, command: list[str]) -> None:
    cli.write("wf.yaml", WF)
    cli.write("afile", "x")
    _refused(cli(*command, "--home", "afile"), "is a file, not a directory; choose another --home")


@pytest.mark.parametrize("command", [["run", "wf.yaml"], ["status", "r"]])
def test_dev_null_and_a_home_under_a_file_are_refused(cli: Cli, command: list[str]) -> None:
    cli.write("wf.yaml", WF)
    cli.write("afile", "x")
    _refused(cli(*command, "--home", "/dev/null"), "is a device (like /dev/null), not a directory")
    _refused(cli(*command, "--home", "afile/home"), "a part of its path is a file")


def test_reading_commands_do_not_create_a_missing_home(cli: Cli) -> None:
    proc = cli("status", "--json", "--home", "nohome")
    assert proc.returncode == 0 and json.loads(proc.stdout) == []
    _refused(cli("status", "r", "--home", "nohome"), "no run named 'r'")
    assert not (cli.cwd / "nohome").exists()


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A directory and a read-only bind mount of it: a real read-only file system."""
    source, mount = tmp_path / "rw", tmp_path / "ro"
    source.mkdir()
    mount.mkdir()
    done = subprocess.run(["mount", "--bind", str(source), str(mount)], capture_output=True)
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot bind-mount here: {done.stderr!r}")
        pytest.skip(f"cannot bind-mount here (needs CAP_SYS_ADMIN): {done.stderr!r}")
    try:
        subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(mount)], check=True, capture_output=True
        )
        yield source, mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_read_only_home_is_read_and_refused_for_writing(
    cli: Cli, read_only_mount: tuple[Path, Path]
) -> None:
    source, mount = read_only_mount
    _ok_home(cli, source / "home")
    home = str(mount / "home")
    status = cli("status", "r", "--json", "--home", home)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["counts"] == {"succeeded": 2}
    history = cli("history", "r", "--json", "--home", home)
    assert history.returncode == 0 and json.loads(history.stdout)[-1]["kind"] == "RunFinished"
    logs = cli("logs", "r", "b", "--home", home)
    assert logs.returncode == 0 and "bye" in logs.stdout
    listed = cli("status", "--home", home)
    assert listed.returncode == 0 and "r" in listed.stdout
    _refused(
        cli("run", "wf.yaml", "--name", "s", "--home", home),
        "cannot be written (read-only file system): runs cannot start or change there",
    )
    _refused(cli("resume", "r", "--home", home), "cannot be written (read-only file system)")


def test_a_read_only_home_with_a_live_wal_is_read(
    cli: Cli, read_only_mount: tuple[Path, Path]
) -> None:
    """A reader keeps the WAL from being checkpointed away: its -wal and -shm stay, and the
    last rows live only in the WAL. The read-only view of the home must still see them."""
    source, mount = read_only_mount
    (source / "home").mkdir()
    db = source / "home" / "stormproof.db"
    _ok_home(cli, source / "home", "first")
    holder = sqlite3.connect(db)
    holder.execute("SELECT count(*) FROM rows").fetchone()  # holds a read snapshot open
    holder.execute("BEGIN")
    holder.execute("SELECT count(*) FROM rows").fetchone()
    try:
        _ok_home(cli, source / "home", "second")
        assert (source / "home" / "stormproof.db-wal").stat().st_size > 0
        status = cli("status", "second", "--json", "--home", str(mount / "home"))
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["state"] == "succeeded"
    finally:
        holder.close()


def test_a_link_planted_at_a_run_is_not_followed(cli: Cli, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    cli.write("wf.yaml", WF)
    home = cli.cwd / ".stormproof"
    (home / "runs").mkdir(parents=True)
    (home / "runs" / "r").symlink_to(outside)
    _refused(cli("run", "wf.yaml", "--name", "r"), "runs/r is a symbolic link")
    assert list(outside.iterdir()) == []


def test_links_planted_at_a_task_dir_or_a_log_are_not_followed(cli: Cli, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET\n")
    _ok_home(cli, cli.cwd / ".stormproof")
    tasks = cli.cwd / ".stormproof" / "runs" / "r" / "tasks"
    log = tasks / "b" / "attempt-1" / "stdout.log"
    log.unlink()
    log.symlink_to(secret)
    for follow in ([], ["-f"]):
        proc = cli("logs", "r", "b", *follow)
        _refused(proc, "stdout.log is a symbolic link")
        assert "TOP SECRET" not in proc.stdout
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "attempt-1").mkdir(parents=True)
    (elsewhere / "attempt-1" / "stdout.log").write_text("TOP SECRET\n")
    os.rename(tasks / "a", tmp_path / "a-moved")
    (tasks / "a").symlink_to(elsewhere)
    proc = cli("logs", "r", "a")
    _refused(proc, "tasks/a is a symbolic link")
    assert "TOP SECRET" not in proc.stdout
    _refused(cli("resume", "r"), "tasks/a is a symbolic link")


def test_links_planted_while_a_run_runs_are_not_followed(cli: Cli, tmp_path: Path) -> None:
    """Task a plants, mid-run, a link where task b's directory goes and one where task c's
    stdout goes, before either starts: b and c fail with the link named, nothing is made or
    written through either link."""
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET\n")
    plant = (
        f'ln -s {outside} "$STORMPROOF_RUN_DIR/tasks/b" && '
        'mkdir -p "$STORMPROOF_RUN_DIR/tasks/c/attempt-1" && '
        f'ln -s {secret} "$STORMPROOF_RUN_DIR/tasks/c/attempt-1/stdout.log"'
    )
    cli.write(
        "wf.yaml",
        "name: w\nglobal_config: {max_retry_attempts: 0, on_failure: continue}\ntasks:\n"
        f"  - id: a\n    command: [sh, -c, {json.dumps(plant)}]\n"
        "  - {id: b, command: [sh, -c, 'echo overwritten > out.txt'], depends_on: [a]}\n"
        "  - {id: c, command: [echo, overwritten], depends_on: [a]}\n",
    )
    proc = cli("run", "wf.yaml", "--name", "r", "--quiet")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(outside.iterdir()) == []
    assert secret.read_text() == "TOP SECRET\n"
    status = json.loads(cli("status", "r", "--json").stdout)
    states = {tid: t["state"] for tid, t in status["tasks"].items()}
    assert states == {"a": "succeeded", "b": "failed", "c": "failed"}
    for tid in ("b", "c"):
        rows = json.loads(cli("history", "r", "--task", tid, "--json").stdout)
        failed = [r for r in rows if r["kind"] == "AttemptSubmitFailed"]
        assert failed and "is a symbolic link" in failed[0]["data"]["message"], (tid, rows)
