"""The API's shapes as pydantic models, for its OpenAPI document.

They describe, they do not build: every payload is made by the functions ``status``,
``history`` and the dashboard share (``runtime.view``, ``monitor.shapes``), and the tests
validate real payloads against these models (``extra="forbid"``), so the document cannot
drift from what the API sends.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CostShape(_Shape):
    spent: float
    on_demand_equivalent: float
    saved: float
    wasted: float
    wasted_seconds: float


class CheckpointShape(_Shape):
    """A checkpoint the attempt committed; ``save_s`` (seconds from the task's commit to the
    checkpoint in the store) is null where the log did not record it."""

    seq: int
    files: int
    bytes: int
    save_s: float | None
    at: float


class AttemptShape(_Shape):
    number: int
    state: str
    exit_code: int | None
    started: float | None
    ended: float | None
    error: str | None
    pool: str | None
    market: str | None
    instance: str | None
    instances: list[str]
    budget: str | None
    reason: str
    restored_from: int | None
    cost: CostShape
    launched: float
    queued: float | None
    cpu_s: float | None
    max_rss_mib: float | None
    checkpoints: list[CheckpointShape]


class BudgetsShape(_Shape):
    retry: int
    interruptions: int


class TaskShape(_Shape):
    name: str
    stage: int
    state: str
    error: str | None
    #: When a task in backoff is tried again (epoch seconds), else null.
    retry_at: float | None
    budgets_used: BudgetsShape
    cost: CostShape
    attempts: list[AttemptShape]


class OneTaskShape(TaskShape):
    id: str


class BreakerShape(_Shape):
    state: str
    until: float | None
    trips: int
    reason: str


class InstanceShape(_Shape):
    id: str
    pool: str
    market: str
    state: str
    attempts: list[str]
    reason: str


class NoticeShape(_Shape):
    at: float
    instance: str
    pool: str
    kind: str
    source: str


class ResourcesShape(_Shape):
    cpu_s: float | None
    max_rss_mib: float | None
    attempts_measured: int


class CheckpointTotalsShape(_Shape):
    """Every checkpoint the run committed; the save times over those that recorded one."""

    count: int
    bytes: int
    mean_save_s: float | None
    max_save_s: float | None


class PageShape(_Shape):
    """Which tasks were sent: ``total`` match the filters; the next page starts at
    ``next_offset`` (``None``: this is the last)."""

    offset: int
    limit: int | None
    total: int
    next_offset: int | None


class StageCountsShape(_Shape):
    stage: int
    counts: dict[str, int]


class RunShape(_Shape):
    """``stormproof status NAME --json``: the run, and one page of its tasks (``page``)."""

    name: str
    workflow: str
    state: str
    started: float | None
    ended: float | None
    counts: dict[str, int]
    stages: list[StageCountsShape]
    cost: CostShape
    interruptions: int
    instance_notices: int
    running_attempts: int
    resources: ResourcesShape
    checkpoints: CheckpointTotalsShape
    last_seq: int
    breakers: dict[str, BreakerShape]
    fleet: list[InstanceShape]
    notices: list[NoticeShape]
    tasks: dict[str, TaskShape]
    page: PageShape


class ProgressShape(_Shape):
    done: int
    total: int


class RunSummaryShape(_Shape):
    """One item of ``stormproof status --json``."""

    name: str
    workflow: str
    created: float
    state: str
    started: float | None
    ended: float | None
    counts: dict[str, int]
    progress: ProgressShape
    cost: CostShape
    interruptions: int
    running_attempts: int


class TasksShape(_Shape):
    tasks: dict[str, TaskShape]
    page: PageShape


class StageTaskShape(_Shape):
    id: str
    name: str
    state: str


class StageShape(_Shape):
    stage: int
    total: int
    counts: dict[str, int]
    tasks: list[StageTaskShape]


class BarShape(_Shape):
    id: str
    task: str
    row: int
    start: float
    started: float | None
    end: float | None
    state: str
    pool: str | None
    market: str | None
    instances: list[str]


class MarkShape(_Shape):
    at: float
    row: int
    kind: str
    instance: str


class CostPointShape(CostShape):
    at: float


class TimelineShape(_Shape):
    origin: float | None
    now: float
    rows: list[str]
    attempts: list[BarShape]
    notices: list[MarkShape]
    total_attempts: int
    cost: list[CostPointShape]


class HistoryRowShape(_Shape):
    """One item of ``stormproof history NAME --json``."""

    seq: int
    category: str
    kind: str
    at: float
    #: ``at`` in ISO 8601, local time.
    time: str
    cause: int | None
    data: dict[str, Any]
    cost: CostShape | None = None


class SessionShape(_Shape):
    csrf: str
    csrf_header: str
    version: str


class CancelShape(_Shape):
    run: str
    requested: bool
    message: str


class ErrorShape(_Shape):
    detail: str
