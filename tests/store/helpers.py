"""Row builders, opening either store, and real child processes that use it."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from stormproof.store.base import EventLog, Row


def event(kind: str = "E", at: float = 1.0, **data: Any) -> Row:
    return Row(0, "event", kind, at, None, dict(data))


def decision(kind: str = "D", cause: int | None = None, at: float = 1.0, **data: Any) -> Row:
    return Row(0, "decision", kind, at, cause, dict(data))


_REPO = Path(__file__).resolve().parents[2]


def open_store(where: str, synchronous: str = "group", lease_s: float = 30.0) -> EventLog:
    """The store at ``where``: a PostgreSQL URL, or the path of an SQLite file."""
    if where.startswith("postgresql://"):
        from stormproof.store.postgres import PostgresEventLog

        return PostgresEventLog(where, lease_s=lease_s)
    from stormproof.store.sqlite import SQLiteEventLog

    return SQLiteEventLog(Path(where), synchronous=synchronous)  # type: ignore[arg-type]


# Every child script starts with this: ``log`` is the store at argv[1] (a path or a URL),
# ``say`` tells the test how far the child got.
PRELUDE = """
import os, subprocess, sys, time
from pathlib import Path
from stormproof.store.base import Row
from tests.store.helpers import open_store

log = open_store(sys.argv[1], sys.argv[2], float(sys.argv[3]))

def say(message):
    print(message, flush=True)

def event(kind="E", **data):
    return Row(0, "event", kind, 1.0, None, data)

def decision(kind="D", **data):
    return Row(0, "decision", kind, 1.0, None, data)
"""


class Child:
    """A Python process running ``script`` against the store at ``db``; killed for real."""

    def __init__(
        self, script: str, db: Path | str, synchronous: str = "full", lease_s: float = 30.0
    ) -> None:
        code = PRELUDE + textwrap.dedent(script)
        path = os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(db), synchronous, str(lease_s)],
            env={**os.environ, "PYTHONPATH": path},  # for ``tests.store.helpers``
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._pending = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def line(self, timeout_s: float = 20.0) -> str:
        """The child's next line of output; fails the test if none comes in time."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            chunk = os.read(self.proc.stdout.fileno(), 4096) if ready else b""
            if not chunk:
                raise AssertionError(f"child said nothing more; stderr:\n{self._stderr()}")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode()

    def kill_9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=20) == -signal.SIGKILL

    def wait_ok(self) -> None:
        assert self.proc.wait(timeout=20) == 0, self._stderr()

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def _stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(still running)"
        return self.proc.stderr.read().decode(errors="replace")
