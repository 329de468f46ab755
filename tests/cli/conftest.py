"""Run the real ``stormproof`` command in a scratch directory, as a user would."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

import pytest


@dataclass
class Cli:
    """The real command in ``cwd``; the Slurm and AWS tests' runners extend it with their
    cluster's or emulator's environment (``env``) and a longer ``timeout``."""

    cwd: Path
    procs: list[subprocess.Popen[str]]

    #: Seconds a command may take before the test fails (a batch system is slower).
    timeout: ClassVar[float] = 60

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("STORMPROOF_HOME", None)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def __call__(
        self, *args: str, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stormproof", *args],
            cwd=self.cwd,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=self.timeout if timeout is None else timeout,
            stdin=subprocess.DEVNULL,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stormproof", *args],
            cwd=self.cwd,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc

    def write(self, name: str, text: str) -> Path:
        path = self.cwd / name
        path.write_text(text)
        return path

    def status(self, run: str) -> dict[str, Any]:
        proc = self("status", run, "--json")
        assert proc.returncode == 0, proc.stderr
        data: dict[str, Any] = json.loads(proc.stdout)
        return data

    def history(self, run: str) -> list[dict[str, Any]]:
        """The run's log as ``history --json`` gives it (empty while it cannot be read)."""
        proc = self("history", run, "--json")
        rows: list[dict[str, Any]] = json.loads(proc.stdout) if proc.returncode == 0 else []
        return rows

    @property
    def data_dir(self) -> Path:
        return self.cwd / ".stormproof" / "runs"


def wait_for(check: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def read_line(pipe: IO[str] | None, timeout_s: float = 30) -> str:
    """The next line a running command writes to ``pipe`` (its stdout or stderr), waiting at
    most ``timeout_s``; fails the test if none comes."""
    assert pipe is not None
    ready, _, _ = select.select([pipe], [], [], timeout_s)
    if not ready:
        raise AssertionError(f"nothing written within {timeout_s}s")
    return pipe.readline().rstrip("\n")


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    c = Cli(tmp_path, [])
    yield c
    for p in c.procs:
        if p.poll() is None:
            p.kill()
        p.communicate()  # reap it and close its pipes
    _kill_leftovers(tmp_path)


def _kill_leftovers(root: Path) -> None:
    """Attempts and shims outlive orchestrators by design; a test must not leave them behind."""
    mark = str(root)
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        try:
            environ = (pid_dir / "environ").read_bytes()
            cmdline = (pid_dir / "cmdline").read_bytes()
        except OSError:
            continue
        if mark.encode() in environ or mark.encode() in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_dir.name), signal.SIGKILL)
