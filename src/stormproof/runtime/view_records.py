"""The records a run's view holds: its tasks, their attempts, its instances, and their costs.

``runtime/view.py`` folds log rows into them; each knows its ``to_json`` (what ``status
--json`` and the dashboard show) and, for tasks and attempts, its ``to_record``, what a
stored view keeps of it (``runtime/view_store.py``), read back by ``from_record``.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from stormproof.core.machine import Cost


def attempt_cost(data: dict[str, Any]) -> Cost:
    """What an ended attempt cost, from its ``AttemptEnded`` note."""
    return Cost(
        float(data.get("cost_usd", 0.0)),
        float(data.get("on_demand_usd", 0.0)),
        float(data.get("wasted_usd", 0.0)),
        float(data.get("wasted_s", 0.0)),
    )


def checkpoint_json(data: dict[str, Any], at: float) -> dict[str, Any]:
    """One committed checkpoint as ``status --json`` lists it under its attempt, from its
    ``CheckpointCommitted`` row: ``save_s`` is ``None`` where the log did not record it
    (written before it was measured)."""
    save_s = float(data.get("save_s") or 0.0)
    return {
        "seq": int(data.get("seq", 0)),
        "files": int(data.get("files", 0)),
        "bytes": int(data.get("total_bytes", 0)),
        "save_s": round(save_s, 6) if save_s > 0 else None,
        "at": at,
    }


@dataclass
class CheckpointTotals:
    """The run's committed checkpoints, over every task: how many, their bytes, and the save
    times measured (``status`` prints one line of them rather than a column per task)."""

    count: int = 0
    bytes: int = 0
    save_s: float = 0.0
    #: Checkpoints whose save time the log records (0 for one written before it was).
    measured: int = 0
    max_save_s: float = 0.0

    def add(self, checkpoint: dict[str, Any]) -> None:
        self.count += 1
        self.bytes += int(checkpoint["bytes"])
        save_s = checkpoint["save_s"]
        if save_s is not None:
            self.save_s += save_s
            self.measured += 1
            self.max_save_s = max(self.max_save_s, save_s)

    def to_list(self) -> list[Any]:
        return [self.count, self.bytes, self.save_s, self.measured, self.max_save_s]

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "bytes": self.bytes,
            "mean_save_s": round(self.save_s / self.measured, 6) if self.measured else None,
            "max_save_s": round(self.max_save_s, 6) if self.measured else None,
        }


def closed_breaker() -> dict[str, Any]:
    """A pool's breaker before its first transition: closed, never tripped."""
    return {"state": "closed", "until": None, "trips": 0, "reason": "no trips yet"}


def cost_json(c: Cost) -> dict[str, float]:
    """Money in USD (DESIGN §5), in the core's own type, as ``status --json`` shows it."""
    return {
        "spent": round(c.spent, 6),
        "on_demand_equivalent": round(c.on_demand_equivalent, 6),
        "saved": round(c.saved, 6),
        "wasted": round(c.wasted, 6),
        "wasted_seconds": round(c.wasted_s, 3),
    }


@dataclass
class AttemptView:
    number: int
    state: str = "placed"
    exit_code: int | None = None
    started: float | None = None
    ended: float | None = None
    error: str | None = None
    pool: str | None = None
    market: str | None = None
    instances: list[str] = field(default_factory=list)
    budget: str | None = None
    reason: str = ""
    launched: float = 0.0
    usd_per_h: float = 0.0
    on_demand_usd_per_h: float = 0.0
    restored_from: int | None = None
    final_cost: Cost | None = None
    #: On a delegated pool an attempt is billed from its start, not while it waits queued.
    billed_from_start: bool = False
    #: When the task became ready for this attempt (queue wait = started - queued).
    queued: float | None = None
    #: CPU seconds and peak RSS the backend measured (``AttemptExited``); ``None``: unknown.
    cpu_s: float | None = None
    max_rss_mib: float | None = None
    #: The checkpoints it committed, oldest first (``checkpoint_json``).
    checkpoints: list[dict[str, Any]] = field(default_factory=list)

    def cost(self, now: float) -> Cost:
        """The billed cost once ended; while it runs, what it has cost so far."""
        if self.final_cost is not None:
            return self.final_cost
        began = self.launched
        if self.billed_from_start:
            began = self.started if self.started is not None else now
        seconds = max(0.0, now - began)
        return Cost(seconds * self.usd_per_h / 3600, seconds * self.on_demand_usd_per_h / 3600)

    def to_record(self) -> dict[str, Any]:
        """What the store keeps of the attempt, for ``from_record``: every field that is not
        its default (a third less to write and read: the driver saves a record per task)."""
        record = {k: v for k, v in self.__dict__.items() if _ATTEMPT_DEFAULTS.get(k, _NONE) != v}
        if not self.checkpoints:  # most attempts commit none: nothing to write
            del record["checkpoints"]
        if self.final_cost is not None:
            c = self.final_cost
            record["final_cost"] = [c.spent, c.on_demand_equivalent, c.wasted, c.wasted_s]
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> AttemptView:
        """The attempt ``to_record`` wrote (a stored view of this ``view.VIEW_FORMAT``). Filled in
        place, not through ``__init__`` (the dashboard's first look at a 10,000-task run is
        three times faster so): a field left out reads as its default, the class attribute
        a dataclass keeps for it."""
        att = cls.__new__(cls)
        att.__dict__.update(record)
        att.instances = list(record["instances"])
        att.checkpoints = list(record.get("checkpoints", ()))
        final = record.get("final_cost")
        att.final_cost = None if final is None else Cost(*final)
        return att

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state,
            "exit_code": self.exit_code,
            "started": self.started,
            "ended": self.ended,
            "error": self.error,
            "pool": self.pool,
            "market": self.market,
            "instance": self.instances[0] if self.instances else None,
            "instances": self.instances,
            "budget": self.budget,
            "reason": self.reason,
            "restored_from": self.restored_from,
            "cost": cost_json(self.cost(now)),
            "launched": self.launched,
            "queued": self.queued,
            "cpu_s": self.cpu_s,
            "max_rss_mib": self.max_rss_mib,
            "checkpoints": [dict(c) for c in self.checkpoints],
        }


#: Fields an attempt's record leaves out when they hold these (``instances`` has no plain
#: default and is always written; ``final_cost`` is written as a list).
_ATTEMPT_DEFAULTS: dict[str, Any] = {
    f.name: f.default
    for f in fields(AttemptView)
    if f.default is not MISSING and f.name != "final_cost"
}
_NONE = object()


@dataclass
class TaskView:
    id: str
    name: str
    stage: int
    state: str = "waiting"
    error: str | None = None
    reason: str = ""
    attempts: list[AttemptView] = field(default_factory=list)
    position: int = 0  # in the workflow file: the order tasks are listed in
    #: When the task last became ready (its next attempt's ``queued``).
    ready_at: float | None = None
    #: When a task in backoff is retried (its retry timer is due), epoch seconds.
    retry_at: float | None = None

    def to_record(self) -> dict[str, Any]:
        """Every field, for ``from_record``: what the store keeps of the task."""
        record = dict(self.__dict__)
        record["attempts"] = [a.to_record() for a in self.attempts]
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TaskView:
        """The task ``to_record`` wrote, filled in place as ``AttemptView.from_record`` is."""
        task = cls.__new__(cls)
        task.__dict__.update(record)
        task.attempts = [AttemptView.from_record(a) for a in record["attempts"]]
        return task

    def live_attempts(self) -> list[AttemptView]:
        return [a for a in self.attempts if a.final_cost is None]

    def cost(self, now: float) -> Cost:
        total = Cost()
        for att in self.attempts:
            total.add(att.cost(now))
        return total

    def budgets(self) -> dict[str, int]:
        """How many ended attempts drew on each budget (retry, interruptions)."""
        used = {"retry": 0, "interruptions": 0}
        for att in self.attempts:
            if att.budget in used:
                used[att.budget] += 1
        return used

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "stage": self.stage + 1,
            "state": self.state,
            "error": self.error,
            "retry_at": self.retry_at,
            "budgets_used": self.budgets(),
            "cost": cost_json(self.cost(now)),
            "attempts": [a.to_json(now) for a in self.attempts],
        }


@dataclass
class InstanceView:
    id: str
    pool: str
    market: str
    state: str
    reason: str = ""
    attempts: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pool": self.pool,
            "market": self.market,
            "state": self.state,
            "attempts": list(self.attempts),
            "reason": self.reason,
        }
