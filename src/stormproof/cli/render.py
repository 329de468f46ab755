"""Tables for ``status``, ``history`` and ``logs``: reading a run, never changing it."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from stormproof.core.machine import Cost
from stormproof.errors import StormproofError
from stormproof.runtime.attempt_logs import STREAMS
from stormproof.runtime.view import RunView
from stormproof.runtime.view_query import Page, TaskQuery, run_summary_json, shown_state
from stormproof.runtime.view_records import TaskView, attempt_cost, cost_json
from stormproof.runtime.view_store import read_view
from stormproof.store.base import Row

from .history_text import about_task, iso_time, row_details
from .log_places import LogPlaces
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


#: A run with at most this many tasks is listed whole by ``status NAME``; a bigger one shows
#: its summary and its failed tasks, and lists the rest on request (``--tasks``, filters).
WHOLE_UP_TO = 50
#: Tasks ``status NAME --json`` lists when no ``--limit`` is given.
JSON_PAGE = 1000


def run_view(s: Session, name: str) -> RunView:
    """The run's totals, fleet and breakers (holding only the tasks it had to read)."""
    return run_page(s, name, TaskQuery(limit=0))[0]


def run_page(s: Session, name: str, query: TaskQuery) -> tuple[RunView, Page]:
    view, page = read_view(s.store, name, query, s.writable)
    view.state = shown_state(view, s.store.is_driven(name))
    return view, page


def render_runs(s: Session, console: Console, as_json: bool) -> None:
    runs = s.store.list_runs()
    rows = []
    for info in runs:
        view = run_view(s, info.name)
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


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))


def run_title(view: RunView) -> str:
    return (
        f"{escape(view.name)} ({escape(view.workflow)}) · {_styled(view.state)} · "
        f"{_took(view.started, view.ended)} · {_counts_text(view.counts())}"
    )


def run_table(
    view: RunView, tasks: list[TaskView] | None = None, title: str | None = None
) -> Table:
    """The tasks (default: every task the view holds) as a table under the run's title."""
    listed = list(view.tasks.values()) if tasks is None else tasks
    t = Table(title=run_title(view) if title is None else title, title_justify="left")
    # Task ids are kept whole (people copy them into `logs`); only the prose column folds.
    longest = max((len(task.id) for task in listed), default=4)
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
    for task in listed:
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


def checkpoints_line(view: RunView) -> str | None:
    """``checkpoints: 12 saved, 3.4 MiB, save 0.21s mean, 0.50s max`` (none: no line); each
    attempt's own are in ``status --json``."""
    c = view.checkpoints
    if not c.count:
        return None
    text = f"checkpoints: {c.count} saved, {c.bytes / 2**20:.1f} MiB"
    if c.measured:
        text += f", save {c.save_s / c.measured:.2f}s mean, {c.max_save_s:.2f}s max"
    return text


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


def render_run(view: RunView, page: Page, query: TaskQuery | None, console: Console) -> None:
    """The run: its title, its stages, the tasks of ``page``, money, CPU, breakers and jobs.

    ``query`` is what the user asked to list (``None``: the default view, where a run of
    more than ``WHOLE_UP_TO`` tasks lists only its failed ones).
    """
    console.print(run_table(view, page.tasks) if page.tasks else run_title(view))
    if view.total() > WHOLE_UP_TO:
        for stage_line in stage_lines(view):
            console.print(stage_line)
    shown = len(page.tasks)
    if query is None and shown < view.total():
        failed = view.counts().get("failed", 0)
        what = f"{failed} failed task(s) listed above; " if failed else ""
        console.print(
            f"{what}{view.total()} tasks in all: `--tasks` lists them "
            f"(`--limit N --offset K`), `--state STATE` and `--stage N` filter them"
        )
    elif query is not None and shown < page.matching:
        first = query.offset + 1
        console.print(
            f"tasks {first}-{query.offset + shown} of {page.matching}: "
            f"`--offset {query.offset + shown}` shows the next ones"
        )
    console.print(cost_line(view, time.time()))
    console.print(resources_line(view))
    for line in (checkpoints_line(view), breaker_line(view), jobs_line(view)):
        if line:
            console.print(line)


#: Stages listed one per line; beyond, only the stages not all succeeded are.
_STAGE_LINES = 12


def stage_lines(view: RunView) -> list[str]:
    """``stage 3: 40 succeeded, 2 failed`` per stage (the unfinished ones when there are many)."""
    stages = list(enumerate(view.stages(), start=1))
    if len(stages) > _STAGE_LINES:
        open_ = [(i, c) for i, c in stages if set(c) - {"succeeded"}]
        done = len(stages) - len(open_)
        lines = [f"  stage {i}: {_counts_text(c)}" for i, c in open_[:_STAGE_LINES]]
        if len(open_) > _STAGE_LINES:
            lines.append(f"  … {len(open_) - _STAGE_LINES} more stages not all succeeded")
        return [f"  {len(stages)} stages, {done} all succeeded (`--stage N` lists one)", *lines]
    return [f"  stage {i}: {_counts_text(c)}" for i, c in stages]


def default_query(view: RunView) -> TaskQuery:
    """What ``status NAME`` lists unasked: everything if small, else the failed tasks."""
    if view.total() <= WHOLE_UP_TO:
        return TaskQuery()
    return TaskQuery(states=("failed",), limit=WHOLE_UP_TO)


def watch_run(s: Session, name: str, console: Console) -> None:
    if not console.is_terminal:  # a log file or a CI job: a line per change, no redraws
        from .follow import watch_lines

        watch_lines(s, name, console)
        return

    def table() -> tuple[Table, RunView]:
        view = run_view(s, name)
        return run_table(view, run_page(s, name, default_query(view))[1].tasks), view

    try:
        shown, view = table()
        with Live(shown, console=console, refresh_per_second=2) as live:
            while view.state in ("running", "stopped") and (
                view.state == "running" or s.store.is_driven(name)
            ):
                time.sleep(1.0)
                shown, view = table()
                live.update(shown)
    except KeyboardInterrupt:
        pass


def history_json(rows: Iterable[Row]) -> Iterator[dict[str, Any]]:
    """The log as JSON, with ``cost`` (as in ``status --json``) where money was settled.

    ``AttemptEnded`` carries the attempt's cost, ``TaskEnded`` the task's total
    over all its attempts, ``RunFinished`` the run's total. A generator holding only the
    costs of tasks not yet ended: memory does not grow with the run.
    """
    tasks: dict[str, Cost] = {}
    run = Cost()
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
            item["cost"] = cost_json(tasks.pop(r.data["task_id"], Cost()))
        elif r.kind == "RunFinished":
            item["cost"] = cost_json(run)
        yield item


#: Rows per table when ``history`` prints a table: a long log is printed as it is read.
_HISTORY_CHUNK = 500


def render_history(
    s: Session, name: str, console: Console, as_json: bool, task: str | None = None
) -> None:
    rows: Iterable[Row] = s.store.read(name)
    if task is not None:
        check_task(s, name, task)
        rows = about_task(rows, task)
    if as_json:
        _stream_json_list(history_json(rows))
        return
    title = f"history of {escape(name)}" + (f", task {escape(task)}" if task else "")
    chunk: list[Row] = []
    first = True
    for row in rows:
        chunk.append(row)
        if len(chunk) == _HISTORY_CHUNK:
            console.print(_history_table(title, chunk, first))
            chunk, first = [], False
    if chunk or first:
        console.print(_history_table(title, chunk, first))


def _stream_json_list(items: Iterable[dict[str, Any]]) -> None:
    """A JSON list written one item per line as items come: memory stays flat."""
    write = sys.stdout.write
    write("[")
    sep = "\n"
    for item in items:
        write(sep + json.dumps(item))
        sep = ",\n"
    write("\n]\n" if sep != "\n" else "]\n")
    sys.stdout.flush()


def _history_table(title: str, rows: list[Row], first: bool) -> Table:
    t = Table(title=title if first else None, title_justify="left", show_header=first)
    for col in ("#", "time", "", "kind", "details"):
        t.add_column(col, overflow="fold", no_wrap=col == "time")
    for r in rows:
        marker = "→" if r.category == "event" else "  ↳"
        t.add_row(str(r.seq), iso_time(r.at), marker, r.kind, escape(row_details(r)))
    return t


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
    """What an attempt printed, from wherever its run keeps it (``log_places``)."""
    check_task(s, name, task)
    places = LogPlaces.of(s, name)
    attempts = places.attempts(task)
    numbers = attempts.numbers()
    if not numbers:
        raise StormproofError(f"task {task!r} of run {name!r} has not run yet")
    n = number if number is not None else numbers[-1]
    if n not in numbers:
        raise StormproofError(
            f"task {task!r} has no attempt {n}; attempts: {', '.join(map(str, numbers))}"
        )
    logs = places.logs(task, n)
    streams = STREAMS if stream == "both" else (stream,)
    chunks = {which: logs.read(which, 0) for which in streams}
    if all(chunk is None for chunk in chunks.values()):
        message = logs.missing(f"{task}/{n}", n in attempts.ended)
        if message is not None:
            raise StormproofError(message)
    for which, chunk in chunks.items():
        text = chunk.data.decode("utf-8", "replace") if chunk is not None else ""
        if stream == "both":
            console.print(
                f"[dim]── {which} of {escape(task)}/{n} ({escape(logs.place(which))}) ──[/]"
            )
        sys.stdout.write(text)
        if text and not text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
