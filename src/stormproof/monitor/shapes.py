"""The JSON the dashboard, the API and the report show, beyond ``status --json``'s.

``status NAME --json`` (``view_query.run_json``), the runs list (``run_summary_json``) and
``history --json`` (``history_json``) are built by the very functions the CLI uses; this
module adds what only a picture needs: the timeline of attempts, the DAG by stage, cost
over time, one task, and the tail of a log (from the home, or from S3 for a run on AWS).
"""

from __future__ import annotations

from typing import Any, Final

from stormproof.core.machine import Cost
from stormproof.errors import StormproofError
from stormproof.runtime.attempt_logs import STREAMS, attempt_logs, ran_on_aws
from stormproof.runtime.home import Home
from stormproof.runtime.view import RunView
from stormproof.runtime.view_records import AttemptView, cost_json
from stormproof.store.base import RunInfo

#: Most attempts one timeline shows (the latest ones): a chart of more says nothing more.
TIMELINE_ATTEMPTS: Final = 2000
#: Points of the cost-over-time series.
COST_POINTS: Final = 300
#: Task chips shown per stage of the DAG (the rest are counted, and paged in the task list).
STAGE_TASKS: Final = 60
#: Most bytes of a log one request returns (the tail).
LOG_TAIL_BYTES: Final = 64 * 1024


class NotFound(StormproofError):
    """A task, attempt or log the run does not have (HTTP 404)."""


class LogUnreadable(StormproofError):
    """The store that keeps an AWS attempt's output (S3) refused or failed (HTTP 502)."""


def _row_of(att: AttemptView) -> str:
    return att.instances[0] if att.instances else (att.pool or "unplaced")


def timeline_json(view: RunView, now: float, limit: int = TIMELINE_ATTEMPTS) -> dict[str, Any]:
    """Attempts as bars on the rows of the instances (or nodes) they ran on.

    A bar starts when the attempt was placed and ends when it ended (``null``: still
    running at ``now``); its state is its outcome. ``notices`` are the interruption
    notices and losses, marked on their instance's row.
    """
    attempts = [(tid, a) for tid, t in view.tasks.items() for a in t.attempts]
    attempts.sort(key=lambda ta: ta[1].launched)
    shown = attempts[-limit:] if limit else []
    rows: dict[str, int] = {}
    bars = []
    for tid, a in shown:
        row = rows.setdefault(_row_of(a), len(rows))
        bars.append(
            {
                "id": f"{tid}/{a.number}",
                "task": tid,
                "row": row,
                "start": a.launched,
                "started": a.started,
                "end": a.ended,
                "state": a.state,
                "pool": a.pool,
                "market": a.market,
                "instances": a.instances,
            }
        )
    marks = []
    for n in view.notices:
        row = rows.setdefault(n["instance"], len(rows))
        marks.append({"at": n["at"], "row": row, "kind": n["kind"], "instance": n["instance"]})
    return {
        "origin": view.started,
        "now": view.ended if view.ended is not None else now,
        "rows": list(rows),
        "attempts": bars,
        "notices": marks,
        "total_attempts": len(attempts),
        "cost": cost_series(view),
    }


def cost_series(view: RunView, points: int = COST_POINTS) -> list[dict[str, float]]:
    """Money as attempts ended: spent, all-on-demand equivalent, saved and wasted so far."""
    ended = sorted(
        (a for t in view.tasks.values() for a in t.attempts if a.final_cost is not None),
        key=lambda a: a.ended or 0.0,
    )
    total = Cost()
    series = [] if view.started is None else [{"at": view.started, **cost_json(total)}]
    step = max(1, len(ended) // points)
    for k, a in enumerate(ended, 1):
        assert a.final_cost is not None
        total.add(a.final_cost)
        if k % step == 0 or k == len(ended):
            c = cost_json(total)
            series.append({"at": a.ended or 0.0, **c})
    return series


def stages_json(view: RunView, per_stage: int = STAGE_TASKS) -> list[dict[str, Any]]:
    """The DAG by stage: each stage's counts by state and its first tasks with their state."""
    stages: list[dict[str, Any]] = []
    for tid, t in view.tasks.items():
        while len(stages) <= t.stage:
            stages.append({"stage": len(stages) + 1, "total": 0, "counts": {}, "tasks": []})
        s = stages[t.stage]
        s["total"] += 1
        s["counts"][t.state] = s["counts"].get(t.state, 0) + 1
        if len(s["tasks"]) < per_stage:
            s["tasks"].append({"id": tid, "name": t.name, "state": t.state})
    return stages


def task_json(view: RunView, task: str, now: float) -> dict[str, Any]:
    t = view.tasks.get(task)
    if t is None:
        raise NotFound(f"run {view.name!r} has no task {task!r}")
    at = view.ended if view.ended is not None else now
    return {"id": task, **t.to_json(at)}


def log_tail(home: Home, run: RunInfo, view: RunView, task: str, number: int, stream: str) -> bytes:
    """The last ``LOG_TAIL_BYTES`` of an attempt's stdout or stderr, wherever it is kept.

    Only an attempt the run made: the task must be one of the run's, the attempt one it
    made. An attempt that ran here, on Slurm or on Dask has its file in the run's own
    directory, opened without following a symbolic link (a task could replace its log by a
    link to any file the server may read). One that ran on AWS has it in the run's bucket,
    as its agent last uploaded it (``LogUnreadable`` if S3 will not say).
    """
    if stream not in STREAMS:
        raise NotFound(f"no log stream {stream!r}: stdout or stderr")
    t = view.tasks.get(task)
    if t is None:
        raise NotFound(f"run {run.name!r} has no task {task!r}")
    if number not in {a.number for a in t.attempts}:
        raise NotFound(f"task {task!r} of run {run.name!r} has no attempt {number}")
    on_aws = ran_on_aws(run.meta)
    if not on_aws:
        _check_inside(home, run.name, task, number, stream)
    try:
        return attempt_logs(home, run.name, run.meta, task, number).tail(stream, LOG_TAIL_BYTES)
    except StormproofError as exc:  # S3's refusal; here, a link on the way or not a file
        raise (LogUnreadable if on_aws else NotFound)(str(exc)) from None


def _check_inside(home: Home, run: str, task: str, number: int, stream: str) -> None:
    """A task named ``../..`` would take its log's path out of the run's directory."""
    run_dir = home.run_dir(run).resolve()
    path = home.attempt_dir(run, task, number) / f"{stream}.log"
    if not path.resolve().is_relative_to(run_dir):
        raise NotFound(f"the {stream} log of {task}/{number} is not in the run's directory")
