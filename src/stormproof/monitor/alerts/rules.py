"""Alert rules evaluated from a run's log rows: pure, deterministic and replay-safe.

``AlertRules.feed(row)`` folds one row of the log and returns the alerts it fires. It reads
no clock and does no I/O: time comes from the rows (``Row.at``), and an alert's id is
derived from its cause (the rule, and the task, pool, trip or row that caused it), so
folding the same log always fires the same alerts with the same ids.

*Once per cause.* An alert is fired at most once per id: ``feed`` remembers what it fired,
and the ``AlertRaised`` rows the driver appends (in the same transaction as the row that
caused them) say the same after a resume. Delivery is at least once: an alert whose
delivery to a target was never settled in the log (``AlertDelivered``, or a final
``AlertDeliveryFailed``) is sent again after a resume; receivers can drop duplicates by the
alert id in the message.

The rows this package adds to a run's log are decisions (notes), never events: the core
replays only events, so alerts cannot change what a run does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final

from stormproof.store.base import Row

ALERT_RAISED: Final = "AlertRaised"
ALERT_DELIVERED: Final = "AlertDelivered"
ALERT_DELIVERY_FAILED: Final = "AlertDeliveryFailed"
DEADLINE_ESTIMATED: Final = "DeadlineEstimated"
#: Rows that say something about alerts; ``history`` shows them, the view ignores them.
ALERT_ROW_KINDS: Final = (ALERT_RAISED, ALERT_DELIVERED, ALERT_DELIVERY_FAILED, DEADLINE_ESTIMATED)


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One rule as the run recorded it (``config.AlertConfig.to_rule``)."""

    on: str
    notify: tuple[str, ...]
    above: float | None = None
    per_s: float | None = None
    pool: str | None = None
    deadline_s: float | None = None
    every_s: float = 60.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlertRule:
        return cls(
            on=str(d["on"]),
            notify=tuple(d.get("notify") or ()),
            above=d.get("above"),
            per_s=d.get("per_s"),
            pool=d.get("pool"),
            deadline_s=d.get("deadline_s"),
            every_s=float(d.get("every_s") or 60.0),
        )


@dataclass(frozen=True, slots=True)
class Alert:
    """What fired: ``id`` names the cause; ``cause`` is the seq of the event behind it."""

    id: str
    rule: int
    on: str
    severity: str  # apprise's notify types: info | success | warning | failure
    title: str
    body: str
    at: float
    cause: int

    def to_data(self) -> dict[str, Any]:
        return {
            "alert_id": self.id,
            "rule": self.rule,
            "on": self.on,
            "severity": self.severity,
            "title": self.title,
            "body": self.body,
        }

    @classmethod
    def from_row(cls, row: Row) -> Alert:
        d = row.data
        return cls(
            str(d["alert_id"]),
            int(d["rule"]),
            str(d["on"]),
            str(d["severity"]),
            str(d["title"]),
            str(d["body"]),
            row.at,
            row.cause or row.seq,
        )


@dataclass
class _Rate:
    """A sliding window of interruption times for one ``interruption_rate`` rule."""

    times: deque[float] = field(default_factory=deque)
    above: bool = False


@dataclass
class Progress:
    """What the deadline estimate needs to know about the run, as of the rows fed so far."""

    started_at: float | None = None
    ended: set[str] = field(default_factory=set)
    #: Running task -> when its live attempt started (or was launched).
    running: dict[str, float] = field(default_factory=dict)
    finished: bool = False


class AlertRules:
    """The rules of one run, and the fold of its log that decides what fires."""

    def __init__(self, run: str, workflow: str, rules: Sequence[AlertRule]) -> None:
        self.run = run
        self.workflow = workflow
        self.rules = tuple(rules)
        self.fired: set[str] = set()
        #: Alerts in the log, by id, and the (alert id, target index) pairs settled.
        self.raised: dict[str, Alert] = {}
        self.settled: set[tuple[str, int]] = set()
        self.progress = Progress()
        self.last_event_seq = 0
        self.spent_usd = 0.0
        self._pool_of_instance: dict[str, str] = {}
        self._state_of_instance: dict[str, str] = {}
        self._taken_instances: set[str] = set()
        self._pool_of_attempt: dict[str, str] = {}
        self._task_of_attempt: dict[str, str] = {}
        self._rates = {i: _Rate() for i, r in enumerate(self.rules) if r.on == "interruption_rate"}
        self._at_risk: dict[int, bool] = {}

    # ------------------------------------------------------------------ the fold
    def feed(self, row: Row) -> list[Alert]:
        """Fold one row; the alerts it fires, each at most once in the run's life."""
        if row.category == "event":
            self.last_event_seq = row.seq
        handler = _HANDLERS.get(row.kind)
        if handler is None:
            return []
        found = handler(self, row)
        fresh = [a for a in found if a.id not in self.fired]
        for alert in fresh:
            self.fired.add(alert.id)
        return fresh

    def feed_all(self, rows: Iterable[Row]) -> list[Alert]:
        return [a for row in rows for a in self.feed(row)]

    def pending(self) -> list[tuple[Alert, int]]:
        """Raised alerts whose delivery to a target was never settled: send them again."""
        return [
            (alert, k)
            for alert in self.raised.values()
            for k in range(len(self.rules[alert.rule].notify))
            if (alert.id, k) not in self.settled
        ]

    def deadline_rules(self) -> list[int]:
        return [i for i, r in enumerate(self.rules) if r.on == "deadline_at_risk"]

    # ------------------------------------------------------------------ helpers
    def _alert(self, row: Row, rule: int, key: str, severity: str, title: str, body: str) -> Alert:
        on = self.rules[rule].on
        alert_id = f"{self.run}:{rule}:{on}" + (f":{key}" if key else "")
        cause = row.seq if row.category == "event" else (row.cause or row.seq)
        when = datetime.fromtimestamp(row.at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        text = (
            f"{body}\n\nrun: {self.run} (workflow {self.workflow})\nat: {when}\n"
            f"rule: alerts[{rule}] on {on}\nalert id: {alert_id}\n"
            f"details: stormproof status {self.run}"
        )
        return Alert(alert_id, rule, on, severity, f"stormproof: {title}", text, row.at, cause)

    def _matching(self, on: str, pool: str | None = None) -> list[int]:
        return [
            i
            for i, r in enumerate(self.rules)
            if r.on == on and (pool is None or r.pool is None or r.pool == pool)
        ]

    def _interruption(self, row: Row, pool: str, what: str) -> list[Alert]:
        out = []
        for i in self._matching("interruption_rate", pool):
            rule, rate = self.rules[i], self._rates[i]
            per_s, above = rule.per_s or 0.0, rule.above or 0.0
            rate.times.append(row.at)
            while rate.times and rate.times[0] <= row.at - per_s:
                rate.times.popleft()
            if len(rate.times) > above and not rate.above:
                rate.above = True
                scope = f" in pool {rule.pool}" if rule.pool else ""
                title = (
                    f"{len(rate.times)} interruptions in {_duration(per_s)}{scope} "
                    f"in run {self.run}"
                )
                body = f"{title} (more than {above:g}); the last: {what}."
                out.append(self._alert(row, i, str(row.seq), "warning", title, body))
            elif len(rate.times) <= above:
                rate.above = False
        return out


# ---------------------------------------------------------------------- handlers
def _run_started(r: AlertRules, row: Row) -> list[Alert]:
    if r.progress.started_at is None:
        r.progress.started_at = row.at
    return []


def _launch(r: AlertRules, row: Row) -> list[Alert]:
    d = row.data
    r._pool_of_attempt[d["attempt_id"]] = str(d.get("pool", ""))
    r._task_of_attempt[d["attempt_id"]] = str(d["task_id"])
    r.progress.running.setdefault(str(d["task_id"]), row.at)
    return []


def _started(r: AlertRules, row: Row) -> list[Alert]:
    task = r._task_of_attempt.get(row.data.get("attempt_id", ""))
    if task is not None:
        r.progress.running[task] = row.at
    return []


def _attempt_ended(r: AlertRules, row: Row) -> list[Alert]:
    d = row.data
    r._pool_of_attempt.pop(d["attempt_id"], None)
    task = r._task_of_attempt.pop(d["attempt_id"], None)
    if task is not None:
        r.progress.running.pop(task, None)
    r.spent_usd += float(d.get("cost_usd", 0.0))
    out = []
    for i in r._matching("cost_above"):
        above = r.rules[i].above or 0.0
        if r.spent_usd > above:
            title = f"run {r.run} has spent ${r.spent_usd:.2f}, more than ${above:g}"
            body = f"{title}; the last attempt to end was {d['attempt_id']}."
            out.append(r._alert(row, i, "", "warning", title, body))
    return out


def _instance_changed(r: AlertRules, row: Row) -> list[Alert]:
    d = row.data
    r._pool_of_instance[d["instance_id"]] = str(d.get("pool", ""))
    r._state_of_instance[d["instance_id"]] = str(d.get("state", ""))
    return []


def _instance_taken(r: AlertRules, row: Row) -> list[Alert]:
    """A notice to an up instance, or the loss of one up or draining: once per instance
    (the core ignores notices to instances already going, as ``status`` does)."""
    iid = str(row.data.get("instance_id", ""))
    state = r._state_of_instance.get(iid)
    counted = ("up", "draining") if row.kind == "InstanceLost" else ("up",)
    if state not in counted or iid in r._taken_instances:
        return []
    r._taken_instances.add(iid)
    what = "lost" if row.kind == "InstanceLost" else "interruption notice"
    return r._interruption(row, r._pool_of_instance.get(iid, ""), f"{what} for {iid}")


def _preempted(r: AlertRules, row: Row) -> list[Alert]:
    attempt = str(row.data.get("attempt_id", ""))
    pool = r._pool_of_attempt.get(attempt, "")
    return r._interruption(row, pool, f"attempt {attempt} preempted")


def _breaker(r: AlertRules, row: Row) -> list[Alert]:
    d = row.data
    if d.get("state") != "open":
        return []
    pool = str(d["pool"])
    out = []
    for i in r._matching("breaker_open", pool):
        title = f"the breaker of pool {pool} opened in run {r.run}"
        body = f"{title}: {d.get('reason', '')} (trip {d.get('trips', 0)})."
        key = f"{pool}:{d.get('trips', 0)}"
        out.append(r._alert(row, i, key, "warning", title, body))
    return out


def _task_ended(r: AlertRules, row: Row) -> list[Alert]:
    d = row.data
    task = str(d["task_id"])
    r.progress.ended.add(task)
    r.progress.running.pop(task, None)
    if d.get("state") != "failed":
        return []
    out = []
    for i in r._matching("task_failed"):
        title = f"task {task} failed in run {r.run}"
        body = f"{title}: {d.get('error') or 'failed'}: {d.get('reason', '')}".rstrip(": ")
        out.append(r._alert(row, i, task, "failure", title, body))
    return out


def _run_finished(r: AlertRules, row: Row) -> list[Alert]:
    state = str(row.data.get("state", ""))
    r.progress.finished = True
    on = {"failed": "workflow_failed", "succeeded": "workflow_succeeded"}.get(state)
    if on is None:
        return []
    severity = "failure" if state == "failed" else "success"
    took = ""
    if r.progress.started_at is not None:
        took = f" after {_duration(row.at - r.progress.started_at)}"
    out = []
    for i in r._matching(on):
        title = f"run {r.run} {state}"
        body = f"{title}{took}, ${r.spent_usd:.4f} spent: {row.data.get('reason', '')}"
        out.append(r._alert(row, i, "", severity, title, body.rstrip(": ")))
    return out


def _deadline(r: AlertRules, row: Row) -> list[Alert]:
    d = row.data
    if "finish_at" not in d:
        return []  # the estimate could not be made (its error is in the row)
    i = int(d["rule"])
    finish, deadline = float(d["finish_at"]), float(d["deadline_at"])
    late = finish > deadline
    was = r._at_risk.get(i, False)
    r._at_risk[i] = late
    if not late or was:
        return []
    title = f"run {r.run} may miss its deadline"
    body = (
        f"{title}: the simulator puts the remaining work at {_duration(d['remaining_s'])}, "
        f"finishing {_duration(finish - deadline)} after the deadline "
        f"({d.get('simulations', 1)} simulated runs)."
    )
    return [r._alert(row, i, str(row.seq), "warning", title, body)]


def _raised(r: AlertRules, row: Row) -> list[Alert]:
    alert = Alert.from_row(row)
    r.fired.add(alert.id)
    r.raised[alert.id] = alert
    return []


def _settled(r: AlertRules, row: Row) -> list[Alert]:
    d = row.data
    if row.kind == ALERT_DELIVERED or d.get("final"):
        r.settled.add((str(d["alert_id"]), int(d["target"])))
    return []


_HANDLERS = {
    "RunStarted": _run_started,
    "LaunchAttempt": _launch,
    "AttemptStarted": _started,
    "AttemptEnded": _attempt_ended,
    "AttemptPreempted": _preempted,
    "InstanceChanged": _instance_changed,
    "InterruptionNotice": _instance_taken,
    "InstanceLost": _instance_taken,
    "BreakerChanged": _breaker,
    "TaskEnded": _task_ended,
    "RunFinished": _run_finished,
    DEADLINE_ESTIMATED: _deadline,
    ALERT_RAISED: _raised,
    ALERT_DELIVERED: _settled,
    ALERT_DELIVERY_FAILED: _settled,
}


def _duration(seconds: float) -> str:
    s = max(0.0, float(seconds))
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.1f}h"
