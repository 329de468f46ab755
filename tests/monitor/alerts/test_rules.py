"""The alert rules, fed log rows made of the core's own events and decisions."""

from __future__ import annotations

from collections.abc import Sequence

from stormproof.core.decisions import (
    AttemptEnded,
    BreakerChanged,
    Decision,
    InstanceChanged,
    LaunchAttempt,
    RunFinished,
    TaskEnded,
)
from stormproof.core.events import Event, InstanceLost, InterruptionNotice, RunStarted
from stormproof.monitor.alerts.rules import (
    ALERT_DELIVERED,
    ALERT_DELIVERY_FAILED,
    ALERT_RAISED,
    DEADLINE_ESTIMATED,
    Alert,
    AlertRule,
    AlertRules,
)
from stormproof.store.base import Row


class Log:
    """Rows as the driver appends them: each event, then its decisions, numbered."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, event: Event, *decisions: Decision) -> list[Row]:
        seq = len(self.rows) + 1
        new = [Row(seq, "event", event.kind, event.at, None, event.to_dict())]
        new += [
            Row(seq + k, "decision", d.kind, event.at, seq, d.to_dict())
            for k, d in enumerate(decisions, 1)
        ]
        self.rows += new
        return new

    def note(self, kind: str, at: float, data: dict[str, object]) -> Row:
        row = Row(len(self.rows) + 1, "decision", kind, at, self.rows[-1].seq, data)
        self.rows.append(row)
        return row

    def raised(self, alerts: Sequence[Alert]) -> None:
        for a in alerts:
            self.rows.append(
                Row(len(self.rows) + 1, "decision", ALERT_RAISED, a.at, a.cause, a.to_data())
            )


def rules(*rules: AlertRule) -> AlertRules:
    return AlertRules("r1", "wf", rules)


def fed(r: AlertRules, rows: Sequence[Row]) -> list[Alert]:
    return [a for row in rows for a in r.feed(row)]


def up(log: Log, at: float, *instances: tuple[str, str]) -> None:
    log.add(
        RunStarted(at),
        *(InstanceChanged(iid, pool, "spot", "up") for iid, pool in instances),
    )


def test_task_failed_fires_once_per_task_with_an_id_made_of_its_cause() -> None:
    r = rules(AlertRule("task_failed", ("json://x",)))
    log = Log()
    log.add(RunStarted(0.0))
    first = fed(r, log.add(RunStarted(1.0), TaskEnded("b", "failed", "Task.Failed", "exit 3")))
    again = fed(r, log.add(RunStarted(2.0), TaskEnded("b", "failed", "Task.Failed", "exit 3")))
    other = fed(r, log.add(RunStarted(3.0), TaskEnded("c", "succeeded")))
    assert [a.id for a in first] == ["r1:0:task_failed:b"]
    assert (first[0].severity, first[0].cause, first[0].rule) == ("failure", 2, 0)
    assert "task b failed in run r1: Task.Failed: exit 3" in first[0].body
    assert "alert id: r1:0:task_failed:b" in first[0].body
    assert again == [] and other == []


def test_a_resumed_fold_of_the_log_fires_nothing_already_raised_and_finds_what_is_unsent() -> None:
    rule = AlertRule("task_failed", ("json://a", "json://b"))
    log = Log()
    log.add(RunStarted(0.0))
    live = rules(rule)
    alerts = fed(live, log.add(RunStarted(1.0), TaskEnded("b", "failed", "Task.Failed")))
    log.raised(alerts)
    alert_id = alerts[0].id
    log.note(ALERT_DELIVERED, 1.5, {"alert_id": alert_id, "target": 0, "try": 1})
    log.note(
        ALERT_DELIVERY_FAILED,
        1.6,
        {"alert_id": alert_id, "target": 1, "try": 1, "error": "down", "final": False},
    )

    # resume: the fold of the log decides what it decided live, and the log says it was raised
    resumed = rules(rule)
    assert fed(resumed, log.rows) == alerts
    assert resumed.fired == {alert_id} and set(resumed.raised) == {alert_id}
    assert [(a.id, k) for a, k in resumed.pending()] == [(alert_id, 1)]
    # rows after the resume: the same cause again fires nothing
    assert fed(resumed, log.add(RunStarted(10.0), TaskEnded("b", "failed"))) == []

    # the second target gave up for good: nothing is left to send
    log.note(
        ALERT_DELIVERY_FAILED,
        11.0,
        {"alert_id": alert_id, "target": 1, "try": 4, "error": "down", "final": True},
    )
    settled = rules(rule)
    fed(settled, log.rows)
    assert settled.pending() == []


def test_interruption_rate_fires_when_the_window_passes_its_bound_and_again_after_calm() -> None:
    r = rules(AlertRule("interruption_rate", ("json://x",), above=2, per_s=60))
    log = Log()
    up(log, 0.0, *((f"s-{k}", "spot") for k in range(6)))
    fed(r, log.rows)
    seen = [
        fed(r, log.add(InterruptionNotice(t, f"s-{k}", 120, "rate")))
        for k, t in enumerate((10, 20, 30, 40))
    ]
    assert [len(a) for a in seen] == [0, 0, 1, 0]  # the third in 60 s is more than 2
    assert seen[2][0].id == f"r1:0:interruption_rate:{log.rows[-2].seq - 1 - 1}" or seen[2][
        0
    ].id.startswith("r1:0:interruption_rate:")
    assert "3 interruptions in 60s in run r1" in seen[2][0].title
    # 5 minutes of calm, then the rate climbs again: a new episode, a new alert
    calm = fed(r, log.add(InterruptionNotice(400, "s-4", 120, "rate")))
    again = fed(r, log.add(InterruptionNotice(405, "s-5", 120, "rate")))
    assert calm == [] and again == []
    late = fed(r, log.add(InstanceLost(406, "s-6-unknown", "gone")))
    assert late == []  # an instance the run never had up is not an interruption


def test_a_notice_then_the_loss_of_the_same_instance_count_once_and_idle_notices_count() -> None:
    r = rules(AlertRule("interruption_rate", ("json://x",), above=1, per_s=600, pool="spot"))
    log = Log()
    up(log, 0.0, ("s-0", "spot"), ("s-1", "spot"), ("o-0", "ondemand"))
    fed(r, log.rows)
    assert (
        fed(
            r,
            log.add(
                InterruptionNotice(5, "s-0", 120, "cli"),
                InstanceChanged("s-0", "spot", "spot", "draining"),
            ),
        )
        == []
    )
    assert fed(r, log.add(InstanceLost(6, "s-0", "gone"))) == []  # the same instance
    assert fed(r, log.add(InstanceLost(7, "o-0", "gone"))) == []  # another pool
    fired = fed(r, log.add(InterruptionNotice(8, "s-1", 120, "cli")))
    assert [a.id.rsplit(":", 1)[0] for a in fired] == ["r1:0:interruption_rate"]
    assert "in pool spot" in fired[0].title


def test_breaker_open_fires_once_per_trip_of_a_matching_pool() -> None:
    r = rules(AlertRule("breaker_open", ("json://x",), pool="spot"))
    log = Log()
    log.add(RunStarted(0.0))
    trip1 = fed(r, log.add(RunStarted(1.0), BreakerChanged("spot", "open", 300.0, 1, "3 faults")))
    half = fed(r, log.add(RunStarted(2.0), BreakerChanged("spot", "half_open", None, 1)))
    other = fed(r, log.add(RunStarted(3.0), BreakerChanged("od", "open", 300.0, 1)))
    trip2 = fed(r, log.add(RunStarted(4.0), BreakerChanged("spot", "open", 600.0, 2)))
    assert [a.id for a in trip1 + trip2] == ["r1:0:breaker_open:spot:1", "r1:0:breaker_open:spot:2"]
    assert half == [] and other == []


def test_cost_above_fires_once_when_the_settled_cost_passes_the_amount() -> None:
    r = rules(AlertRule("cost_above", ("json://x",), above=1.0))
    log = Log()
    log.add(RunStarted(0.0))
    costs = [0.6, 0.3, 0.2, 5.0]
    fired = [
        fed(
            r,
            log.add(
                RunStarted(float(k)), AttemptEnded(f"t{k}/1", f"t{k}", "succeeded", cost_usd=c)
            ),
        )
        for k, c in enumerate(costs, 1)
    ]
    assert [len(f) for f in fired] == [0, 0, 1, 0]
    assert "has spent $1.10, more than $1" in fired[2][0].title


def test_workflow_rules_fire_on_their_end_only() -> None:
    r = rules(
        AlertRule("workflow_failed", ("json://x",)), AlertRule("workflow_succeeded", ("json://y",))
    )
    log = Log()
    fed(r, log.add(RunStarted(100.0)))
    ended = fed(r, log.add(RunStarted(160.0), RunFinished("failed", "1 task failed")))
    assert [(a.on, a.severity, a.rule) for a in ended] == [("workflow_failed", "failure", 0)]
    assert ended[0].body.startswith("run r1 failed after 60s, $0.0000 spent: 1 task failed")
    r2 = rules(
        AlertRule("workflow_failed", ("json://x",)), AlertRule("workflow_succeeded", ("json://y",))
    )
    ok = fed(r2, Log().add(RunStarted(1.0), RunFinished("succeeded")))
    cancelled = fed(
        rules(AlertRule("workflow_failed", ("j://x",))),
        Log().add(RunStarted(1.0), RunFinished("cancelled")),
    )
    assert [a.on for a in ok] == ["workflow_succeeded"] and cancelled == []


def test_deadline_at_risk_reads_the_logged_estimates_and_fires_once_per_episode() -> None:
    r = rules(AlertRule("deadline_at_risk", ("json://x",), deadline_s=100))
    log = Log()
    fed(r, log.add(RunStarted(0.0)))

    def estimate(at: float, finish: float) -> list[Alert]:
        data = {
            "rule": 0,
            "deadline_at": 100.0,
            "finish_at": finish,
            "remaining_s": finish - at,
            "simulations": 5,
        }
        return r.feed(log.note(DEADLINE_ESTIMATED, at, data))

    assert estimate(10, 90) == []
    late = estimate(20, 130)
    assert [a.on for a in late] == ["deadline_at_risk"] and "may miss its deadline" in late[0].title
    assert estimate(30, 140) == []  # still late: the same episode
    assert estimate(40, 95) == []  # back on time
    assert len(estimate(50, 101)) == 1  # late again: a new alert
    assert (
        r.feed(log.note(DEADLINE_ESTIMATED, 60, {"rule": 0, "deadline_at": 100.0, "error": "x"}))
        == []
    )


def test_the_same_log_always_fires_the_same_alerts() -> None:
    rule_set = (
        AlertRule("task_failed", ("json://x",)),
        AlertRule("interruption_rate", ("json://x",), above=0, per_s=10),
    )
    log = Log()
    up(log, 0.0, ("s-0", "spot"))
    log.add(RunStarted(1.0), LaunchAttempt("a/1", "a", 1, ("s-0",), "spot"))
    log.add(InterruptionNotice(2.0, "s-0", 120, "rate"))
    log.add(RunStarted(3.0), TaskEnded("a", "failed", "Task.Failed"))
    once, twice = fed(rules(*rule_set), log.rows), fed(rules(*rule_set), log.rows)
    assert once == twice and len(once) == 2
