"""A stand-in for the runtime's side of the commit protocol, and a clean slate for every test.

``FakeRuntime`` does, in a thread, what the real runtime does with a checkpoint
directory: notice ``.commit``, copy the files (protocol files excluded), answer with
``finish_commit``. It also checks the task's half of the bargain: the files must not
change while the marker is there. Tests of subprocesses use it too: it only watches
files.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stormproof import task
from stormproof.checkpoints import protocol

TASK_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)


@dataclass
class Saved:
    seq: int
    meta: dict[str, Any]
    files: dict[str, bytes]


@dataclass
class FakeRuntime:
    """Saves every commit in ``directory``; ``fail`` makes it answer with that error instead."""

    directory: Path
    save_s: float = 0.05
    fail: str | None = None
    saved: list[Saved] = field(default_factory=list)
    #: Files the task changed while its commit was pending (must stay empty).
    violations: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> FakeRuntime:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            meta = protocol.pending_commit(self.directory)
            if meta is None:
                time.sleep(0.005)
                continue
            before = snapshot(self.directory)
            time.sleep(self.save_s)  # "copying"
            after = snapshot(self.directory)
            self.violations += sorted(
                name for name in before.keys() | after.keys() if before.get(name) != after.get(name)
            )
            if self.fail is not None:
                protocol.finish_commit(self.directory, protocol.CommitResult.failed(self.fail))
                continue
            seq = len(self.saved) + 1
            self.saved.append(Saved(seq, meta, before))
            protocol.finish_commit(self.directory, protocol.CommitResult.saved(seq))

    def restore_into(self, directory: Path) -> dict[str, str]:
        """Put the newest checkpoint in a fresh ``directory``; the environment a retry gets."""
        directory.mkdir(parents=True)
        last = self.saved[-1]
        for rel, data in last.files.items():
            (directory / rel).parent.mkdir(parents=True, exist_ok=True)
            (directory / rel).write_bytes(data)
        return {
            protocol.ENV_CHECKPOINT_DIR: str(directory),
            protocol.ENV_RESTORED: "1",
            protocol.ENV_CHECKPOINT_SEQ: str(last.seq),
        }


def snapshot(directory: Path) -> dict[str, bytes]:
    return {rel: (directory / rel).read_bytes() for rel in protocol.checkpoint_files(directory)}


@pytest.fixture(autouse=True)
def clean_task_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No STORMPROOF_* from the outside, no flag left over, signal handlers put back."""
    for name in list(os.environ):
        if name.startswith("STORMPROOF_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(task, "_signal_requested", False)
    handlers = {sig: signal.getsignal(sig) for sig in TASK_SIGNALS}
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


@pytest.fixture
def ckpt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkpoint directory, announced the way the runtime announces it."""
    directory = tmp_path / "checkpoint"
    directory.mkdir()
    monkeypatch.setenv(protocol.ENV_CHECKPOINT_DIR, str(directory))
    return directory


@pytest.fixture
def runtime(ckpt: Path) -> Iterator[FakeRuntime]:
    fake = FakeRuntime(ckpt).start()
    yield fake
    fake.stop()
    assert fake.violations == []
