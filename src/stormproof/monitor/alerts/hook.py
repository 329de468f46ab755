"""What the driver holds to alert: rules in, log rows out, delivery on the side.

The driver calls, in its loop:

* ``replay(history)`` once on resume: the rules fold the log, and alerts raised but never
  settled are handed to delivery again (outbox);
* ``observe(rows)`` with every batch it appended (numbered), before it flushes: the
  ``AlertRaised`` rows it returns go into the same transaction as their cause;
* ``after_flush()``: the alerts just made durable go to delivery;
* ``poll(now)`` every loop iteration: delivery outcomes and deadline estimates, as rows
  (a deque check and a float compare when there is nothing);
* ``close(final)`` when it leaves: waits a little for deliveries under way.
"""

from __future__ import annotations

from collections.abc import Sequence

from stormproof.monitor.alerts.deadline import DeadlineWatch, Estimate
from stormproof.monitor.alerts.deliver import DRAIN_S, Deliverer, Outcome
from stormproof.monitor.alerts.rules import (
    ALERT_DELIVERED,
    ALERT_DELIVERY_FAILED,
    ALERT_RAISED,
    DEADLINE_ESTIMATED,
    Alert,
    AlertRule,
    AlertRules,
)
from stormproof.runtime.runs import RunContext
from stormproof.store.base import Row


class RunAlerts:
    def __init__(
        self, ctx: RunContext, deliverer: Deliverer | None = None, drain_s: float = DRAIN_S
    ) -> None:
        self.ctx = ctx
        self.rules = AlertRules(
            ctx.name, ctx.spec.name, [AlertRule.from_dict(d) for d in ctx.alerts]
        )
        self.deliverer = deliverer or Deliverer()
        self.drain_s = drain_s
        self._fresh: list[Alert] = []
        deadline_rules = self.rules.deadline_rules()
        every = min((self.rules.rules[i].every_s for i in deadline_rules), default=0.0)
        self.deadline = DeadlineWatch(ctx, every) if deadline_rules else None

    # ------------------------------------------------------------------ the driver's calls
    def replay(self, history: Sequence[Row]) -> None:
        self.rules.feed_all(history)
        for alert, target in self.rules.pending():
            self._send(alert, target)

    def observe(self, rows: Sequence[Row]) -> list[Row]:
        out = []
        for row in rows:
            for alert in self.rules.feed(row):
                self._fresh.append(alert)
                out.append(Row(0, "decision", ALERT_RAISED, alert.at, alert.cause, alert.to_data()))
        return out

    def after_flush(self) -> None:
        fresh, self._fresh = self._fresh, []
        for alert in fresh:
            self.rules.raised[alert.id] = alert
            for target in range(len(self.rules.rules[alert.rule].notify)):
                self._send(alert, target)

    def poll(self, now: float) -> list[Row]:
        rows = [self._outcome_row(o) for o in self.deliverer.take()]
        if self.deadline is not None:
            self.deadline.tick(now, self.rules.progress)
            found = self.deadline.take()
            if found is not None:
                rows += self._estimate_rows(found, now)
        return rows

    def close(self, final: bool, now: float) -> list[Row]:
        """Wait up to ``drain_s`` for deliveries; a finished run logs what was never sent
        as given up (nothing would send it later), a stopped one leaves it for its resume."""
        left = self.deliverer.close(self.drain_s)
        rows = [self._outcome_row(o) for o in self.deliverer.take()]
        if final:
            for job in left:
                outcome = Outcome(
                    job.alert,
                    job.target,
                    job.url.split("://", 1)[0] + "://…",
                    job.tries,
                    False,
                    now,
                    "not delivered before the run's driver left (the run has ended)",
                )
                rows.append(self._outcome_row(outcome))
        return rows

    # ------------------------------------------------------------------ helpers
    def _send(self, alert: Alert, target: int) -> None:
        self.deliverer.send(alert, target, self.rules.rules[alert.rule].notify[target])

    def _outcome_row(self, outcome: Outcome) -> Row:
        kind = ALERT_DELIVERED if outcome.ok else ALERT_DELIVERY_FAILED
        row = Row(0, "decision", kind, outcome.at, outcome.alert.cause, outcome.to_data())
        self.rules.feed(row)
        return row

    def _estimate_rows(self, found: Estimate | str, now: float) -> list[Row]:
        cause = self.rules.last_event_seq
        rows = []
        for i in self.rules.deadline_rules():
            rule = self.rules.rules[i]
            started = self.rules.progress.started_at
            if rule.deadline_s is None or started is None:
                continue
            data: dict[str, object] = {"rule": i, "deadline_at": started + rule.deadline_s}
            if isinstance(found, str):
                data["error"] = found
            else:
                data.update(
                    remaining_s=round(found.remaining_s, 3),
                    finish_at=found.at + found.remaining_s,
                    simulations=found.simulations,
                )
            rows.append(Row(0, "decision", DEADLINE_ESTIMATED, now, cause, data))
        return rows
