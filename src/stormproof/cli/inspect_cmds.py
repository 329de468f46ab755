"""``history`` and ``logs``: what a run did, read from its log and its attempts' files.

Both only read: they open the home read-only and never need the run's lease.
"""

from __future__ import annotations

import click

from stormproof.runtime.home import check_run_name

from .session import common, out, session


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Every event and decision as JSON.")
@click.option("--task", "task", metavar="ID", help="Only what concerns task ID.")
@common
def history(
    name: str, as_json: bool, task: str | None, home: str | None, config_path: str | None
) -> None:
    """The run's event log: every event and the decisions it caused, in order."""
    from .render import render_history

    with session(home, config_path, read_only=True) as s:
        check_run_name(name)  # the run's record holds the whole workflow: not loaded here
        render_history(s, name, out, as_json, task)


@click.command()
@click.argument("name")
@click.argument("task")
@click.option(
    "--attempt", "number", type=click.IntRange(min=1), help="Attempt number (default: last)."
)
@click.option("--stream", type=click.Choice(["both", "stdout", "stderr"]), default="both")
@click.option(
    "--follow", "-f", is_flag=True, help="Print output as it comes, until the attempt ends."
)
@common
def logs(
    name: str,
    task: str,
    number: int | None,
    stream: str,
    follow: bool,
    home: str | None,
    config_path: str | None,
) -> None:
    """Print what an attempt of TASK wrote to stdout and stderr."""
    from .render import print_logs

    with session(home, config_path, read_only=True) as s:
        if follow:
            from .follow import follow_logs
            from .render import check_task

            check_task(s, check_run_name(name), task)
            follow_logs(s, name, task, number, stream, out)
            return
        print_logs(s, check_run_name(name), task, number, stream, out)
