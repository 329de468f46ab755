"""``status NAME``: a run's summary, and its tasks a page at a time.

A 100,000-task run cannot be shown task by task: by default ``status`` shows the totals
(per state, per stage, money, breakers) and the failed tasks; ``--tasks`` lists every
task a page at a time, and ``--state``/``--stage`` filter them. ``--json`` is the shape
the dashboard's API sends (``view_query.run_json``) with the tasks paged (``page`` says
which), so a script reads a big run in pages (docs/cli.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from stormproof.runtime.view_query import TASK_STATES, TaskQuery, check_stage, run_json

from .render import JSON_PAGE, default_query, render_run, run_page, run_view
from .session import Session, out

F = TypeVar("F", bound=Callable[..., Any])


def task_filters(fn: F) -> F:
    """``--tasks``, ``--state``, ``--stage``, ``--limit``, ``--offset``."""
    options = [
        click.option(
            "--tasks", "all_tasks", is_flag=True, help="List every task (a page at a time)."
        ),
        click.option(
            "--state",
            "states",
            multiple=True,
            type=click.Choice(TASK_STATES),
            help="Only tasks in this state (repeat for several).",
        ),
        click.option("--stage", type=click.IntRange(min=1), help="Only the tasks of stage N."),
        click.option(
            "--limit",
            type=click.IntRange(min=0, max=10**9),
            help=f"At most N tasks (default: 50, or {JSON_PAGE} with --json; 0: all).",
        ),
        click.option(
            "--offset",
            type=click.IntRange(min=0, max=10**12),
            default=0,
            help="Skip the first K tasks.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def show_run(
    s: Session,
    name: str,
    as_json: bool,
    *,
    all_tasks: bool,
    states: tuple[str, ...],
    stage: int | None,
    limit: int | None,
    offset: int,
) -> None:
    asked = all_tasks or bool(states) or stage is not None or limit is not None or offset > 0
    if limit == 0:
        limit = None
    elif limit is None:
        limit = JSON_PAGE if as_json else 50
    query = TaskQuery(
        states=tuple(states) or None,
        stage=None if stage is None else stage - 1,
        limit=limit,
        offset=offset,
    )
    if not asked and not as_json:
        view = run_view(s, name)
        view, page = run_page(s, name, default_query(view))
        render_run(view, page, None, out)
        return
    view, page = run_page(s, name, query)
    check_stage(view, query)
    if as_json:
        click.echo(json.dumps(run_json(view, query, page, time.time()), indent=2))
    else:
        render_run(view, page, query, out)
