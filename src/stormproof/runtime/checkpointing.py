"""The runtime's side of checkpoints: notice commits, save, restore, prune — off the loop thread.

The core decides *which* checkpoint to restore and *when* to ask or prune;
this module does the I/O, on a small worker pool, because copying a 1 GiB
checkpoint must never stall the driver loop (timers, other attempts, Ctrl-C).
Results come back as events through ``take_events`` and are logged like any
other event before anything depends on them:

* a commit marker (``.commit``) in a live attempt's checkpoint dir starts a
  save; when it is in the store (manifest written last) the result is a
  ``CheckpointCommitted`` event, and only *after* that event is committed does
  the task hear "saved" (``finish_commit``): a crash in between loses a
  checkpoint the log does not know, never one it claims;
* an attempt that ends with a commit still pending (SIGTERM in the grace
  period, then exit) has its exit *held* until the save finished, so the
  retry the exit causes can restore that very checkpoint;
* a launch with ``restore_from`` restores the newest candidate that verifies
  before the attempt is submitted; each one skipped is a ``CheckpointCorrupt``
  event, and ``CheckpointRestored`` says what the attempt starts from;
* the store gone (the server down, the network cut, its disk full) is not a
  failed checkpoint: ``fault`` says why, the driver stops the run, and
  nothing is lost. A commit being saved stays pending (its marker stays, the
  task waits), an attempt whose end was held stays unreported, a launch
  waiting for its restore is not submitted: ``resume`` does each again.
"""

from __future__ import annotations

import queue
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from stormproof.checkpoints import protocol
from stormproof.core.events import (
    CheckpointCommitted,
    CheckpointCorrupt,
    CheckpointRestored,
    Event,
)
from stormproof.executors.base import AttemptJob

if TYPE_CHECKING:  # the store module pulls in fsspec; only its type is needed here
    from stormproof.checkpoints.base import CheckpointStore

#: How often live checkpoint dirs are looked at for a commit marker.
SCAN_EVERY_S = 0.25
#: How often old checkpoints are moved from the warm to the cold tier (when one is set).
COLD_EVERY_S = 60.0


@dataclass
class _Live:
    job: AttemptJob
    saving: bool = False
    #: When this runtime began watching the attempt: no commit it saves was asked for sooner.
    watched_from: float = field(default_factory=time.time)


@dataclass(frozen=True)
class _Done:
    """What a worker finished. Workers only report; all state changes on the loop thread."""

    events: list[Event]
    after_commit: Callable[[], None] | None = None  # tell the task, once the log has it
    job: AttemptJob | None = None  # restored, ready to submit
    saved: _Live | None = None  # the attempt whose save ended (held end may go now)
    fault: str | None = None  # the store is unreachable: the run must stop


@dataclass
class Checkpointing:
    store: CheckpointStore
    run: str
    next_seq: Callable[[str], int]
    workers: int = 2
    _live: dict[str, _Live] = field(default_factory=dict)
    _held: dict[str, Event] = field(default_factory=dict)
    _assigned: dict[str, int] = field(default_factory=dict)
    _results: queue.SimpleQueue[_Done] = field(default_factory=queue.SimpleQueue)
    _after_commit: list[Callable[[], None]] = field(default_factory=list)
    _pending: int = 0
    _last_scan: float = 0.0
    _last_cold: float = 0.0
    #: Why the store cannot be used now (unreachable, full); the driver stops the run on it.
    fault: str | None = None
    _closed: bool = False

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="stormproof-ckpt")

    # ------------------------------------------------------------------ launches
    def adopt(self, job: AttemptJob) -> None:
        """Watch an attempt that was running before a restart (adopted, not relaunched)."""
        self._live[job.attempt_id] = _Live(job)

    def launch(
        self,
        job: AttemptJob,
        restore_from: tuple[int, ...],
        submit: Callable[[AttemptJob], None],
    ) -> None:
        """Give the attempt its checkpoint dir; restore first if the core offered candidates."""
        ckpt = self._dir(job)
        if not restore_from:
            ckpt.mkdir(parents=True, exist_ok=True)
            self._live[job.attempt_id] = _Live(job)
            submit(job)
            return
        self._pending += 1
        self._pool.submit(self._restore, job, restore_from)

    def _restore(self, job: AttemptJob, candidates: tuple[int, ...]) -> None:
        ckpt = job.attempt_dir / "checkpoint"
        events: list[Event] = []
        try:
            manifest, skipped = self.store.restore_newest(self.run, job.task_id, ckpt, candidates)
            now = time.time()
            events += [CheckpointCorrupt(now, job.task_id, seq, why) for seq, why in skipped]
            seq = manifest.seq if manifest is not None else 0
        except Exception as exc:
            if _unreachable(exc):  # wait for the store rather than throw its progress away
                why = f"the checkpoint store is unreachable ({exc}): {job.attempt_id} waits"
                self._results.put(_Done([], fault=why))
                return
            # the store failed otherwise: start fresh rather than not at all
            _warn(f"{job.attempt_id}: could not restore a checkpoint ({exc}); starting fresh")
            seq = 0
        ckpt.mkdir(parents=True, exist_ok=True)
        env = dict(job.env)
        if seq:
            env[protocol.ENV_RESTORED] = "1"
            env[protocol.ENV_CHECKPOINT_SEQ] = str(seq)
        events.append(CheckpointRestored(time.time(), job.attempt_id, seq))
        self._results.put(_Done(events, job=replace(job, env=env)))

    # ------------------------------------------------------------------ commits
    def scan(self, now: float) -> None:
        """Start a save for every live attempt whose task left a commit marker."""
        if now - self._last_scan < SCAN_EVERY_S:
            return
        self._last_scan = now
        if now - self._last_cold >= COLD_EVERY_S:
            self._last_cold = now
            self._pool.submit(self._move_cold, now)
        for live in self._live.values():
            if not live.saving and protocol.pending_commit(self._dir(live.job)) is not None:
                self._start_save(live)

    def on_attempt_end(self, attempt_id: str, event: Event) -> bool:
        """Hold an attempt's end while its last commit is saved; True if the event is held."""
        live = self._live.pop(attempt_id, None)
        if live is None:
            return False
        pending = protocol.pending_commit(self._dir(live.job)) is not None
        if not live.saving and not pending:
            return False
        self._held[attempt_id] = event
        if not live.saving:
            self._start_save(live)
        return True

    def _start_save(self, live: _Live) -> None:
        live.saving = True
        task = live.job.task_id
        seq = max(self.next_seq(task), self._assigned.get(task, 0) + 1)
        self._assigned[task] = seq
        self._pending += 1
        ckpt = self._dir(live.job)
        requested_at = protocol.commit_requested_at(ckpt, time.time(), live.watched_from)
        self._pool.submit(self._save, live, seq, requested_at)

    def _save(self, live: _Live, seq: int, requested_at: float) -> None:
        """Copy the committed checkpoint to the store; the event says how long it took from
        the task's request (``CheckpointCommitted.save_s``), waiting for a worker included."""
        job = live.job
        ckpt = self._dir(job)
        try:
            manifest = self.store.save(self.run, job.task_id, job.number, seq, ckpt, time.time())
        except Exception as exc:
            error = f"checkpoint {seq} of {job.attempt_id} was not saved: {exc}"
            if _unreachable(exc):  # keep the commit pending: resume saves it again
                self._results.put(
                    _Done([], saved=live, fault=f"the checkpoint store is unreachable: {error}")
                )
                return
            _warn(error)

            def failed() -> None:
                protocol.finish_commit(ckpt, protocol.CommitResult.failed(error))

            self._results.put(_Done([], failed, saved=live))
            return
        done_at = time.time()
        event = CheckpointCommitted(
            done_at,
            job.attempt_id,
            seq,
            len(manifest.files),
            manifest.total_bytes,
            save_s=max(0.0, done_at - requested_at),
        )

        def saved() -> None:
            protocol.finish_commit(ckpt, protocol.CommitResult.saved(seq))

        self._results.put(_Done([event], saved, saved=live))

    # ------------------------------------------------------------------ the loop's side
    def take(self) -> tuple[list[Event], list[AttemptJob]]:
        """Events that finished work produced, and jobs now ready to submit (restored)."""
        events: list[Event] = []
        jobs: list[AttemptJob] = []
        while True:
            try:
                done = self._results.get_nowait()
            except queue.Empty:
                break
            self._pending -= 1
            events += done.events
            if done.after_commit is not None:
                self._after_commit.append(done.after_commit)
            if done.job is not None:
                self._live[done.job.attempt_id] = _Live(done.job)
                jobs.append(done.job)
            if done.fault is not None:
                self.fault = self.fault or done.fault
                if done.saved is not None:  # not saved: not saving either, but nothing resumes
                    done.saved.saving = True  # ... a save now (its end, if held, stays held)
                continue
            if done.saved is not None:
                done.saved.saving = False
                held = self._held.pop(done.saved.job.attempt_id, None)
                if held is not None:
                    events.append(held)  # after its CheckpointCommitted: the retry restores it
        return events, jobs

    def after_flush(self) -> None:
        """Tell tasks their commits are saved — only once the log says so."""
        callbacks, self._after_commit = self._after_commit, []
        for cb in callbacks:
            cb()

    @property
    def busy(self) -> bool:
        return self._pending > 0 or bool(self._held)

    def request(self, attempt_id: str) -> Path | None:
        """Leave the request file; None (and no signal) while a commit is still being saved."""
        live = self._live.get(attempt_id)
        if live is None or live.saving or protocol.pending_commit(self._dir(live.job)) is not None:
            return None
        ckpt = self._dir(live.job)
        protocol.request_checkpoint(ckpt)
        return ckpt

    def prune(self, task_id: str, keep: tuple[int, ...]) -> None:
        if self._closed:  # decided while the driver drains (its last events): prune now
            self._prune(task_id, keep)
            return
        self._pool.submit(self._prune, task_id, keep)

    def _prune(self, task_id: str, keep: tuple[int, ...]) -> None:
        try:
            if not keep:
                self.store.delete(self.run, task_id)
                return
            # Only older ones: a batch backend reports several commits at once (AWS Batch,
            # from the agent's status), and an earlier prune must not take a later seq.
            newest_kept = max(keep)
            for info in self.store.list(self.run, task_id):
                if info.seq not in keep and info.seq < newest_kept:
                    self.store.delete(self.run, task_id, info.seq)
        except Exception as exc:
            _warn(f"pruning checkpoints of {task_id} failed: {exc}")

    def _move_cold(self, now: float) -> None:
        move = getattr(self.store, "move_cold", None)  # only a tiered store has tiers
        if move is None:
            return
        try:
            move(now)
        except Exception as exc:
            _warn(f"moving old checkpoints to the cold tier failed: {exc}")
        for warning in getattr(self.store, "warnings", []):
            _warn(warning)
        if hasattr(self.store, "warnings"):
            self.store.warnings.clear()

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True)

    @staticmethod
    def _dir(job: AttemptJob) -> Path:
        return job.attempt_dir / "checkpoint"


def _unreachable(exc: BaseException) -> bool:
    from stormproof.checkpoints._errors import store_unreachable  # fsspec: only when it failed

    return store_unreachable(exc)


def _warn(message: str) -> None:
    print(f"stormproof: {message}", file=sys.stderr)
