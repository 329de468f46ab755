"""``stormproof simulate``: how long, how much, how likely to make the deadline — before running.

The workflow is compiled exactly as ``run`` compiles it and the very same
core decides every placement, retry and fallback; only time is virtual.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from stormproof.config import load_config
from stormproof.errors import StormproofError
from stormproof.plan.estimate import human_duration
from stormproof.spec.model import ASSUMED_RUNTIME_S, parse_duration

from .session import FilePath, common, out, session

POLICIES = ("spot_first", "on_demand", "greedy", "uniform_progress", "stormproof")


def _trace_args(values: tuple[str, ...]) -> dict[str, str]:
    traces = {}
    for text in values:
        pool, sep, path = text.partition("=")
        if not sep or not pool or not path:
            raise StormproofError(f"--trace {text!r}: expected POOL=FILE, like spot-c5=trace.json")
        traces[pool] = path
    return traces


@click.command()
@click.argument("file", type=FilePath(dir_okay=False))
@click.option("--pools", "pools_file", metavar="FILE", help="Pools and policy from this file.")
@click.option("--trace", "traces", multiple=True, metavar="POOL=FILE", help="Replay a spot trace.")
@click.option("--runs", default=200, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--deadline", metavar="DURATION", help="Deadline, like 36h (default: policy's).")
@click.option("--policy", "policy_name", type=click.Choice(POLICIES), help="Spot policy.")
@click.option(
    "--runtime-spread",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Log-normal sigma of task runtimes around estimated_runtime (0: exact).",
)
@click.option("--workers", type=click.IntRange(min=1), help="Processes (default: CPUs).")
@click.option(
    "--gantt",
    metavar="OUT",
    help="Draw run 0 as a timeline: OUT.html or OUT.svg (self-contained), or OUT.png "
    "(matplotlib: pip install 'stormproof[plot]').",
)
@click.option("--json", "as_json", is_flag=True)
@common
def simulate(
    file: str,
    pools_file: str | None,
    traces: tuple[str, ...],
    runs: int,
    seed: int,
    deadline: str | None,
    policy_name: str | None,
    runtime_spread: float,
    workers: int | None,
    gantt: str | None,
    as_json: bool,
    home: str | None,
    config_path: str | None,
) -> None:
    """Simulate FILE many times on the configured pools: makespan, cost, deadline, waste."""
    from stormproof.cli.main import _load_spec, refuse_if_unplaceable
    from stormproof.sim.build import build
    from stormproof.sim.montecarlo import run_many, summarize

    with session(home, config_path) as s:
        spec = _load_spec(file)
        config = s.config
        base = config.source.parent if config.source is not None else s.cwd
        if pools_file:
            config = load_config(Path(pools_file), s.cwd, {})
            base = Path(pools_file).resolve().parent
            if "executor" not in config.model_fields_set:  # the file's pools, run's executor
                config = config.model_copy(update={"executor": s.config.executor})
        config = s.placing_config(config)
        spec, _notes = s.workflow_for_executor(spec, config)
        refuse_if_unplaceable(spec, config)
        if policy_name:
            config = config.model_copy(
                update={"policy": config.policy.model_copy(update={"name": policy_name})}
            )
        deadline_s = None
        if deadline:
            try:
                deadline_s = parse_duration(deadline)
            except ValueError as e:
                raise StormproofError(f"--deadline {deadline!r}: {e}") from None
            config = config.model_copy(
                update={"policy": config.policy.model_copy(update={"deadline": deadline_s})}
            )
        built = build(
            spec,
            config,
            base,
            _trace_args(traces),
            deadline_s=deadline_s,
            spread=runtime_spread,
            seed=seed,
        )
        if config.policy.name not in ("spot_first", "on_demand") and built.deadline_s is None:
            raise StormproofError(
                f"policy {config.policy.name!r} needs a deadline: give --deadline 36h "
                "or policy.deadline in stormproof.yaml"
            )
        started = time.perf_counter()
        results = run_many(built.sim, runs, seed, workers)
        summary = summarize(results, built.deadline_s, built.checkpoint_costs)
        summary["policy"] = config.policy.name
        summary["tasks_without_runtime"] = built.assumed
        if gantt:
            from stormproof.sim.gantt import write_gantt

            write_gantt(built.sim, seed, Path(gantt), spec.name)
        if as_json:
            click.echo(json.dumps(summary, indent=2))
            return
        _render(summary, spec.name, time.perf_counter() - started)
        if gantt:
            out.print(f"timeline of run 0: {escape(gantt)}")


def _render(summary: dict[str, Any], name: str, took: float) -> None:
    t = Table(
        title=f"{escape(name)}: {summary['runs']} simulated runs · policy {summary['policy']} "
        f"· {took:.1f}s",
        title_justify="left",
    )
    for col in ("", "mean", "p50", "p90", "p99"):
        t.add_column(col, justify="right")
    span, cost = summary["makespan_hours"], summary["cost_usd"]
    t.add_row("makespan (h)", *(f"{span[k]:.3f}" for k in ("mean", "p50", "p90", "p99")))
    t.add_row("cost ($)", *(f"{cost[k]:.4f}" for k in ("mean", "p50", "p90", "p99")))
    out.print(t)
    saved = summary["saved_fraction"] * 100
    out.print(
        f"all on-demand ${summary['on_demand_equivalent_usd']:.4f} · saved "
        f"${summary['saved_usd']:.4f} ({saved:.1f}%) · spot {summary['spot_hours_mean']:.2f} h, "
        f"on-demand {summary['on_demand_hours_mean']:.2f} h per run"
    )
    out.print(
        f"attempts interrupted {summary['interrupted_attempts_mean']:.2f} per run "
        f"(instance notices {summary['instance_notices_mean']:.2f}, idle instances included) "
        f"· wasted {summary['wasted_hours_mean']:.3f} h (${summary['wasted_usd_mean']:.4f})"
    )
    if summary["deadline_met_rate"] is not None:
        hours = summary["deadline_s"] / 3600
        out.print(f"deadline {hours:g} h met in {summary['deadline_met_rate'] * 100:.1f}% of runs")
    if summary["failed"] or summary["unfinished"]:
        out.print(f"[red]{summary['failed']} failed, {summary['unfinished']} unfinished runs[/]")
    for task, interval in summary["suggested_checkpoint_interval_s"].items():
        out.print(f"checkpoint {escape(task)} every {interval:.0f}s (Daly, observed MTBF)")
    if summary["tasks_without_runtime"]:
        missing = summary["tasks_without_runtime"]
        out.print(
            f"[yellow]{len(missing)} task(s) have no estimated_runtime and were assumed to take "
            f"{human_duration(ASSUMED_RUNTIME_S)} (the recipe's 30 minutes per stage):[/] "
            + escape(", ".join(missing[:5]) + (" …" if len(missing) > 5 else ""))
        )
