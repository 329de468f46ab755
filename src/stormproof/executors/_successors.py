"""Successors the shim holds until their predecessor ends (a submit with ``after``).

A submit with ``after`` whose predecessor is still alive here is *held*: its logs are opened
and a ``Q`` line goes to the journal, but it starts only when the predecessor ends (its exit
status journaled and its event queued, then the spawn, announced by its ``I`` line first:
both events go out in one flush). A predecessor that already ended, or that this shim does
not know, lets it start at once. A held successor that is killed or dropped (``drop``), or
whose predecessor was dropped, ends ``D`` without having run; so does one whose shim died
while holding it (the next shim finds its ``Q`` line and no ``I`` after it; with an ``I``,
the keeper says what became of it).

Why the shim holds them: a successor then starts the moment its predecessor is reaped, with
no round trip through the orchestrator in between (``core/successors.py`` decides which tasks
queue, and behind what). Kept apart from ``_shim`` because it is one feature with its own
bookkeeping (``waiting``); ``HeldSuccessors`` acts on the shim only through ``Host``.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from typing import Any, Protocol

from stormproof.executors._attempt import AttemptRecord
from stormproof.executors._files import journal_queued_line
from stormproof.executors._spawn import Refused, open_logs
from stormproof.executors._wire import Client


class Host(Protocol):
    """What ``HeldSuccessors`` needs of the shim."""

    attempts: dict[str, AttemptRecord]

    def send(self, client: Client | None, message: str, hold: bool = False) -> None: ...

    def journal(self, line: bytes, later: bool = False) -> None: ...

    def start(
        self,
        rec: AttemptRecord,
        command: Any,
        env: dict[str, str],
        logs: tuple[int, int] | Refused,
    ) -> None: ...

    def log(self, message: str) -> None: ...


class HeldSuccessors:
    """The successors waiting for a predecessor, by the predecessor's attempt id."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.waiting: dict[str, list[AttemptRecord]] = {}  # predecessor id -> held successors

    def hold(
        self,
        client: Client,
        attempt_id: str,
        attempt_dir: str,
        command: Any,
        env: dict[str, str],
        memory_limit: int,
        pred: AttemptRecord,
    ) -> None:
        """Keep a successor until ``pred`` ends; everything but the spawn is done now."""
        logs = open_logs(attempt_dir)
        rec = AttemptRecord(attempt_id, attempt_dir, owner=client, memory_limit=memory_limit)
        self.host.attempts[attempt_id] = rec
        if isinstance(logs, Refused):
            self.host.send(client, rec.end("F", logs.at, logs.message))
            return
        rec.held, rec.after = (command, env, logs), pred.attempt_id
        self.waiting.setdefault(pred.attempt_id, []).append(rec)
        self.host.journal(journal_queued_line(rec.id_json))

    def start_after(self, pred: AttemptRecord) -> None:
        """``pred`` ended: start what waited for it (it has sent its own final event)."""
        for rec in self.waiting.pop(pred.attempt_id, ()):
            if rec.held is None:
                continue
            command, env, logs = rec.held
            rec.held = None
            try:
                self.host.start(rec, command, env, logs)
            except Exception as exc:  # the orchestrator must hear of this attempt
                self.host.log(f"{rec.attempt_id}: launch failed:\n{traceback.format_exc()}")
                if rec.final is None and not rec.pid:
                    self.host.send(rec.owner, rec.end("F", time.time(), f"cannot start: {exc!r}"))

    def drop(self, rec: AttemptRecord, reason: str) -> None:
        """A held successor ends without having run; so does what waited behind it."""
        if rec.held is None:
            return
        _, _, (out_fd, err_fd) = rec.held
        rec.held = None
        for fd in (out_fd, err_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        held = self.waiting.get(rec.after)
        if held is not None and rec in held:
            held.remove(rec)
            if not held:
                del self.waiting[rec.after]
        self.host.send(rec.owner, rec.end("D", time.time(), reason))
        for behind in list(self.waiting.pop(rec.attempt_id, ())):
            self.drop(behind, f"{rec.attempt_id}, which it waited for, was dropped")

    def drop_all(self, reason: str) -> None:
        """Drop every held successor (the driver stops: none may start with nobody watching)."""
        for held in list(self.waiting.values()):
            for rec in held:
                if rec.held is not None:
                    self.drop(rec, reason)
