"""Commands that follow a run as it goes: ``logs -f`` and ``status --watch`` without a terminal.

Both read the run's log incrementally (``EventLog.read(run, after_seq)``) from another
process than the one that drives the run, so they never slow it down or change it.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rich.console import Console

from stormproof.errors import StormproofError
from stormproof.runtime.home import Home
from stormproof.runtime.view_query import shown_state
from stormproof.runtime.view_store import whole_view

from .history_text import iso_time
from .session import Session

#: How often a follower looks for new output and news in the log.
POLL_S = 0.2


@dataclass
class _Followed:
    """One attempt's two logs, read from where the last poll stopped."""

    number: int
    folder: Path
    offsets: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})

    def drain(self, home: Home, streams: tuple[str, ...], out: TextIO) -> None:
        for which in streams:
            path = self.folder / f"{which}.log"
            try:  # a link planted in the home is refused, not followed (``Home.open_inside``)
                with os.fdopen(home.open_inside(path), "rb") as fh:
                    fh.seek(self.offsets[which])
                    chunk = fh.read()
            except FileNotFoundError:
                continue
            if chunk:
                self.offsets[which] += len(chunk)
                out.write(chunk.decode(errors="replace"))
                out.flush()


def follow_logs(
    s: Session, name: str, task: str, number: int | None, stream: str, console: Console
) -> None:
    """Print the attempt's output as it is written, until it ends; without ``--attempt``,
    go on with the task's next attempt while it retries, until the task ends."""
    streams = ("stdout", "stderr") if stream == "both" else (stream,)
    seq, attempts, final = 0, _TaskNews(task), False
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
                    current.drain(s.home, streams, sys.stdout)
                if wanted is not None and wanted in attempts.launched:
                    current = _Followed(wanted, s.home.attempt_dir(name, task, wanted))
                    console.print(f"[dim]── {task}/{wanted} ({current.folder}) ──[/]")
            if current is not None:
                current.drain(s.home, streams, sys.stdout)
                done = current.number in attempts.ended
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
            current.drain(s.home, streams, sys.stdout)


class _TaskNews:
    """What the log says of one task's attempts, fed row by row."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.launched: set[int] = set()
        self.ended: set[int] = set()
        self.last: int | None = None
        self.task_ended = False
        self.run_ended = False

    def take(self, kind: str, data: dict[str, object]) -> None:
        if kind == "RunFinished":
            self.run_ended = True
        elif kind == "RunRedriven":
            self.run_ended = self.task_ended = False
        if data.get("task_id") != self.task:
            return
        if kind == "LaunchAttempt":
            number = int(str(data["number"]))
            self.launched.add(number)
            self.last = number
            self.task_ended = False
        elif kind == "AttemptEnded":
            self.ended.add(int(str(data["attempt_id"]).rsplit("/", 1)[1]))
        elif kind == "TaskEnded":
            self.task_ended = True


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
