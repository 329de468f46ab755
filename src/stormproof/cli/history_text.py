"""How ``history`` words a row for people, and which rows ``history --task`` shows.

The human view shows times as ISO 8601 in local time and money rounded to what matters;
``--json`` keeps every value exact (``at`` in epoch seconds, costs as stored) and adds the
same ISO time as ``time``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from stormproof.plan.report import fmt_usd
from stormproof.store.base import Row

#: Money in a row's data, rounded in the human view (``$0.0123``).
_USD = frozenset({"cost_usd", "on_demand_usd", "wasted_usd", "price_usd_per_h"})
_USD_PER_H = frozenset({"usd_per_h", "on_demand_usd_per_h"})
#: Longest list shown whole in the human view: a redrive keeps thousands of tasks.
_LIST_SHOWN = 5


def iso_time(at: float) -> str:
    """``2026-12-06T14:03:07.123+01:00``: ISO 8601, local time, with its offset."""
    return datetime.fromtimestamp(at).astimezone().isoformat(timespec="milliseconds")


def row_details(row: Row) -> str:
    """One row's data as ``key=value`` pairs for the table, money rounded, lists cut short."""
    data = row.data
    if row.kind == "RunRedriven":
        return _redriven(data)
    parts = []
    for key, value in data.items():
        if key in ("at", "reason") or value in (None, "", (), []):
            continue
        parts.append(f"{key}={_shown(key, value)}")
    text = " ".join(parts)
    if data.get("reason"):
        text += f"  — {data['reason']}"
    return text


def _shown(key: str, value: Any) -> str:
    if key in _USD and isinstance(value, (int, float)):
        return fmt_usd(float(value))
    if key in _USD_PER_H and isinstance(value, (int, float)):
        return fmt_usd(float(value)) + "/h"
    if key.endswith("_s") and isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, (list, tuple)) and len(value) > _LIST_SHOWN:
        head = ", ".join(str(v) for v in value[:_LIST_SHOWN])
        return f"[{head}, … {len(value) - _LIST_SHOWN:,} more]"
    return str(value)


def _redriven(data: dict[str, Any]) -> str:
    verdicts = data.get("verdicts") or {}
    counts: dict[str, int] = {}
    for action, _reason in verdicts.values():
        counts[action] = counts.get(action, 0) + 1
    words = ", ".join(f"{n:,} {'will run' if a == 'run' else a}" for a, n in sorted(counts.items()))
    return (
        f"redrive {data.get('segment', '?')} of the {data.get('was', '?')} run with "
        f"{data.get('workflow_path', '?')}: {words or 'no tasks'}"
        " (history --json has the workflow and every task's reason)"
    )


def about_task(rows: Iterable[Row], task_id: str) -> Iterator[Row]:
    """The rows about one task, each decision preceded by the event that caused it."""
    cause: Row | None = None
    shown_cause = 0
    for row in rows:
        if row.category == "event":
            cause = row
            if _mentions(row, task_id):
                shown_cause = row.seq
                yield row
            continue
        if not _mentions(row, task_id):
            continue
        if cause is not None and row.cause == cause.seq and shown_cause != cause.seq:
            shown_cause = cause.seq
            yield cause
        yield row


def _mentions(row: Row, task_id: str) -> bool:
    data = row.data
    if data.get("task_id") == task_id:
        return True
    attempt = data.get("attempt_id")
    if isinstance(attempt, str) and attempt.rsplit("/", 1)[0] == task_id:
        return True
    timer = data.get("timer_id")
    if isinstance(timer, str):
        key = timer.partition(":")[2]
        return key.rsplit("/", 1)[0] == task_id or key.rsplit(":", 1)[0] == task_id
    if row.kind == "RunRedriven":
        return task_id in (data.get("verdicts") or {})
    if row.kind == "RunStarted":
        return task_id in (data.get("kept") or ()) or any(
            c[0] == task_id for c in data.get("carried") or ()
        )
    return False
