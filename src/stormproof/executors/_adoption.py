"""What earlier shims of the run left behind: attempts this shim adopts instead of running.

When a shim starts, it reads the run's journal (``_files``) once. An attempt a dead shim
launched is either ended (its status is there), or still running (its pid and start time
match a live process: it is adopted, and watched through a pidfd, or by polling where there
is none), or ended while no shim watched: then the dead shim's keeper, its parent now, is
about to journal its status, or has. An adopted attempt that ends is *awaited*: the journal's
tail is read again every ``STATUS_POLL_S`` until its status is there, or until that keeper is
gone (then the attempt is lost: nobody learned its exit code).

Kept apart from ``_shim`` because it is about the past, not about the attempts this shim runs;
``Adoption`` changes the shim only through ``Host``.
"""

from __future__ import annotations

import os
import time
from typing import Protocol

from stormproof.executors._attempt import AttemptRecord, exited_as
from stormproof.executors._files import (
    JournalReader,
    LaunchRecord,
    is_our_process,
    read_exit_status_file,
)
from stormproof.executors._wire import READ, Client, Poller

#: Timer keys (attempt ids are never empty and hold no NUL).
STATUS_TIMER = "\0status"
POLL_TIMER = ""
STATUS_POLL_S = 0.01
STATUS_WAIT_S = 30.0  # a live keeper that journals no status in this long: reported lost
_ADOPTED_POLL_S = 1.0  # liveness polling of adopted processes, only where pidfd_open is missing
_LOST_UNWATCHED = (
    "its process ended while neither its shim nor that shim's keeper was alive, so its exit "
    "status is unknown"
)
_LOST_REBOOT = "the machine restarted while it ran"
_LOST_UNRESOLVED = "its shim died as it started it, and which process it became is unclear"
_DROPPED_UNWATCHED = "its shim died while it waited for its predecessor"


class Host(Protocol):
    """What ``Adoption`` needs of the shim."""

    attempts: dict[str, AttemptRecord]
    poller: Poller

    def send(self, client: Client | None, message: str, hold: bool = False) -> None: ...

    def start_successors(self, pred: AttemptRecord) -> None: ...

    def add_timer(self, due: float, key: str) -> None: ...

    def clear_kill(self, rec: AttemptRecord) -> None: ...


class Adoption:
    """The earlier shims' attempts: read once, adopted on demand, awaited as they end."""

    def __init__(self, journal: str, boot: str, host: Host) -> None:
        self.host = host
        self.boot = boot
        self.journal = JournalReader(journal)
        self.journal.update()
        #: What earlier shims of this run recorded, read before this shim appends.
        self.earlier: dict[str, LaunchRecord] = self.journal.records
        self.polled: set[AttemptRecord] = set()  # adopted processes without a pidfd
        self.awaiting: dict[str, tuple[AttemptRecord, float]] = {}  # ended, no status yet

    def from_disk(self, attempt_id: str, attempt_dir: str) -> AttemptRecord | None:
        """What an earlier shim left behind about an attempt this shim never ran (or ``None``:
        never launched, so the client may submit it)."""
        launch = self.earlier.get(attempt_id)
        if launch is None or launch.not_started:
            return None
        status = launch.status or read_exit_status_file(attempt_dir)
        rec = AttemptRecord(attempt_id, attempt_dir)
        self.host.attempts[attempt_id] = rec
        if status is not None:
            rec.usage = launch.usage
            exited_as(rec, status)
        elif launch.queued:  # held by a shim that died: it never ran, and never will
            rec.end("D", time.time(), _DROPPED_UNWATCHED)
        elif launch.unresolved:
            rec.end("L", time.time(), _LOST_UNRESOLVED)
        else:
            rec.pid, rec.spawned_boottime = launch.pid, launch.spawned_boottime
            rec.started_at, rec.keeper = launch.at, launch.keeper
            if launch.is_alive(self.boot):
                self._adopt(rec)
            elif launch.boot_id != self.boot:
                rec.end("L", time.time(), _LOST_REBOOT)
            else:  # it ended: its keeper may be writing its status right now
                self._await_status(rec)
        return rec

    def _adopt(self, rec: AttemptRecord) -> None:
        """Watch a running process that is not our child: we learn when, not how, it ends."""
        try:
            rec.pidfd = os.pidfd_open(rec.pid)
        except (OSError, AttributeError):
            self.polled.add(rec)
            if len(self.polled) == 1:
                self.host.add_timer(time.monotonic() + _ADOPTED_POLL_S, POLL_TIMER)
            return
        if not is_our_process(rec.pid, rec.spawned_boottime):  # ended before the pidfd opened
            self._adopted_ended(rec)
            return
        self.host.poller.register(rec.pidfd, READ, lambda m: self._adopted_ended(rec))

    def _adopted_ended(self, rec: AttemptRecord) -> None:
        if rec.pidfd >= 0:
            self.host.poller.unregister(rec.pidfd)
            os.close(rec.pidfd)
            rec.pidfd = -1
        self.polled.discard(rec)
        self.host.clear_kill(rec)
        self._await_status(rec)

    def _await_status(self, rec: AttemptRecord) -> None:
        """An adopted attempt ended. Its parent, the dead shim's keeper, learned its status
        and journals it: look for it until it is there, or until that keeper is gone."""
        if rec.final is not None:
            return
        self.awaiting[rec.attempt_id] = (rec, time.monotonic() + STATUS_WAIT_S)
        self.look_for_statuses()

    def look_for_statuses(self) -> None:
        # Whether each keeper lives is asked *before* the journal is read: a keeper writes
        # what it owes, then exits, so one gone before the read has written all it will.
        alive = {
            aid: rec.keeper is not None and rec.keeper.is_alive()
            for aid, (rec, _) in self.awaiting.items()
        }
        self.journal.update()
        now = time.monotonic()
        for aid, (rec, deadline) in list(self.awaiting.items()):
            found = self.journal.records.get(aid)
            status = found.status if found is not None else None
            if status is None and alive.get(aid, False) and now < deadline:
                continue
            del self.awaiting[aid]
            if status is not None:
                rec.usage = found.usage if found is not None else None
                self.host.send(rec.owner, exited_as(rec, status))
            else:
                self.host.send(rec.owner, rec.end("L", time.time(), _LOST_UNWATCHED))
            self.host.start_successors(rec)
        if self.awaiting:
            self.host.add_timer(now + STATUS_POLL_S, STATUS_TIMER)

    def poll_adopted(self) -> None:
        for rec in list(self.polled):
            if not is_our_process(rec.pid, rec.spawned_boottime):
                self._adopted_ended(rec)
        if self.polled:
            self.host.add_timer(time.monotonic() + _ADOPTED_POLL_S, POLL_TIMER)
