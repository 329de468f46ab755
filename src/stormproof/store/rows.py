"""What every event-log backend does the same way: numbering rows, resolving causes, JSON.

Pure functions, shared by ``sqlite.py`` and ``postgres.py`` so that the two stores
cannot drift apart on what a row means (the contract tests in ``tests/store/`` run
against both).

Causes (``Row.cause``) link a decision to the event that caused it. In one
``append`` call rows come as ``[event, its decisions…, event, its decisions…]``,
and a cause may be given three ways:

- ``None`` on a decision: the nearest preceding event *of the same call*;
- a negative number ``-k``: the row ``k`` places earlier in the same call
  (``-1`` is the row just before);
- a positive number: an absolute seq, earlier than the row's own.

Events keep ``cause=None`` unless one is given.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Final

import orjson

from stormproof.errors import StormproofError
from stormproof.store.base import Row, RowCategory, RunInfo, TaskResult

_INF: Final = math.inf


def number_rows(rows: Sequence[Row], first_seq: int) -> list[Row]:
    """Give ``rows`` the seqs ``first_seq, first_seq + 1, …`` and resolve their causes.

    Pure, so the rules about causes can be tested without a database.
    """
    numbered: list[Row] = []
    last_event: int | None = None
    seq = first_seq
    for index, row in enumerate(rows):
        category, cause = row.category, row.cause
        if row.seq != 0 or (category != "event" and category != "decision"):
            _check_row(row, index)  # raises
        if cause is None and category == "event":
            last_event = seq
        elif cause is None and last_event is not None:
            cause = last_event  # the driver's rows: a decision after its event
        else:
            cause = _resolve_cause(rows, index, first_seq, last_event)
            if category == "event":
                last_event = seq
        numbered.append(Row(seq, category, row.kind, row.at, cause, row.data))
        seq += 1
    return numbered


def _check_row(row: Row, index: int) -> None:
    if row.category not in ("event", "decision"):
        raise ValueError(f"rows[{index}]: category must be 'event' or 'decision'")
    if row.seq != 0:
        raise ValueError(f"rows[{index}]: seq is assigned by append; pass 0, not {row.seq}")


def _resolve_cause(
    rows: Sequence[Row], index: int, first_seq: int, last_event: int | None
) -> int | None:
    row = rows[index]
    seq = first_seq + index
    if row.cause is None:
        if row.category == "event":
            return None
        if last_event is None:
            raise ValueError(
                f"rows[{index}]: decision {row.kind!r} has no cause and no event precedes it "
                "in this append; append an event with its decisions, or give the cause's seq"
            )
        return last_event
    if row.cause < 0:
        target = index + row.cause
        if target < 0:
            raise ValueError(
                f"rows[{index}]: cause {row.cause} points before the start of this append"
            )
        _check_cause_category(row, index, rows[target].category)
        return first_seq + target
    if not 0 < row.cause < seq:
        raise ValueError(
            f"rows[{index}]: cause {row.cause} must be an earlier seq (this row gets {seq})"
        )
    if row.cause >= first_seq:
        _check_cause_category(row, index, rows[row.cause - first_seq].category)
    return row.cause


def _check_cause_category(row: Row, index: int, cause_category: RowCategory) -> None:
    if row.category == "decision" and cause_category != "event":
        raise ValueError(f"rows[{index}]: decision {row.kind!r} must be caused by an event")


def check_run_name(name: str) -> str:
    """Run names become file names: refuse what could leave the locks directory."""
    if not name or "/" in name or "\0" in name or name.startswith("."):
        raise StormproofError(
            f"run name {name!r} is not allowed: it must not be empty, contain '/' or start with '.'"
        )
    return name


def either(names: Sequence[str]) -> str:
    """``'a'``, ``'a' or 'b'``, ``'a', 'b' or 'c'``: for messages."""
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" or {quoted[-1]}"


def dumps_json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def dumps_row(value: dict[str, Any]) -> str:
    """One row's data as JSON text, with ``orjson`` (a tenth of ``json.dumps``'s time; the
    driver writes a row per event and per decision). orjson writes NaN and infinities as
    ``null``, so a row holding one (none of the core's do today) goes through ``json``, which
    keeps them; so does anything orjson refuses (non-str keys, huge ints)."""
    for v in value.values():
        t = v.__class__
        if (t is float and not -_INF < v < _INF) or (
            (t is tuple or t is list or t is dict) and not _finite(v)
        ):
            return dumps_json(value)
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return dumps_json(value)


def _finite(value: Any) -> bool:
    t = value.__class__
    if t is float:
        return bool(-_INF < value < _INF)
    if t is dict:
        return all(_finite(v) for v in value.values())
    if t is tuple or t is list:
        return all(_finite(v) for v in value)
    return True


def loads_json(text: str, damaged: str) -> dict[str, Any]:
    """A stored JSON object; ``damaged`` is the store's advice when it is not one."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise StormproofError(f"a stored JSON object is damaged ({exc}); {damaged}") from exc
    if not isinstance(value, dict):
        raise StormproofError(f"a stored JSON object is a {type(value).__name__}; {damaged}")
    return value


def loads_view(data: bytes | str, damaged: str) -> dict[str, Any]:
    """A stored view's record (written by ``orjson``); ``damaged`` as in ``loads_json``."""
    return _loads_object(data, "view", damaged)


def result_from(row: Sequence[Any], damaged: str) -> TaskResult:
    """A ``TaskResult`` from its columns (fingerprint, run, task, workflow, at, data, and the
    task's definition when selected); ``damaged`` as in ``loads_json``."""
    fingerprint, run, task_id, workflow, at, data, *definition = row
    return TaskResult(
        str(fingerprint),
        str(run),
        str(task_id),
        str(workflow),
        float(at),
        _loads_object(data, "result", damaged),
        _loads_object(definition[0], "result", damaged) if definition else None,
    )


def _loads_object(data: bytes | str, what: str, damaged: str) -> dict[str, Any]:
    """A JSON object written by ``orjson``, or an error saying what to do about it."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise StormproofError(f"a stored {what} is damaged ({exc}); {damaged}") from exc
    if not isinstance(value, dict):
        raise StormproofError(f"a stored {what} is a {type(value).__name__}; {damaged}")
    return value


def row_from(r: Sequence[Any], damaged: str) -> Row:
    seq, category, kind, at, cause, data = r
    return Row(
        int(seq),
        category,
        str(kind),
        float(at),
        None if cause is None else int(cause),
        loads_json(data, damaged),
    )


def run_info_from(r: Sequence[Any], damaged: str) -> RunInfo:
    name, created_at, workflow_name, meta = r
    return RunInfo(str(name), float(created_at), str(workflow_name), loads_json(meta, damaged))
