"""The runtime's checkpoint glue with a store that does nothing but record: ordering of events."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from stormproof.checkpoints import protocol
from stormproof.core.events import AttemptExited, CheckpointCommitted, Event
from stormproof.executors.base import AttemptJob
from stormproof.runtime import checkpointing as mod
from stormproof.runtime.checkpointing import Checkpointing


class RecordingStore:
    """Saves 'succeed' once ``release`` is set; records what was saved."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.saved = threading.Event()
        self.seqs: list[int] = []

    def save(self, run: str, task: str, attempt: int, seq: int, source: Path, now: float) -> Any:
        self.release.wait(10)
        self.seqs.append(seq)
        self.saved.set()

        class Manifest:
            files = ("state",)
            total_bytes = 5

        return Manifest()


def take_until(ckpt: Checkpointing, n: int) -> list[Event]:
    events: list[Event] = []
    deadline = time.monotonic() + 10
    while len(events) < n and time.monotonic() < deadline:
        events += ckpt.take()[0]
        time.sleep(0.01)
    return events


def committing(tmp_path: Path, monkeypatch: Any) -> tuple[RecordingStore, Checkpointing, Path]:
    """Attempt t/1 launched, a file in its checkpoint directory and the commit marker written;
    the store holds each save until ``store.release`` is set."""
    monkeypatch.setattr(mod, "SCAN_EVERY_S", 0.0)
    store = RecordingStore()
    ckpt = Checkpointing(store, "r", lambda task: 1)  # type: ignore[arg-type]
    job = AttemptJob("r", "t/1", "t", 1, ["x"], {}, tmp_path / "attempt-1")
    ckpt.launch(job, (), lambda j: None)
    directory = tmp_path / "attempt-1" / "checkpoint"
    (directory / "state").write_text("hello")
    protocol.write_atomic(directory / protocol.COMMIT, "")
    return store, ckpt, directory


def test_an_end_that_arrives_after_the_save_finished_is_still_delivered_after_the_commit(
    tmp_path: Path, monkeypatch: Any
) -> None:
    store, ckpt, _ = committing(tmp_path, monkeypatch)
    ckpt.scan(time.time())
    store.release.set()
    assert store.saved.wait(5)
    time.sleep(0.05)  # the worker has reported; the loop has not taken the result yet
    exited = AttemptExited(time.time(), "t/1", 143)
    assert ckpt.on_attempt_end("t/1", exited)  # held: its commit is not in the log yet
    events = take_until(ckpt, 2)
    assert [type(e) for e in events] == [CheckpointCommitted, AttemptExited]
    ckpt.after_flush()
    assert protocol.pending_commit(tmp_path / "attempt-1" / "checkpoint") is None
    assert store.seqs == [1]
    ckpt.close()


def test_a_prune_decided_while_the_driver_drains_still_happens(tmp_path: Path) -> None:
    # The driver closes the worker pool, then logs and acts on what the last saves produced:
    # a PruneCheckpoints among those decisions used to raise RuntimeError (pool shut down).
    class PruningStore:
        def __init__(self) -> None:
            self.deleted: list[tuple[str, str | None, int | None]] = []

        def delete(self, run: str, task: str | None = None, seq: int | None = None) -> int:
            self.deleted.append((run, task, seq))
            return 1

    store = PruningStore()
    ckpt = Checkpointing(store, "r", lambda task: 1)  # type: ignore[arg-type]
    ckpt.close()
    ckpt.prune("t", ())
    assert store.deleted == [("r", "t", None)]


def test_a_commit_says_how_long_it_took_from_the_tasks_request_to_the_store(
    tmp_path: Path, monkeypatch: Any
) -> None:
    store, ckpt, directory = committing(tmp_path, monkeypatch)
    requested = (directory / protocol.COMMIT).stat().st_mtime
    time.sleep(0.2)  # the runtime notices the marker late: the wait counts, from the request
    ckpt.scan(time.time())
    time.sleep(0.1)  # and the store is slow
    store.release.set()
    (event,) = take_until(ckpt, 1)
    assert isinstance(event, CheckpointCommitted)
    assert 0.3 <= event.save_s <= event.at - requested + 1e-6
    ckpt.close()


def test_a_marker_older_than_the_runtimes_watch_counts_from_when_it_began_watching(
    tmp_path: Path,
) -> None:
    # A commit left pending across a restart (or a marker stamped by another host's clock)
    # must not count the time before this runtime could see it.
    directory = tmp_path / "checkpoint"
    directory.mkdir()
    protocol.write_atomic(directory / protocol.COMMIT, "")
    mtime = (directory / protocol.COMMIT).stat().st_mtime
    assert protocol.commit_requested_at(directory, mtime + 60, mtime + 50) == mtime + 50
    assert protocol.commit_requested_at(directory, mtime - 5, mtime - 60) == mtime - 5
    assert protocol.commit_requested_at(directory, mtime + 1, mtime - 1) == mtime
    (directory / protocol.COMMIT).unlink()
    assert protocol.commit_requested_at(directory, 7.0, 1.0) == 7.0
