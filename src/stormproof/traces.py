"""Spot availability traces: how many spot instances one could get, tick by tick.

The format is the one of the "Can't Be Late" traces (Wu et al., NSDI'24)::

    {"metadata": {"gap_seconds": 600}, "data": [1, 1, 0, ...], "prices": [...]}

one value per tick. For a one-node trace 1 means "a spot instance is available",
0 that it is not; for an N-node trace the value is how many are available.
``prices`` is allowed and ignored: the policies here reason about availability.

A trace is a loop: reading past its end wraps to its start, so that a job may be
started at any tick (the simulations pick random start points) without a special case
at the end. A loaded file is checked once, here, and every problem is reported as a
``TraceError`` that names the file and the fix, never as a traceback.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from stormproof.errors import InputRefused, StormproofError
from stormproof.limits import JsonRefused, active_limits, read_bounded, strict_json_loads

__all__ = ["Trace", "TraceError", "find_trace", "load_trace", "parse_trace"]


class TraceError(StormproofError):
    """A spot trace file that cannot be used (unreadable, not JSON, or not the trace format)."""


@dataclass(frozen=True, slots=True)
class Trace:
    gap_s: float  # seconds per tick
    counts: tuple[int, ...]  # instances available per tick
    source: str  # file path or a name, for messages

    def __post_init__(self) -> None:
        # Constructed by hand in tests and by callers too: an empty or zero-tick trace would
        # make every lookup divide by zero far from here, so refuse it where it is made.
        if not (self.gap_s > 0 and math.isfinite(self.gap_s)):
            raise TraceError(f"{self.source}: the tick length must be > 0 s, not {self.gap_s}")
        if not self.counts:
            raise TraceError(f"{self.source}: a trace needs at least one tick")

    def __len__(self) -> int:
        return len(self.counts)

    def at(self, t_s: float) -> int:
        """Count at ``t_s`` seconds from the trace start; wraps, so any t is a valid time."""
        return self.counts[math.floor(t_s / self.gap_s) % len(self.counts)]

    def window(self, start_tick: int, ticks: int) -> Trace:
        """``ticks`` ticks from ``start_tick`` (wrapping), as a trace of its own."""
        if ticks < 1:
            raise ValueError(f"a window needs at least one tick, not {ticks}")
        n = len(self.counts)
        start = start_tick % n
        end = start + ticks
        if end <= n:
            counts = self.counts[start:end]
        else:
            whole, rest = divmod(end - n, n)
            counts = self.counts[start:] + self.counts * whole + self.counts[:rest]
        return Trace(self.gap_s, counts, f"{self.source}[{start}:+{ticks}]")

    def duration_s(self) -> float:
        return self.gap_s * len(self.counts)


def find_trace(text: str, base: Path, place: str) -> Path:
    """The trace file ``text`` names, relative to ``base``; ``place`` says where it was named."""
    path = (base / Path(text).expanduser()).resolve()
    if not path.is_file():
        raise TraceError(
            f"{place}: {text!r} is not a file (looked at {path}); give the path of a spot "
            f"trace JSON, relative to {base}"
        )
    return path


def load_trace(path: str | Path, *, first_ticks: int | None = None) -> Trace:
    """Read a trace file; ``first_ticks`` keeps only its beginning (e.g. the first 13 days)."""
    source = str(path)
    limits = active_limits()
    try:
        text = read_bounded(path, "trace file", limits.file_bytes).decode("utf-8")
    except InputRefused as err:
        problem = err.messages[0]
        if problem.startswith("no such file"):
            problem = "no such file (check the path, or pass --traces DIR)"
        raise TraceError(f"{source}: {problem}") from None
    except UnicodeDecodeError:
        raise TraceError(f"{source}: is not UTF-8 text (a trace is a JSON file)") from None
    try:
        data = strict_json_loads(text, limits)
    except json.JSONDecodeError as err:
        problem = err.msg[:1].lower() + err.msg[1:]
        ends_early = err.pos >= len(text.rstrip())
        hint = " (the file ends too early: is it complete?)" if ends_early else ""
        raise TraceError(
            f"{source}: line {err.lineno}, column {err.colno}: invalid JSON: {problem}{hint}"
        ) from None
    except JsonRefused as err:
        where = f"line {err.line}: " if err.line else ""
        raise TraceError(f"{source}: {where}{err.text}") from None
    trace = parse_trace(data, source)
    if first_ticks is None:
        return trace
    if first_ticks < 1:
        raise TraceError(f"{source}: first_ticks must be at least 1, not {first_ticks}")
    if first_ticks > len(trace):
        raise TraceError(
            f"{source}: has {len(trace)} ticks, fewer than the {first_ticks} asked for "
            "(use the whole file, or a shorter prefix)"
        )
    return Trace(trace.gap_s, trace.counts[:first_ticks], source)


def parse_trace(data: object, source: str) -> Trace:
    """Check a decoded trace document and build the ``Trace``; every message names the fix."""
    if not isinstance(data, dict):
        raise TraceError(
            f'{source}: a trace is a JSON object {{"metadata": {{"gap_seconds": N}}, '
            f'"data": [...]}}, not {_kind(data)}'
        )
    meta = data.get("metadata")
    if not isinstance(meta, dict) or "gap_seconds" not in meta:
        raise TraceError(
            f'{source}: "metadata.gap_seconds" is missing (add "metadata": '
            '{"gap_seconds": N}, the seconds between two values of "data")'
        )
    gap = meta["gap_seconds"]
    if isinstance(gap, bool) or not isinstance(gap, int | float) or not (0 < gap < math.inf):
        raise TraceError(
            f'{source}: "metadata.gap_seconds" must be a number of seconds > 0, not {_show(gap)}'
        )
    if "data" not in data:
        raise TraceError(f'{source}: "data" is missing (the list of availability values)')
    values = data["data"]
    if not isinstance(values, list):
        raise TraceError(
            f'{source}: "data" must be a list of non-negative integers, not {_kind(values)}'
        )
    if not values:
        raise TraceError(f'{source}: "data" is empty (a trace needs at least one tick)')
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise TraceError(
                f'{source}: "data" must be a list of non-negative integers (item {i} is {_show(v)})'
            )
    return Trace(float(gap), tuple(values), source)


def _show(value: object) -> str:
    """A JSON rendering of a bad value, cut short: messages stay one line."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), f"a number ({_show(value)})")
