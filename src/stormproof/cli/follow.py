"""Commands that follow a run as it goes: ``logs -f`` and ``status --watch`` without a terminal.

Both read the run's log incrementally (``EventLog.read(run, after_seq)``) from another
process than the one that drives the run, so they never slow it down or change it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from rich.console import Console
from rich.markup import escape

from stormproof.errors import StormproofError
from stormproof.runtime.attempt_logs import STREAMS, AttemptLogs
from stormproof.runtime.view_query import shown_state
from stormproof.runtime.view_store import whole_view

from .history_text import iso_time
from .log_places import LogPlaces, TaskAttempts
from .session import Session

#: How often a follower looks for new output and news in the log.
POLL_S = 0.2


@dataclass
class _Followed:
    """One attempt's two logs, read from where the last read stopped, every ``poll_s``."""

    number: int
    logs: AttemptLogs
    shown: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))
    next_read: float = 0.0
    #: The attempt ended and was read once more since.
    ended: bool = False

    def drain(self, streams: tuple[str, ...], out: TextIO, force: bool = False) -> None:
        """Print what is new (``force``: now, else only once ``poll_s`` has passed)."""
        if not force and time.monotonic() < self.next_read:
            return
        self.next_read = time.monotonic() + self.logs.poll_s
        for which in streams:
            chunk = self.logs.read(which, self.shown[which])
            if chunk is None:
                continue
            self.shown[which] = chunk.shown
            if chunk.data:
                out.write(chunk.data.decode(errors="replace"))
                out.flush()


def follow_logs(
    s: Session, name: str, task: str, number: int | None, stream: str, console: Console
) -> None:
    """Print the attempt's output as it is written, until it ends; without ``--attempt``,
    go on with the task's next attempt while it retries, until the task ends."""
    streams = STREAMS if stream == "both" else (stream,)
    places = LogPlaces.of(s, name)
    seq, attempts, final = 0, TaskAttempts(task), False
    current: _Followed | None = None
    told = False
    try:
        while True:
            for row in s.store.read(name, seq):
                seq = row.seq
                attempts.take(row.kind, row.data)
            final = attempts.task_ended or attempts.run_ended
            wanted = number if number is not None else attempts.last
            if current is None or (wanted is not None and wanted != current.number):
                if current is not None:
                    current.drain(streams, sys.stdout, force=True)
                if wanted is not None and wanted in attempts.launched:
                    current = _Followed(wanted, places.logs(task, wanted))
                    where = escape(current.logs.where)
                    console.print(f"[dim]── {task}/{wanted} ({where}) ──[/]")
            if current is not None:
                done = current.number in attempts.ended
                current.drain(streams, sys.stdout, force=done and not current.ended)
                current.ended = done  # read once more at its end (all is uploaded by then)
                if done and (number is not None or final):
                    return
            elif final:
                raise StormproofError(f"task {task!r} of run {name!r} ended without an attempt")
            if not told and not s.store.is_driven(name) and not final:
                told = True
                console.print(
                    f"[dim](no orchestrator drives {name} now: following until Ctrl-C)[/]"
                )
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        if current is not None:
            current.drain(streams, sys.stdout, force=True)


def watch_lines(s: Session, name: str, console: Console) -> None:
    """``status --watch`` without a terminal: one line per change of a task's or the run's
    state, stamped with when it happened, until the run ends."""
    view = whole_view(s.store, s.store.get_run(name), s.writable)  # every task: lines name them
    view.state = shown_state(view, s.store.is_driven(name))
    counts = ", ".join(f"{n} {k}" for k, n in sorted(view.counts().items()))
    console.print(f"{iso_time(time.time())} {name} {view.state}: {counts}")
    while view.state in ("running", "stopped"):
        if view.state == "stopped" and not s.store.is_driven(name):
            return
        for row in list(s.store.read(name, view.last_seq)):
            task = view.tasks.get(str(row.data.get("task_id", "")))
            before = task.state if task is not None else None
            view.apply([row])
            if task is not None and task.state != before:
                console.print(f"{iso_time(row.at)} {name} {task.id}: {before} -> {task.state}")
            if row.kind == "RunFinished":
                counts = ", ".join(f"{n} {k}" for k, n in sorted(view.counts().items()))
                console.print(f"{iso_time(row.at)} {name} {view.state}: {counts}")
                return
        time.sleep(POLL_S)
