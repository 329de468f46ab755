"""``stormproof plan``: the dry run, as data (``PlanReport.to_json``) and as a terminal page.

``build_plan`` is the whole plan path after the spec is validated: build the
graph once, sweep it once for earliest times, place and price every task,
collect problems (things that stop a run) and notes (things the user should
know). It never raises for a workflow that does not fit the pools: the plan's
job is to *show* that, with a fix, so ``problems`` carries it and the CLI
decides the exit code.

``render_plan`` prints one table per stage for workflows a person can read
row by row (up to ``DETAIL_LIMIT`` tasks) and one row per stage above that,
so that a 100,000-task plan stays a page, not a scroll.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from stormproof.config import Config
from stormproof.plan.estimate import Estimate, estimate, fmt_number, human_duration
from stormproof.plan.graph import Dag, gc_paused
from stormproof.plan.measured import Measured
from stormproof.spec.model import ASSUMED_RUNTIME_S, WorkflowSpec

#: Above this many tasks the plan shows a row per stage instead of a row per task.
DETAIL_LIMIT = 200
#: Above this many stages the summary shows the first and last half of this many.
STAGE_ROWS_LIMIT = 100
CRITICAL_MARK = "◆"


@dataclass(frozen=True, slots=True)
class PlanReport:
    """Everything ``stormproof plan`` shows. Per-task tuples are indexed like ``spec.tasks``."""

    spec: WorkflowSpec
    dag: Dag
    start_s: tuple[float, ...]
    finish_s: tuple[float, ...]
    critical_path: tuple[int, ...]
    estimate: Estimate
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    #: Suggested checkpoint interval per checkpointed task (Daly), as JSON-ready data.
    checkpoint_advice: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The run whose measured figures replace declared ones (``plan --from-run``), if any.
    measured: Measured | None = None

    def source(self, task_index: int) -> str:
        """Where the task's runtime comes from: ``measured`` in a run, or ``declared``."""
        if self.measured is None:
            return "declared"
        runtime = self.measured.runtime_s(self.spec.tasks[task_index].id)
        return "declared" if runtime is None else "measured"

    @property
    def workflow(self) -> str:
        return self.spec.name

    @property
    def tasks_total(self) -> int:
        return len(self.dag)

    def stages(self) -> list[list[str]]:
        ids = self.dag.ids
        return [[ids[i] for i in group] for group in self.dag.stage_indexes()]

    def with_notes(self, notes: Sequence[str]) -> PlanReport:
        """This report with ``notes`` added (what the executor changed, said by the plan)."""
        return self if not notes else dataclasses.replace(self, notes=(*self.notes, *notes))

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON-ready data (``stormproof plan --json``); keys are a stable API."""
        with gc_paused():
            return self._to_json()

    def _to_json(self) -> dict[str, Any]:
        dag, est, tasks = self.dag, self.estimate, self.spec.tasks
        per_task: dict[str, Any] = {}
        for i, task_id in enumerate(dag.ids):
            source = self.source(i)
            per_task[task_id] = {
                "stage": dag.level[i],
                "earliest_start_s": self.start_s[i],
                "earliest_finish_s": self.finish_s[i],
                "estimated_runtime_s": tasks[i].estimated_runtime,
                "runtime_s": dag.runtime_s[i],
                "runtime_assumed": tasks[i].estimated_runtime is None and source == "declared",
                "source": source,
                "pool": est.pool_name(i),
                "cost_usd": round(est.cost_usd[i], 6),
            }
        return {
            "workflow": self.workflow,
            "tasks_total": self.tasks_total,
            "stages": self.stages(),
            "critical_path": {
                "tasks": [dag.ids[i] for i in self.critical_path],
                "duration_s": est.critical_path_s,
            },
            "tasks": per_task,
            "estimate": {
                "duration_s": est.duration_s,
                "cost_usd": round(est.total_cost_usd, 6),
                "on_demand_cost_usd": round(est.on_demand_cost_usd, 6),
                "vcpu_hours": est.vcpu_hours,
                "lower_bound": est.lower_bound,
                "tasks_without_runtime": est.tasks_without_runtime,
                "assumed_runtime_s": est.assumed_runtime_s,
            },
            "problems": list(self.problems),
            "notes": list(self.notes),
            "checkpoint_advice": self.checkpoint_advice,
            "from_run": None if self.measured is None else self.measured.to_json(len(dag)),
        }


def build_plan(
    spec: WorkflowSpec,
    config: Config,
    container_runtime: str | None,
    measured: Measured | None = None,
) -> PlanReport:
    """Plan a validated workflow on the configured pools (the recipe's dry run, with numbers).

    ``container_runtime`` is the runtime the executor will use (``None`` or
    ``"none"``: commands run on the host); it is a parameter rather than read
    from ``config.container`` so a command-line override reaches the notes.
    ``measured`` (``plan --from-run``) replaces the declared runtimes and checkpoint
    costs of the tasks it measured.
    """
    with gc_paused():
        return _build_plan(spec, config, container_runtime, measured)


def _build_plan(
    spec: WorkflowSpec, config: Config, container_runtime: str | None, measured: Measured | None
) -> PlanReport:
    dag = Dag.from_spec(spec, default_runtime_s=ASSUMED_RUNTIME_S)
    if measured is not None:
        dag = measured.with_runtimes(spec, dag)
    start, finish = dag.earliest()
    pools = config.pool_defs()
    limits = [m for m in (config.policy.max_parallel, spec.global_config.max_parallel) if m]
    if pools and all(p.delegated for p in pools):  # no more jobs at once than they take
        limits.append(sum(p.max_jobs for p in pools))
    est = estimate(
        spec,
        dag,
        pools,
        start_s=start,
        finish_s=finish,
        max_parallel=min(limits) if limits else None,
        interruption_rates={p.name: p.interruption_rate for p in config.pools},
        pools_from=shown_path(config.source),
    )
    notes = _notes(spec, dag, est, config, container_runtime)
    rates = {p.name: p.interruption_rate for p in config.pools}
    advice = _checkpoint_advice(spec, est, rates, measured)
    notes.extend(text for text, _ in advice.values())
    return PlanReport(
        spec=spec,
        dag=dag,
        start_s=tuple(start),
        finish_s=tuple(finish),
        critical_path=tuple(dag.critical_path_indexes(finish)),
        estimate=est,
        problems=est.problems,
        notes=tuple(notes),
        checkpoint_advice={task: data for task, (_, data) in advice.items()},
        measured=measured,
    )


def _checkpoint_advice(
    spec: WorkflowSpec,
    est: Estimate,
    rates: dict[str, float | None],
    measured: Measured | None = None,
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Daly's interval for every checkpointed task, on the pool it would run on; with the
    measured save time and runtime where ``measured`` has them."""
    from stormproof.plan.checkpoint_interval import advice_for_task

    cfg = spec.global_config
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for i, task in enumerate(spec.tasks):
        if not task.checkpoint_enabled:
            continue
        pool = est.pool_name(i)
        save_s = measured.save_s(task.id) if measured is not None else None
        runtime_s = measured.runtime_s(task.id) if measured is not None else None
        advice = advice_for_task(
            task.id,
            checkpoint_cost_s=task.checkpoint_cost if save_s is None else save_s,
            interruption_rate_per_h=rates.get(pool) if pool else None,
            restart_s=cfg.retry_interval,
            pool=pool,
            runtime_s=task.estimated_runtime if runtime_s is None else runtime_s,
            configured_interval_s=task.checkpoint_interval or cfg.checkpoint_interval,
            cost_measured_in=None if save_s is None or measured is None else measured.run,
            unsaved_in=measured.run if measured is not None and save_s is None else None,
        )
        out[task.id] = (advice.text, advice.data)
    return out


def _notes(
    spec: WorkflowSpec, dag: Dag, est: Estimate, config: Config, container_runtime: str | None
) -> list[str]:
    notes: list[str] = []
    if dag.missing_runtime:
        notes.append(
            f"{dag.missing_runtime:,} of {len(dag):,} tasks have no estimated_runtime: the plan "
            f"assumes {human_duration(dag.assumed_runtime_s)} each (the recipe's own assumption, "
            "30 minutes per stage), marked 'assumed' (give each task estimated_runtime, like 2h)"
        )
    from stormproof.runtime.containers import host_notes

    runtime = None if container_runtime in (None, "none") else container_runtime
    notes += host_notes(spec, runtime, config.executor_runs_images)
    delegated = [p for p in config.pool_defs() if p.delegated]
    if delegated:
        shown = ", ".join(
            f"{p.name} ({p.count} x {fmt_number(p.capacity.vcpus)} vCPUs / "
            f"{fmt_number(p.capacity.memory_mib)} MiB, max_jobs {p.max_jobs})"
            for p in delegated
        )
        notes.append(
            f"executor {config.executor!r} places on its own nodes: pools {shown}; the "
            "estimate takes each pool as its nodes, at most max_jobs of the run's jobs in it"
        )
    if not config.pools:
        notes.append(
            "no pools are configured: the plan uses this machine as one free on-demand pool "
            "named 'local' (add pools to stormproof.yaml to price spot and on-demand capacity)"
        )
    notes.extend(est.notes)
    deadline = config.policy.deadline
    if deadline is not None and est.duration_s > deadline:
        notes.append(
            f"the estimated duration {human_duration(est.duration_s)} is longer than "
            f"policy.deadline {human_duration(deadline)}"
        )
    return notes


# --- rendering ---------------------------------------------------------------------------


def render_plan(report: PlanReport, console: Console) -> None:
    """Print the plan: stages, critical path, totals, then problems (red) and notes."""
    dag = report.dag
    n_stages = max(dag.level, default=-1) + 1
    console.print(
        Text.assemble(
            ("Plan ", "bold"),
            (report.workflow, "bold cyan"),
            f" — {report.tasks_total:,} tasks in {n_stages:,} stages",
        )
    )
    if report.tasks_total <= DETAIL_LIMIT:
        _render_stage_tables(report, console)
    else:
        console.print(_summary_table(report, dag.stage_indexes()))
    _render_totals(report, console)
    for problem in report.problems:
        console.print(Text(f"✗ {problem}", style="bold red"))
    for note in report.notes:
        console.print(Text(f"• {note}", style="yellow"))


_TASK_COLUMNS: tuple[tuple[str, JustifyMethod], ...] = (
    ("task", "left"), ("name", "left"), ("vCPUs×nodes", "right"), ("MiB", "right"),
    ("runtime", "right"), ("start", "right"), ("finish", "right"), ("pool", "left"),
    ("cost", "right"),
)  # fmt: skip
_NAME = 1


def _render_stage_tables(report: PlanReport, console: Console) -> None:
    """One table per stage, all with the same column widths so that they line up.

    The name column is left out when the terminal is too narrow for it, so
    that ids and numbers are never truncated.
    """
    rows = {i: _task_cells(report, i) for i in range(report.tasks_total)}
    widths = [len(header) for header, _ in _TASK_COLUMNS]
    for cells in rows.values():
        widths = [max(w, cell.cell_len) for w, cell in zip(widths, cells, strict=True)]
    keep = list(range(len(_TASK_COLUMNS)))
    if sum(widths) + 2 * len(widths) > console.width:
        keep.remove(_NAME)
    for k, group in enumerate(report.dag.stage_indexes()):
        table = Table(
            title=f"Stage {k + 1}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
        )
        for c in keep:
            header, justify = _TASK_COLUMNS[c]
            table.add_column(header, justify=justify, min_width=widths[c], no_wrap=c != _NAME)
        for i in group:
            table.add_row(*(rows[i][c] for c in keep))
        console.print(table)


def _task_cells(report: PlanReport, i: int) -> list[Text]:
    task, est = report.spec.tasks[i], report.estimate
    pool = est.pool_name(i)
    critical = i in report.critical_path
    return [
        Text.assemble(
            (f"{CRITICAL_MARK} " if critical else "  ", "bold"),
            (task.id, "bold" if critical else ""),
        ),
        Text(task.name or ""),
        Text(f"{fmt_number(task.vcpus)}×{task.nodes}"),
        Text(fmt_number(task.memory)),
        _runtime_cell(report, i),
        Text(human_duration(report.start_s[i])),
        Text(human_duration(report.finish_s[i])),
        Text(pool, style="green") if pool else Text("no fit", style="red"),
        Text(fmt_usd(est.cost_usd[i])),
    ]


def _runtime_cell(report: PlanReport, i: int) -> Text:
    """The runtime the plan uses: ``2h 00m``, ``12m 03s measured``, ``30m 00s assumed``."""
    shown = human_duration(report.dag.runtime_s[i])
    if report.source(i) == "measured":
        return Text(f"{shown} measured", style="cyan")
    if report.spec.tasks[i].estimated_runtime is None:
        return Text(f"{shown} assumed", style="yellow")
    return Text(shown)


def _summary_table(report: PlanReport, groups: list[list[int]]) -> Table:
    table = Table(
        title=f"Stages (more than {DETAIL_LIMIT} tasks: one row per stage)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("stage", "right"), ("tasks", "right"), ("vCPUs", "right"), ("start", "right"),
        ("finish", "right"), ("pools", "left"), ("cost", "right"),
    )  # fmt: skip
    for header, justify in columns:
        table.add_column(header, justify=justify)
    shown: list[int | None] = list(range(len(groups)))
    if len(groups) > STAGE_ROWS_LIMIT:
        half = STAGE_ROWS_LIMIT // 2
        shown = [*range(half), None, *range(len(groups) - half, len(groups))]
    tasks, est = report.spec.tasks, report.estimate
    for k in shown:
        if k is None:
            table.add_row("…", f"{len(groups) - STAGE_ROWS_LIMIT:,} stages", *[""] * 5)
            continue
        group = groups[k]
        pools = Counter(est.pool_name(i) or "fits nowhere" for i in group)
        table.add_row(
            f"{k + 1:,}",
            f"{len(group):,}",
            fmt_number(sum(tasks[i].vcpus * tasks[i].nodes for i in group)),
            human_duration(min(report.start_s[i] for i in group)),
            human_duration(max(report.finish_s[i] for i in group)),
            ", ".join(f"{name} ×{count:,}" for name, count in pools.most_common(3))
            + (", …" if len(pools) > 3 else ""),
            fmt_usd(sum(est.cost_usd[i] for i in group)),
        )
    return table


def _render_totals(report: PlanReport, console: Console) -> None:
    est, ids = report.estimate, report.dag.ids
    path = [ids[i] for i in report.critical_path]
    if len(path) > 12:
        path = [*path[:5], f"… {len(path) - 10:,} more …", *path[-5:]]
    console.print(
        Text.assemble(
            (f"{CRITICAL_MARK} Critical path ", "bold"),
            f"({human_duration(est.critical_path_s)}): ",
            " → ".join(path),
        )
    )
    assumed = []
    if est.assumed_runtime_s is not None:
        assumed.append(
            f"assumes {human_duration(est.assumed_runtime_s)} for each of "
            f"{est.tasks_without_runtime:,} tasks without estimated_runtime"
        )
    bound = _qualified(["lower bound"] if est.lower_bound else [], assumed)
    cost_bound = _qualified(["lower bound"] if est.problems else [], assumed)
    saving = ""
    if est.on_demand_cost_usd > est.total_cost_usd > 0 or (
        est.on_demand_cost_usd > 0 and est.total_cost_usd == 0
    ):
        pct = 100.0 * (1.0 - est.total_cost_usd / est.on_demand_cost_usd)
        saving = f", {pct:.0f}% less than all on-demand ({fmt_usd(est.on_demand_cost_usd)})"
    console.print(Text.assemble(("Duration  ", "bold"), human_duration(est.duration_s), bound))
    console.print(
        Text.assemble(("Cost      ", "bold"), fmt_usd(est.total_cost_usd), cost_bound, saving)
    )
    console.print(Text.assemble(("vCPU-hours ", "bold"), fmt_number(round(est.vcpu_hours, 1))))
    if report.measured is not None:
        console.print(Text(report.measured.summary(report.tasks_total), style="cyan"))
        if saves := report.measured.saves_measured():
            console.print(
                Text(
                    f"checkpoint save: measured in {report.measured.run} for {saves:,} "
                    f"{'task' if saves == 1 else 'tasks'} (the interval advice uses it)",
                    style="cyan",
                )
            )


def _qualified(*parts: list[str]) -> str:
    words = [w for part in parts for w in part]
    return f" ({'; '.join(words)})" if words else ""


def fmt_usd(value: float) -> str:
    """``$1,234``, ``$12.34``, ``$0.0123``: cents where they matter, no false precision."""
    if value >= 100:
        return f"${value:,.0f}"
    if value >= 1 or value == 0:
        return f"${value:,.2f}"
    return f"${value:.4f}"


def shown_path(source: Path | None) -> str:
    """The configuration file as the user would type it: relative to here when inside it."""
    if source is None:
        return "stormproof.yaml"
    try:
        return str(source.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(source)
