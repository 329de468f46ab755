"""Tables for ``status``, ``history`` and ``logs``: reading a run, never changing it."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from stormproof.core.machine import Cost
from stormproof.errors import StormproofError
from stormproof.runtime.view import (
    RunView,
    attempt_cost,
    cost_json,
    run_summary_json,
    shown_state,
    view_for_run,
)
from stormproof.store.base import Row, RunInfo

from .history_text import about_task, iso_time, row_details
from .session import Session

STATE_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "running": "cyan",
    "cancelled": "yellow",
    "skipped": "dim",
    "stopped": "yellow",
    "timed_out": "red",
    "lost": "magenta",
    "backoff": "yellow",
}


def _styled(state: str) -> str:
    style = STATE_STYLE.get(state)
    return f"[{style}]{state}[/]" if style else state


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _took(start: float | None, end: float | None) -> str:
    if start is None:
        return "-"
    return f"{(end or time.time()) - start:.1f}s"


def run_view(s: Session, name: str, info: RunInfo | None = None) -> RunView:
    info = info if info is not None else s.store.get_run(name)
    view = view_for_run(info).apply(s.store.read(name))
    view.state = shown_state(view, s.store.is_driven(name))
    return view


def render_runs(s: Session, console: Console, as_json: bool) -> None:
    runs = s.store.list_runs()
    rows = []
    for info in runs:
        view = run_view(s, info.name, info)
        c = view.counts()
        rows.append((info, view, c))
    if as_json:
        now = time.time()
        print(json.dumps([run_summary_json(i, v, now) for i, v, _ in rows], indent=2))
        return
    if not rows:
        console.print(f"no runs in {s.store_place} yet; start one with `stormproof run FILE`")
        return
    t = Table(title=f"runs in {escape(s.store_place)}", title_justify="left")
    for col in ("name", "workflow", "state", "created", "tasks"):
        t.add_column(col)
    for info, view, c in rows:
        total = sum(c.values())
        t.add_row(
            escape(info.name),
            escape(info.workflow_name),
            _styled(view.state),
            _when(info.created_at),
            f"{c.get('succeeded', 0)}/{total} done",
        )
    console.print(t)


def run_table(view: RunView) -> Table:
    counts = ", ".join(f"{v} {k}" for k, v in sorted(view.counts().items()))
    t = Table(
        title=f"{escape(view.name)} ({escape(view.workflow)}) · {_styled(view.state)} · "
        f"{_took(view.started, view.ended)} · {counts}",
        title_justify="left",
    )
    # Task ids are kept whole (people copy them into `logs`); only the prose column folds.
    longest = max((len(task) for task in view.tasks), default=4)
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("task", no_wrap=True, min_width=min(longest, 40))
    t.add_column("state", no_wrap=True)
    t.add_column("tries", justify="right", no_wrap=True)
    t.add_column("last attempt", min_width=9)
    if view.instances:
        t.add_column("where", no_wrap=True)
    t.add_column("took", justify="right", no_wrap=True)
    t.add_column("cpu · peak", justify="right", no_wrap=True)
    t.add_column("error / why", overflow="fold", ratio=1, min_width=12)
    for task in view.tasks.values():
        last = task.attempts[-1] if task.attempts else None
        detail = task.error or ""
        if task.state not in ("succeeded", "running", "waiting", "ready") and task.reason:
            detail = f"{detail}: {task.reason}" if detail else task.reason
        if task.state == "backoff" and task.retry_at is not None:
            detail = (
                f"{retry_words(task.retry_at)}; {detail}" if detail else retry_words(task.retry_at)
            )
        used = task.budgets()
        tries = str(sum(1 for a in task.attempts if a.state != "dropped"))  # never started
        if used["interruptions"]:
            tries += f" ({used['interruptions']} int.)"
        cells = [
            str(task.stage + 1),
            escape(task.id),
            _styled(task.state),
            tries,
            "-"
            if last is None
            else _styled(last.state)
            + (f" (exit {last.exit_code})" if last.exit_code not in (None, 0) else ""),
        ]
        if view.instances:
            where = "-" if last is None else ",".join(last.instances)
            cells.append(
                escape(where) + (" [dim]od[/]" if last and last.market == "on_demand" else "")
            )
        cells += ["-" if last is None else _took(last.started, last.ended)]
        cells += ["-" if last is None else usage_text(last.cpu_s, last.max_rss_mib)]
        cells += [escape(detail)]
        t.add_row(*cells)
    return t


def retry_words(at: float, now: float | None = None) -> str:
    """``retries at 14:05:07 (in 42s)``: when a task in backoff is tried again."""
    left = at - (time.time() if now is None else now)
    when = datetime.fromtimestamp(at).strftime("%H:%M:%S")
    return f"retries at {when} (in {left:.0f}s)" if left > 0 else f"retries now (due {when})"


def usage_text(cpu_s: float | None, max_rss_mib: float | None) -> str:
    """An attempt's CPU time and peak memory, "—" for what its backend did not measure."""
    cpu = "—" if cpu_s is None else f"{cpu_s:.1f}s"
    peak = "—" if max_rss_mib is None else f"{max_rss_mib:.0f}MiB"
    return f"{cpu} · {peak}"


def resources_line(view: RunView) -> str:
    """The run's CPU seconds (every measured attempt) and its largest peak memory."""
    r = view.resources()
    return f"cpu {usage_text(r['cpu_s'], r['max_rss_mib'])} (peak of one attempt)"


def cost_text(c: Cost) -> str:
    return (
        f"cost ${c.spent:.4f} · all on-demand ${c.on_demand_equivalent:.4f} · "
        f"saved ${c.saved:.4f} · wasted ${c.wasted:.4f} ({c.wasted_s:.0f}s)"
    )


def cost_line(view: RunView, now: float) -> str:
    """One line of money: spent, saved against all-on-demand, and lost to interruptions."""
    text = cost_text(view.cost(view.ended if view.ended is not None else now))
    if taken := view.interruptions():
        text += f" · {taken} interruption(s)"
    return text


def breaker_line(view: RunView) -> str | None:
    if not view.breakers:
        return None
    parts = [f"{escape(pool)} {b['state']}" for pool, b in sorted(view.breakers.items())]
    return "breakers: " + ", ".join(parts)


def jobs_line(view: RunView) -> str | None:
    """Delegated pools: the run's jobs placed or running in each, of its ``max_jobs``."""
    if not view.delegated:
        return None
    parts = [f"{escape(p)} {view.outstanding(p)}/{n}" for p, n in sorted(view.delegated.items())]
    return "jobs (the batch system picks the nodes): " + ", ".join(parts)


def render_run(view: RunView, console: Console) -> None:
    console.print(run_table(view))
    console.print(cost_line(view, time.time()))
    console.print(resources_line(view))
    for line in (breaker_line(view), jobs_line(view)):
        if line:
            console.print(line)


def watch_run(s: Session, name: str, console: Console) -> None:
    if not console.is_terminal:  # a log file or a CI job: a line per change, no redraws
        from .follow import watch_lines

        watch_lines(s, name, console)
        return
    view = run_view(s, name)
    try:
        with Live(run_table(view), console=console, refresh_per_second=2) as live:
            while view.state in ("running", "stopped") and (
                view.state == "running" or s.store.is_driven(name)
            ):
                time.sleep(1.0)
                view = run_view(s, name)
                live.update(run_table(view))
    except KeyboardInterrupt:
        pass


def history_json(rows: list[Row]) -> list[dict[str, Any]]:
    """The log as JSON, with ``cost`` (as in ``status --json``) where money was settled.

    ``AttemptEnded`` carries the attempt's cost, ``TaskEnded`` the task's total
    over all its attempts, ``RunFinished`` the run's total.
    """
    tasks: dict[str, Cost] = {}
    run = Cost()
    out: list[dict[str, Any]] = []
    for r in rows:
        item: dict[str, Any] = {
            "seq": r.seq,
            "category": r.category,
            "kind": r.kind,
            "at": r.at,
            "time": iso_time(r.at),
            "cause": r.cause,
            "data": r.data,
        }
        if r.kind == "AttemptEnded":
            cost = attempt_cost(r.data)
            tasks.setdefault(r.data["task_id"], Cost()).add(cost)
            run.add(cost)
            item["cost"] = cost_json(cost)
        elif r.kind == "TaskEnded":
            item["cost"] = cost_json(tasks.get(r.data["task_id"], Cost()))
        elif r.kind == "RunFinished":
            item["cost"] = cost_json(run)
        out.append(item)
    return out


def render_history(
    s: Session, name: str, console: Console, as_json: bool, task: str | None = None
) -> None:
    rows: Iterable[Row] = s.store.read(name)
    if task is not None:
        check_task(s, name, task)
        rows = about_task(rows, task)
    rows = list(rows)
    if as_json:
        print(json.dumps(history_json(rows), indent=2))
        return
    title = f"history of {escape(name)}" + (f", task {escape(task)}" if task else "")
    t = Table(title=title, title_justify="left")
    for col in ("#", "time", "", "kind", "details"):
        t.add_column(col, overflow="fold", no_wrap=col == "time")
    for r in rows:
        marker = "→" if r.category == "event" else "  ↳"
        t.add_row(str(r.seq), iso_time(r.at), marker, r.kind, escape(row_details(r)))
    console.print(t)


def check_task(s: Session, name: str, task: str) -> None:
    """``RunNotFound``/``StormproofError`` unless the run has (or had) the task."""
    from stormproof.runtime.runs import load_context

    ids = [t.id for t in load_context(s.store, name).spec.tasks]
    if task not in ids and task not in {
        t["id"] for t in s.store.get_run(name).meta["spec"]["tasks"]
    }:
        import difflib

        close = difflib.get_close_matches(task, ids, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise StormproofError(f"run {name!r} has no task {task!r}{hint}")


def print_logs(
    s: Session, name: str, task: str, number: int | None, stream: str, console: Console
) -> None:
    check_task(s, name, task)
    numbers = s.home.attempt_numbers(name, task)
    if not numbers:
        raise StormproofError(f"task {task!r} of run {name!r} has not run yet")
    n = number if number is not None else numbers[-1]
    if n not in numbers:
        raise StormproofError(
            f"task {task!r} has no attempt {n}; attempts: {', '.join(map(str, numbers))}"
        )
    adir = s.home.attempt_dir(name, task, n)
    for which in ("stdout", "stderr"):
        if stream not in ("both", which):
            continue
        path = adir / f"{which}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        if stream == "both":
            console.print(f"[dim]── {which} of {escape(task)}/{n} ({path}) ──[/]")
        sys.stdout.write(text)
        if text and not text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
