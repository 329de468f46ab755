"""Live progress for ``run``/``resume``: done/running/failed/waiting per stage, elapsed, attempts.

On a terminal it is a rich table redrawn a few times a second; anywhere else
(CI, a pipe, a log file) it prints one line per task outcome and a heartbeat
every 30 s, so logs stay readable. Counters are updated from the core's notes
in O(1) per decision: a 10,000-task run must not pay for its display.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from stormproof.core.decisions import (
    AttemptEnded,
    Decision,
    LaunchAttempt,
    TaskEnded,
    TaskReady,
    TaskRetrying,
)
from stormproof.core.machine import Workflow
from stormproof.core.states import TaskState
from stormproof.plan.graph import Dag
from stormproof.runtime.home import Home
from stormproof.runtime.runs import RunContext

COLUMNS = ("waiting", "running", "succeeded", "failed", "other")
#: How a task's state in the core shows (skipped and cancelled count as "other").
_SHOWN_AS = {
    TaskState.WAITING: "waiting",
    TaskState.READY: "waiting",
    TaskState.BACKOFF: "waiting",
    TaskState.RUNNING: "running",
}
#: Running attempts shown with their last line of output (more would not fit a screen).
SHOWN_RUNNING = 8


def last_line(path: Path, max_bytes: int = 512) -> str:
    """The last non-empty line a task printed, read from the end of its log (cheap)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in tail.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1].strip()[:80] if lines else ""


class NullProgress:
    def __enter__(self) -> NullProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def on_decisions(self, decisions: Sequence[Decision], now: float) -> None:
        return None

    def tick(self, now: float) -> None:
        return None

    def resumed(self, core: Workflow) -> None:
        return None


class LiveProgress:
    def __init__(self, ctx: RunContext, console: Console, home: Home | None = None) -> None:
        self.ctx = ctx
        self.console = console
        self.running: dict[str, tuple[str, int, float]] = {}  # attempt -> task, number, since
        self.home = home
        dag = Dag.from_spec(ctx.spec)
        self.stage_of = {tid: dag.level[i] for i, tid in enumerate(dag.ids)}
        self.stages = max(dag.level, default=0) + 1
        self.names = [""] * self.stages
        for t in ctx.spec.tasks:
            lvl = self.stage_of[t.id]
            if len(self.names[lvl]) < 40:
                self.names[lvl] = (self.names[lvl] + ", " if self.names[lvl] else "") + t.id
        self.counts = [dict.fromkeys(COLUMNS, 0) for _ in range(self.stages)]
        for lvl in self.stage_of.values():
            self.counts[lvl]["waiting"] += 1
        self.state = dict.fromkeys(self.stage_of, "waiting")
        self.attempts = 0
        self.retries = 0
        self.started = time.time()
        self.last_beat = self.started
        self.live: Live | None = None

    # -------------------------------------------------------------- context
    def __enter__(self) -> LiveProgress:
        if self.console.is_terminal:
            self.live = Live(
                get_renderable=self.table,
                console=self.console,
                refresh_per_second=4,
                transient=False,
            )
            self.live.__enter__()
        else:
            self.console.print(f"run {escape(self.ctx.name)}: {len(self.state)} tasks")
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live is not None:
            self.live.__exit__(et, e, tb)
        else:
            self.console.print(self.summary())

    # -------------------------------------------------------------- updates
    def _move(self, task_id: str, new: str) -> None:
        col_new = new if new in COLUMNS else "other"
        old = self.state[task_id]
        col_old = old if old in COLUMNS else "other"
        self.state[task_id] = new
        lvl = self.stage_of[task_id]
        self.counts[lvl][col_old] -= 1
        self.counts[lvl][col_new] += 1

    def resumed(self, core: Workflow) -> None:
        """Start from where the run's history left it: a resumed run's finished tasks are not
        shown waiting, nor its attempts uncounted (the replay decides nothing new to report)."""
        for task in core.tasks:
            self._move(task.id, _SHOWN_AS.get(core.state[task.index], core.state[task.index].value))
        self.attempts = sum(core.attempts_made)
        self.retries = sum(max(0, n - 1) for n in core.attempts_made)  # beyond each first
        for att in core.attempts.values():
            self.running[att.id] = (core.tasks[att.task].id, att.number, att.launched_at)

    def on_decisions(self, decisions: Sequence[Decision], now: float) -> None:
        plain = self.live is None
        for d in decisions:
            if isinstance(d, LaunchAttempt):
                self.attempts += 1
                self._move(d.task_id, "running")
                self.running[d.attempt_id] = (d.task_id, d.number, now)
            elif isinstance(d, (TaskReady, TaskRetrying)):
                self._move(d.task_id, "waiting")
                if isinstance(d, TaskRetrying):
                    self.retries += 1
            elif isinstance(d, TaskEnded):
                self._move(d.task_id, d.state)
                if plain and d.state != "succeeded":
                    why = f" ({d.error})" if d.error else ""
                    self.console.print(f"  {d.task_id}: {d.state}{why} — {escape(d.reason)}")
            elif isinstance(d, AttemptEnded):
                self.running.pop(d.attempt_id, None)
                if plain and d.state != "succeeded":
                    self.console.print(f"  {d.attempt_id}: {d.state} — {escape(d.reason)}")

    def tick(self, now: float) -> None:
        if self.live is None and now - self.last_beat >= 30:
            self.last_beat = now
            self.console.print(self.summary())

    # -------------------------------------------------------------- views
    def summary(self) -> str:
        total = dict.fromkeys(COLUMNS, 0)
        for c in self.counts:
            for k, v in c.items():
                total[k] += v
        elapsed = time.time() - self.started
        parts = ", ".join(f"{v} {k}" for k, v in total.items() if v)
        return f"[{elapsed:6.1f}s] {parts}; {self.attempts} attempts, {self.retries} retries"

    def table(self) -> RenderableType:
        if not self.running or self.home is None:
            return self.stages_table()
        return Group(self.stages_table(), self.running_table())

    def running_table(self) -> Table:
        assert self.home is not None
        t = Table(box=None, show_header=True, header_style="dim")
        t.add_column("running")
        t.add_column("for", justify="right")
        t.add_column("last output", overflow="ellipsis", no_wrap=True)
        now = time.time()
        for attempt_id, (task, number, since) in list(self.running.items())[:SHOWN_RUNNING]:
            out = last_line(self.home.attempt_dir(self.ctx.name, task, number) / "stdout.log")
            t.add_row(escape(attempt_id), f"{now - since:.0f}s", escape(out))
        if len(self.running) > SHOWN_RUNNING:
            t.add_row(f"… {len(self.running) - SHOWN_RUNNING} more", "", "")
        return t

    def stages_table(self) -> Table:
        elapsed = time.time() - self.started
        t = Table(
            title=f"{escape(self.ctx.name)} · {elapsed:.0f}s · {self.attempts} attempts"
            + (f" · {self.retries} retries" if self.retries else ""),
            title_justify="left",
        )
        t.add_column("stage", justify="right")
        t.add_column("tasks")
        for col, style in zip(COLUMNS, ("dim", "cyan", "green", "red", "yellow"), strict=True):
            t.add_column(col, justify="right", style=style)
        for lvl in range(self.stages):
            c = self.counts[lvl]
            t.add_row(str(lvl + 1), escape(self.names[lvl]), *(str(c[k]) for k in COLUMNS))
        return t
