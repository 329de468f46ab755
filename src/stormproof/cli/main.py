"""The ``stormproof`` command line. Scripts rely on it: keep commands, options, exit codes stable.

Exit codes: 0 success · 1 the workflow failed or was cancelled · 2 bad input
or usage · 130 stopped by Ctrl-C (the run can be resumed).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from stormproof import __version__
from stormproof.config import Config
from stormproof.errors import CapacityError, LeaseLost, RunExists, RunNotFound, StormproofError
from stormproof.runtime.home import Home, check_run_name, default_run_name
from stormproof.runtime.runs import RunContext, load_context, new_context
from stormproof.spec.model import WorkflowSpec

from .session import FilePath, Session, common, err, out, say_lease_wait, session
from .status_cmd import task_filters

if TYPE_CHECKING:
    from stormproof.runtime.driver import DriveResult

EXIT = {"succeeded": 0, "failed": 1, "cancelled": 1, "stopped": 130}


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


#: Commands that live in their own modules, imported only when named (or listed by --help):
#: ``run`` of a big workflow should not pay for the importers' and tables' imports.
LAZY_COMMANDS = {
    "alerts": "stormproof.cli.monitor_cmds:alerts",
    "aws": "stormproof.cli.aws_cmds:aws",
    "exec": "stormproof.cli.exec_cmd:exec_",
    "history": "stormproof.cli.inspect_cmds:history",
    "logs": "stormproof.cli.inspect_cmds:logs",
    "report": "stormproof.cli.monitor_cmds:report",
    "serve": "stormproof.cli.monitor_cmds:serve",
    "checkpoint": "stormproof.cli.checkpoint_cmd:checkpoint",
    "clean": "stormproof.cli.clean_cmd:clean",
    "checkpoints": "stormproof.cli.checkpoints_cmds:checkpoints",
    "fleet": "stormproof.cli.fleet_cmds:fleet",
    "interrupt": "stormproof.cli.fleet_cmds:interrupt",
    "redrive": "stormproof.cli.rerun_cmds:redrive",
    "import": "stormproof.cli.import_cmd:import_",
    "simulate": "stormproof.cli.simulate_cmd:simulate",
}


class _LazyGroup(click.Group):
    """click's documented pattern for subcommands loaded on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        import importlib

        module, _, attr = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stormproof")
def cli() -> None:
    """Run long multi-stage workflows to the end on cheap, interruptible capacity."""


# ---------------------------------------------------------------------- plan / schema
def _load_spec(path: str) -> WorkflowSpec:
    from stormproof.spec.load import load_workflow

    with _frozen_after():
        return load_workflow(Path(path))


@contextmanager
def _frozen_after() -> Iterator[None]:
    """Build long-lived objects (a 100,000-task spec, its plan) with the cyclic GC paused, and
    freeze them before it resumes. Resuming first would let the next allocation start a full
    collection over all of them (a quarter of a second at 100,000 tasks), only to find
    nothing to free; frozen, no collection looks at them again."""
    from stormproof.spec.load import gc_paused

    with gc_paused():
        yield
        gc.freeze()


@cli.command()
@click.argument("file", type=FilePath(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable plan.")
@click.option(
    "--from-run",
    "from_run",
    metavar="RUN",
    help="Use what RUN measured (runtimes, checkpoint saves) for the tasks unchanged since.",
)
@common
def plan(
    file: str, as_json: bool, from_run: str | None, home: str | None, config_path: str | None
) -> None:
    """Validate FILE and show stages, critical path, cost and duration (a dry run)."""
    with session(home, config_path, read_only=True) as s:
        _show_plan(s, file, as_json, from_run)


def _show_plan(s: Session, file: str, as_json: bool, from_run: str | None = None) -> None:
    from stormproof.plan.report import build_plan, render_plan

    spec = _load_spec(file)
    if any(t.checkpoint_enabled for t in spec.tasks):
        s.checkpoint_store(s.checkpoint_settings()).check()  # unreachable: say so before a run
    config = s.placing_config()
    spec, notes = s.workflow_for_executor(spec, config)
    measured = None
    if from_run is not None:
        from stormproof.runtime.measured import measure_run

        measured = measure_run(s.store, from_run, spec, Path(file), config.container_runtime)
    with _frozen_after():
        report = build_plan(spec, config, config.container_runtime, measured)
        report = report.with_notes(notes)
    _outlive(spec, report)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        render_plan(report, out)
    if report.problems and s.config.pools:
        unplaced = [t.id for i, t in enumerate(spec.tasks) if report.estimate.pool_name(i) is None]
        shown = ", ".join(unplaced[:5]) + (
            f" and {len(unplaced) - 5} more" if len(unplaced) > 5 else ""
        )
        pools = ", ".join(p.name for p in config.pool_defs())
        where = "under problems in the JSON" if as_json else "marked ✗ above"
        raise CapacityError(
            f"{file}: {'task' if len(unplaced) == 1 else 'tasks'} {shown} "
            f"{'fits' if len(unplaced) == 1 else 'fit'} none of the pools ({pools}); "
            f"what {'it needs' if len(unplaced) == 1 else 'they need'} and what to change is "
            f"{where}"
        )


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the workflow file."""
    from stormproof.spec.schema import workflow_json_schema

    click.echo(json.dumps(workflow_json_schema(), indent=2))


# ---------------------------------------------------------------------- run / resume
@cli.command()
@click.argument("file", type=FilePath(dir_okay=False))
@click.option("--name", help="Run name (default: <workflow>-<date>-<time>).")
@click.option("--dry-run", is_flag=True, help="Validate and plan only, like `stormproof plan`.")
@click.option("--detach", is_flag=True, help="Run in the background; watch with `status --watch`.")
@click.option("--max-parallel", type=click.IntRange(min=1), help="At most N attempts at once.")
@click.option("--seed", type=int, help="Seed for retry jitter (default: random, recorded).")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@click.option("--reuse", is_flag=True, help="Reuse tasks whose results earlier runs have.")
@click.option("--redrive", is_flag=True, help="If run --name exists, redrive it with FILE.")
@click.option("--plan", "plan_only", is_flag=True, help="With --reuse/--redrive: verdicts only.")
@click.option("--json", "as_json", is_flag=True, help="With --plan: the verdicts as JSON.")
@common
def run(
    file: str,
    name: str | None,
    dry_run: bool,
    detach: bool,
    max_parallel: int | None,
    seed: int | None,
    quiet: bool,
    reuse: bool,
    redrive: bool,
    plan_only: bool,
    as_json: bool,
    home: str | None,
    config_path: str | None,
) -> None:
    """Run the workflow in FILE. Ctrl-C stops launching and loses nothing: resume later."""
    with session(home, config_path) as s:
        if dry_run:
            _show_plan(s, file, as_json=False)
            return
        _check_rerun_options(reuse, redrive, plan_only, as_json, name, detach)
        if redrive and name and _run_exists(s, check_run_name(name)):
            from .rerun_cmds import redrive_run

            redrive_run(s, name, file, plan_only, as_json, quiet, detach)
            return
        spec = _load_spec(file)
        config = s.placing_config()
        spec, _notes = s.workflow_for_executor(spec, config)
        s.check_workflow(spec, config)
        refuse_if_unplaceable(spec, config)
        from stormproof.runtime.compile import policy_dict

        from .rerun_cmds import reuse_plan, show_reuse

        start: dict[str, Any] = {}
        if reuse:
            rerun, hashes = reuse_plan(s, spec, file)
            if plan_only or not quiet:
                show_reuse(rerun, file, as_json)
            if plan_only:
                return
            start = rerun.start
        else:
            from stormproof.runtime.fingerprint import hash_inputs

            hashes = hash_inputs(spec, Path(file).resolve().parent, file)
        run_name = check_run_name(name) if name else default_run_name(spec.name)
        if _run_exists(s, run_name):
            raise RunExists(_exists_message(s, run_name))
        from stormproof.runtime.containers import host_notes

        runtime, own = s.config.container_runtime, s.config.executor_runs_images
        for note in host_notes(spec, runtime, own):  # said once, as the run begins
            err.print(f"[yellow]note:[/] {_escape(note)}")
        ctx = new_context(
            run_name,
            spec,
            config.pool_defs(),
            Path(file),
            s.config.executor,
            executor_options=s.executor_options(config),
            max_parallel=max_parallel or s.config.policy.max_parallel,
            seed=seed,
            checkpoints=s.checkpoint_settings(),
            policy=policy_dict(s.config.policy, s.config.executor),
            sources=s.pool_sources(),
            alerts=s.config.alert_rules(),
            input_hashes=hashes,
            container=s.config.container_settings(),
            start=start,
            capacity=s.config.capacity,
        )
        if any(t.checkpoint_enabled for t in spec.tasks):
            s.checkpoint_store(ctx.checkpoints).check()  # unreachable: a clear error now
        s.store.create_run(run_name, spec.name, ctx.to_meta(), time.time())
        if detach:
            _detach(s, run_name)
            return
        _drive_and_exit(s, ctx, quiet)


def _check_rerun_options(
    reuse: bool, redrive: bool, plan_only: bool, as_json: bool, name: str | None, detach: bool
) -> None:
    if redrive and reuse:
        raise click.UsageError(
            "--redrive and --reuse do not go together: a redrive keeps what "
            "its own run did; --reuse is for a new run"
        )
    if redrive and not name:
        raise click.UsageError("--redrive needs --name: the run to redrive (or to start)")
    if plan_only and not (reuse or redrive):
        raise click.UsageError(
            "--plan goes with --reuse or --redrive; for a dry run of the "
            "workflow itself use `stormproof plan FILE`"
        )
    if as_json and not plan_only:
        raise click.UsageError("--json goes with --plan")
    if detach and (reuse or redrive) and plan_only:
        raise click.UsageError("--detach has nothing to run with --plan")


def _run_exists(s: Session, name: str) -> bool:
    try:
        s.store.get_run(name)
    except RunNotFound:
        return False
    return True


def _exists_message(s: Session, name: str) -> str:
    """What to do with a run name that is taken, by what that run is now."""
    from .render import run_view

    state = run_view(s, name).state
    if state in ("failed", "cancelled"):
        return (
            f"run {name!r} exists and {state}; run it again after a fix with "
            f"`stormproof redrive {name} FILE` (or add --redrive), or pick another --name"
        )
    if state == "succeeded":
        return (
            f"run {name!r} exists and succeeded; pick another --name (add --reuse to reuse its "
            f"results), or rerun what changed with `stormproof redrive {name} FILE`"
        )
    if state == "running":
        return f"run {name!r} exists and is running now; pick another --name"
    return (
        f"run {name!r} exists and stopped before it finished; continue it with "
        f"`stormproof resume {name}`, or pick another --name"
    )


def refuse_if_unplaceable(spec: WorkflowSpec, config: Config) -> None:
    """Refuse (exit 2) a workflow with a task that no pool of ``config`` can ever hold.

    ``run`` and ``simulate`` both ask before anything starts; ``plan`` shows the same
    problems in its report (and exits 2).
    """
    from stormproof.plan.estimate import placement_problems
    from stormproof.plan.report import shown_path

    problems = placement_problems(spec, config.pool_defs(), shown_path(config.source))
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise CapacityError(f"some tasks cannot run on this capacity:\n{lines}")


def _detach(s: Session, run_name: str) -> None:
    log = s.home.make_run_dir(run_name) / "orchestrator.log"
    cmd = [sys.executable, "-m", "stormproof", "_drive", run_name, "--home", str(s.home.root)]
    if s.config.source is not None:
        cmd += ["--config", str(s.config.source)]
    with open(log, "ab") as fh:
        subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=s.cwd,
        )
    out.print(f"run [bold]{_escape(run_name)}[/] started in the background")
    out.print(f"  watch:  stormproof status {run_name} --watch")
    out.print(f"  log:    {log}")


@cli.command()
@click.argument("name")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@common
def resume(name: str, quiet: bool, home: str | None, config_path: str | None) -> None:
    """Carry on a run after its orchestrator stopped or died; finished work is never redone."""
    with session(home, config_path) as s:
        _drive_and_exit(s, load_context(s.store, check_run_name(name)), quiet)


@cli.command(name="_drive", hidden=True)
@click.argument("name")
@common
def drive_detached(name: str, home: str | None, config_path: str | None) -> None:
    with session(home, config_path) as s:
        _drive_and_exit(s, load_context(s.store, name), quiet=True)


def _drive_and_exit(
    s: Session,
    ctx: RunContext,
    quiet: bool,
    initial: Any = (),
    redrive: tuple[dict[str, Any], int] | None = None,
) -> None:
    from stormproof.runtime.driver import Driver  # not on the path of plan, status, …

    from .progress import LiveProgress, NullProgress

    ctx.check_replayable()
    executor = s.executor(ctx.executor, ctx.name, ctx.executor_options)
    executor.prepare()  # the shim starts while the driver compiles the workflow
    driver: Driver | None = None
    try:
        driver = Driver(s.home, s.store, ctx, executor, fleet=s.fleet(ctx, executor))
        if redrive is not None:
            driver.redrive, driver.redrive_after_seq = redrive
        driver.on_lease_wait = say_lease_wait(ctx.name)
        _outlive(ctx, driver)
        if any(t.checkpoint_enabled for t in ctx.spec.tasks):
            from stormproof.runtime.checkpointing import Checkpointing

            settings = ctx.checkpoints or s.checkpoint_settings()
            store = s.checkpoint_store(settings)
            driver.checkpointing = Checkpointing(store, ctx.name, driver.core.next_checkpoint_seq)
        reporter = NullProgress() if quiet else LiveProgress(ctx, out, s.home)
        driver.reporter = reporter
        if ctx.alerts:
            from stormproof.monitor.alerts.hook import RunAlerts

            driver.alerts = RunAlerts(ctx)
        with reporter:
            result = driver.drive(initial)
    except LeaseLost as exc:
        err.print(f"[bold red]error:[/] {_escape(str(exc))}")
        _leave_now(exc.exit_code)
    finally:
        if driver is None or not driver.abandoned:
            executor.close()  # a no-op after drive's own; else (refused, locked) reaps the starter
    _say_result(ctx, result, quiet, s.home)
    if not quiet and result.state != "stopped":
        from .render import cost_text

        out.print("  " + cost_text(driver.core.cost))
    if driver.abandoned:
        _leave_now(EXIT.get(result.state, 1))
    sys.exit(EXIT.get(result.state, 1))


def _say_result(ctx: RunContext, result: DriveResult, quiet: bool, home: Home) -> None:
    name = ctx.name
    if result.state == "stopped":
        err.print(f"run {_escape(name)} stopped: {_escape(result.reason)}")
        if result.live_attempts:
            err.print(
                f"  {result.live_attempts} attempt(s) keep running in the background; "
                f"`stormproof resume {name}` adopts them, `stormproof cancel {name}` stops them"
            )
        else:
            err.print(f"  continue with `stormproof resume {name}`")
        return
    style = {"succeeded": "green", "failed": "red"}.get(result.state, "yellow")
    if not quiet or result.state != "succeeded":
        out.print(f"run [bold]{_escape(name)}[/] [{style}]{result.state}[/]")
        if result.state != "succeeded":
            out.print(f"  details: stormproof status {name}   ·   stormproof history {name}")
            out.print(
                f"  after a fix, run it again keeping what succeeded: stormproof redrive {name}"
            )
    if not quiet:
        out.print(f"  results: {_escape(str(home.data_dir(name)))}")
        out.print(
            f"  logs:    stormproof logs {name} TASK   "
            f"(files under {_escape(str(home.tasks_dir(name)))})"
        )


# ---------------------------------------------------------------------- status & co
@cli.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable status.")
@click.option("--watch", is_flag=True, help="Refresh until the run ends (Ctrl-C to leave).")
@task_filters
@common
def status(
    name: str | None,
    as_json: bool,
    watch: bool,
    home: str | None,
    config_path: str | None,
    **filters: Any,
) -> None:
    """Show runs, or one run's summary and tasks (a page of them: see --tasks)."""
    from .render import render_runs
    from .status_cmd import show_run

    with session(home, config_path, read_only=True) as s:
        if name is None:
            render_runs(s, out, as_json)
            return
        check_run_name(name)
        if watch and not as_json:
            from .render import watch_run

            watch_run(s, name, out)
            return
        show_run(s, name, as_json, **filters)


@cli.command()
@click.argument("name")
@common
def cancel(name: str, home: str | None, config_path: str | None) -> None:
    """Stop a run for good: kill its running attempts, end every unfinished task."""
    with session(home, config_path) as s:
        check_run_name(name)
        s.store.get_run(name)
        if s.store.is_driven(name):
            s.store.post_request(name, "cancel", time.time())
            out.print(f"asked the orchestrator of {_escape(name)} to cancel; waiting…")
            _wait_finished(s, name, timeout_s=120)
            return
        ctx = load_context(s.store, name)
        from stormproof.core.events import CancelRequested

        _drive_and_exit(s, ctx, quiet=True, initial=[CancelRequested(time.time())])


def _wait_finished(s: Session, name: str, timeout_s: float) -> None:
    from .render import run_view

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        view = run_view(s, name)
        if view.state in ("succeeded", "failed", "cancelled"):
            out.print(f"run {_escape(name)} {view.state}")
            sys.exit(EXIT[view.state])
        if not s.store.is_driven(name):  # its driver died (its lease lapsed): cancel it here;
            _drive_and_exit(s, load_context(s.store, name), quiet=True)  # the request waits
        time.sleep(0.3)
    raise StormproofError(
        f"run {name!r} did not finish cancelling within {timeout_s:.0f} s; "
        f"check `stormproof status {name}`"
    )


def main() -> None:
    try:
        cli.main(prog_name="stormproof", standalone_mode=True)
        code: str | int | None = 0
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:  # pragma: no cover - outside a driver, Ctrl-C just leaves
        code = 130
    _leave(code)


#: Big structures (a 100,000-task spec, its plan) kept alive to the end: ``_leave`` lets the
#: OS free them at once, where going out of scope frees them one object at a time.
_KEPT: list[object] = []


def _outlive(*objects: object) -> None:
    _KEPT.extend(objects)


def _leave_now(code: int) -> NoReturn:
    """Leave at once, as ``kill -9`` would, once the output is out: another orchestrator may
    drive the run now, so nothing still queued here (launches for the executor, checkpoint
    saves in flight) may go out."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _leave(code: str | int | None) -> NoReturn:
    """Exit without tearing the interpreter down, as mypy does: freeing 100,000 tasks' objects
    one by one takes half a second, after the work is done and every file is closed (stores
    and sessions close in their ``with`` blocks). The normal exit is kept whenever anything
    could still be running or unwritten: a thread, an exit code that is a message, output that
    cannot be flushed."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if code is None:
        code = 0
    if not isinstance(code, int) or any(not t.daemon for t in others):
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)
    os._exit(code)
