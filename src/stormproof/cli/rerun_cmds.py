"""The second run: ``redrive`` (and ``run --redrive``), ``run --reuse``, and their ``--plan``.

Both decide every task's verdict before anything runs (``runtime.rerun``) and show it as a
table: kept, reused from run X, or will run, each with its reason. ``--plan`` stops there.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import click
import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stormproof.errors import CapacityError, RunLocked, StormproofError
from stormproof.plan.graph import Dag
from stormproof.runtime.fingerprint import hash_inputs
from stormproof.runtime.home import check_run_name
from stormproof.runtime.redrive import begin, current_context, fold_past
from stormproof.runtime.rerun import RerunPlan, plan_redrive, plan_reuse
from stormproof.runtime.runs import RunContext
from stormproof.spec.model import WorkflowSpec

from .session import Session, common, out, session

#: Above this many tasks the table shows the tasks that run, by reason, not every task.
TABLE_LIMIT = 200
#: Tasks named per reason in the summary of a big plan.
NAMED_PER_REASON = 5


@click.command()
@click.argument("name")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--plan", "plan_only", is_flag=True, help="Show what is kept and rerun; run nothing.")
@click.option("--json", "as_json", is_flag=True, help="The plan as JSON (with --plan).")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@click.option("--detach", is_flag=True, help="Run in the background; watch with `status --watch`.")
@common
def redrive(
    name: str,
    file: str | None,
    plan_only: bool,
    as_json: bool,
    quiet: bool,
    detach: bool,
    home: str | None,
    config_path: str | None,
) -> None:
    """Run a failed, cancelled or stopped run NAME again, keeping what succeeded.

    FILE is the workflow, edited or not (default: the file the run was started from, read
    again). Tasks that succeeded and did not change are kept; the others, and every task
    downstream of one that runs, run again. The run keeps one history.
    """
    if as_json and not plan_only:
        raise click.UsageError("--json goes with --plan")
    with session(home, config_path) as s:
        redrive_run(s, check_run_name(name), file, plan_only, as_json, quiet, detach)


def redrive_run(
    s: Session,
    name: str,
    file: str | None,
    plan_only: bool,
    as_json: bool,
    quiet: bool,
    detach: bool = False,
) -> None:
    info = s.store.get_run(name)
    if s.store.is_driven(name):
        raise RunLocked(
            f"run {name!r} is being driven by another stormproof process; wait for it to end, "
            f"or stop it (`stormproof cancel {name}`), then redrive it"
        )
    rows = list(s.store.read(name))
    ctx = current_context(RunContext.from_meta(name, info.meta), rows)
    ctx.check_replayable()
    past, final = fold_past(rows)
    live = sorted(a for p in past.values() for a in p.live)
    if live:
        shown = ", ".join(live[:3]) + (f" and {len(live) - 3} more" if len(live) > 3 else "")
        raise StormproofError(
            f"run {name!r} stopped with {len(live)} attempt(s) still running ({shown}): "
            f"`stormproof resume {name}` adopts them and finishes the run, or "
            f"`stormproof cancel {name}` stops them; then redrive it"
        )
    path, spec, note = _redrive_workflow(ctx, file)
    hashes = hash_inputs(spec, path.parent, str(path))
    _refuse_unplaceable(spec, ctx)
    plan = plan_redrive(ctx, past, spec, hashes, s.home.data_dir(name))
    if not plan_only and final == "succeeded" and not plan.reruns:
        out.print(f"nothing to redrive: run {escape(name)} succeeded and no task changed")
        return
    if as_json and plan_only:
        _echo_json({**plan.to_json(), "state": final})
        return
    if not (quiet and not plan_only):
        if note:
            out.print(f"[yellow]{escape(note)}[/]")
        render_rerun(plan, out, f"redrive of {name} ({final}) with {path}")
    if plan_only:
        return
    data = {
        "segment": ctx.segment + 1,
        "was": final,
        "workflow_path": str(path),
        "workflow_dir": str(path.parent),
        "spec": spec.model_dump(mode="json", exclude_unset=True),
        "stages": [[spec.tasks[i].id for i in g] for g in Dag.from_spec(spec).stage_indexes()],
        "input_hashes": hashes,
        "start": plan.start,
        "verdicts": {v.task_id: [v.action, v.reason] for v in plan.verdicts},
        "removed": plan.removed,
    }
    new = dataclasses.replace(
        ctx,
        spec=spec,
        workflow_path=str(path),
        workflow_dir=str(path.parent),
        input_hashes=hashes,
        start=plan.start,
        segment=ctx.segment + 1,
    )
    after = rows[-1].seq if rows else 0
    from .main import _detach, _drive_and_exit

    if detach:  # the row first, under the lease; the background driver starts the segment
        with s.store.driver_lease(name):
            begin(s.store, name, data, after, time.time())
        _detach(s, name)
        return
    _drive_and_exit(s, new, quiet, redrive=(data, after))


def _redrive_workflow(ctx: RunContext, file: str | None) -> tuple[Path, WorkflowSpec, str]:
    """The workflow to redrive with: FILE, else the run's own file read again, else (gone)
    the workflow as the run recorded it; and a note when that last one is used."""
    from stormproof.spec.load import load_workflow

    path = Path(file) if file else Path(ctx.workflow_path)
    if file is None and not path.is_file():
        note = (
            f"the run's workflow file {path} is gone: redriving the workflow as the run "
            "recorded it (give FILE to use another)"
        )
        return path.resolve(), ctx.spec, note
    return path.resolve(), load_workflow(path), ""


def _refuse_unplaceable(spec: WorkflowSpec, ctx: RunContext) -> None:
    from stormproof.plan.estimate import placement_problems

    problems = placement_problems(spec, ctx.pools, "the run's pools")
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise CapacityError(f"some tasks cannot run on the run's capacity:\n{lines}")


# ---------------------------------------------------------------------- run --reuse
def reuse_plan(s: Session, spec: WorkflowSpec, file: str) -> tuple[RerunPlan, dict[str, str]]:
    """What ``run FILE --reuse`` reuses, with the input hashes it was decided on."""
    hashes = hash_inputs(spec, Path(file).resolve().parent, file)
    return plan_reuse(spec, hashes, s.config.container_runtime, s.store), hashes


def show_reuse(plan: RerunPlan, file: str, as_json: bool) -> None:
    if as_json:
        _echo_json(plan.to_json())
    else:
        render_rerun(plan, out, f"run of {file} with --reuse")


def _echo_json(data: dict[str, object]) -> None:
    # orjson: a tenth of json.dumps's time on a 10,000-task plan
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


# ---------------------------------------------------------------------- the table
_STYLE = {"kept": "green", "reused": "cyan", "run": "yellow"}


def render_rerun(plan: RerunPlan, console: Console, title: str) -> None:
    """Every task's verdict and reason (by reason above ``TABLE_LIMIT`` tasks), then totals."""
    counts = plan.counts()
    total = ", ".join(
        f"{counts[k]:,} {word}"
        for k, word in (("kept", "kept"), ("reused", "reused"), ("run", "will run"))
        if counts[k] or k == "run"
    )
    console.print(f"[bold]{escape(title)}[/]: {total}")
    if len(plan.verdicts) <= TABLE_LIMIT:
        table = Table(box=None, pad_edge=False)
        for col in ("task", "verdict", "reason"):
            table.add_column(col, overflow="fold", no_wrap=col == "task")
        for v in plan.verdicts:
            style = _STYLE[v.action]
            table.add_row(escape(v.task_id), f"[{style}]{escape(v.words)}[/]", escape(v.reason))
        console.print(table)
    else:
        _render_by_reason(plan, console)
    if plan.removed:
        shown = ", ".join(plan.removed[:10]) + (" …" if len(plan.removed) > 10 else "")
        console.print(f"removed from the workflow (not run again): {escape(shown)}")


def _render_by_reason(plan: RerunPlan, console: Console) -> None:
    groups: dict[tuple[str, str], list[str]] = {}
    for v in plan.verdicts:
        key = (v.words, _reason_kind(v.reason))
        groups.setdefault(key, []).append(v.task_id)
    table = Table(box=None, pad_edge=False, title=f"{len(plan.verdicts):,} tasks, by reason")
    for col in ("verdict", "tasks", "reason", "for example"):
        table.add_column(col, overflow="fold")
    for (words, reason), ids in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        action = "kept" if words == "kept" else "run" if words == "will run" else "reused"
        example = ", ".join(ids[:NAMED_PER_REASON]) + (" …" if len(ids) > NAMED_PER_REASON else "")
        style = _STYLE[action]
        table.add_row(
            f"[{style}]{escape(words)}[/]", f"{len(ids):,}", escape(reason), escape(example)
        )
    console.print(table)
    console.print("every task and its reason: add --json")


def _reason_kind(reason: str) -> str:
    """Reasons that differ only by the task they name group together (``parent '…' reruns``)."""
    if reason.startswith("parent '") and reason.endswith("' reruns"):
        return "a parent reruns"
    return reason
