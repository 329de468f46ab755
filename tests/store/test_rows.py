"""The rules every store numbers rows and resolves causes by (``store/rows.py``), pure."""

from __future__ import annotations

from stormproof.store.base import Row
from stormproof.store.rows import number_rows

from .helpers import decision, event


def causes(rows: list[Row]) -> list[int | None]:
    return [r.cause for r in rows]


def test_a_decision_without_cause_gets_the_nearest_preceding_event_of_its_append() -> None:
    rows = [event(), decision(), decision(), event(), decision()]
    assert causes(number_rows(rows, 10)) == [None, 10, 10, None, 13]


def test_a_negative_cause_counts_back_within_the_append() -> None:
    rows = [event(), event(), decision(cause=-2), decision(cause=-2)]
    assert causes(number_rows(rows, 1)) == [None, None, 1, 2]


def test_a_positive_cause_is_an_absolute_seq() -> None:
    assert causes(number_rows([decision(cause=3), event(), decision(cause=8)], 7)) == [3, None, 8]
