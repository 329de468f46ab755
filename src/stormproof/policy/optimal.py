"""The offline optimum for one job: the most spot progress a schedule can get by the deadline.

Knowing the whole trace, ``solve_optimal`` finds a schedule (one choice per tick) that
finishes by the deadline with the most progress on spot — equivalently the least on
on-demand, so the least on-demand cost — by dynamic programming over ticks. It is the
"Omniscient" policy of "Can't Be Late", computed exactly for the tick model of
``single.simulate_job`` rather than by an ILP, and the returned plan replays in that
simulator to the very second of spot it promises (the tests check it).

How it stays exact
------------------
Every duration is an integer number of grid units (``Grid``: 120 s for 600 s ticks and a
0.2 h changeover). The state at a tick boundary is the market (idle, on-demand, spot) and
the *waste* so far, ``w``: time spent idle or in changeovers. Progress is then ``t - w``,
and a job that keeps progressing finishes at ``C + w``, so the deadline holds exactly when
``w <= R - C``: the waste is the only thing to track, at most (R - C) / unit + 1 values
(361 here). The DP keeps, per market and tick, the best spot progress for every waste.

A changeover of d = 1.2 ticks is neither a whole tick nor lost in rounding: a move onto a
market commits the next ``J = ceil(d / tick)`` ticks to it (2 here), charging d to the
waste at once and crediting ``J * tick - d`` of progress (480 s here) over those ticks.
Leaving a market before its changeover ends is never better than having idled those ticks
instead (the same waste, the same progress), so dropping those moves loses nothing; a
spot changeover cut short by a preemption is the same as idling, too. Finishing mid-tick
is computed to the unit. What remains are exactly the schedules the simulator can play,
so the optimum is exact — no discretisation error.

The same holds for the ways of wasting time: whole idle ticks, and extra changeovers,
which waste d at a time. Combining them can matter — two short on-demand runs with an idle
tick between can beat one longer run (the tests have such a case) — and the DP sees every
combination, because it tracks waste itself rather than assuming how it arises.

Cost: O(ticks x (R - C) / unit) list operations: about 18 ms per job for the Table 3 setup
(360 ticks x 361 wastes) in pure Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stormproof.policy.grid import Grid
from stormproof.policy.single import Choice, Observation
from stormproof.traces import Trace

__all__ = ["OptimalPlan", "solve_optimal"]

NEG = -(1 << 50)  # "unreachable": stays negative after any sum of progress is added to it
_MAX_CELLS = 50_000_000  # ticks x wastes the DP will take on (130,000 for Table 3)

Row = list[int]
Kind = Literal["od", "spot", "od_start", "spot_start"]


@dataclass(frozen=True, slots=True)
class OptimalPlan:
    """An optimal schedule for one (trace, start, job); replays as a policy in the simulator."""

    spot_s: float  # progress on spot the plan reaches
    choices: tuple[Choice, ...]  # one per tick from the job's start, up to its finish
    feasible: bool  # False when even on-demand from the start misses the deadline
    name: str = "optimal"

    def decide(self, obs: Observation) -> Choice:
        tick = round(obs.elapsed_s / obs.tick_s)
        return self.choices[tick] if tick < len(self.choices) else Choice.ON_DEMAND


def solve_optimal(
    trace: Trace,
    start_tick: int,
    compute_s: float,
    deadline_s: float,
    changeover_s: float,
    *,
    nodes: int = 1,
) -> OptimalPlan:
    """The schedule with the most spot progress that meets the deadline (see module doc)."""
    grid = Grid.of(trace.gap_s, compute_s, deadline_s, changeover_s)
    g, c, r, d = grid.gap, grid.compute, grid.deadline, grid.changeover
    if c == 0:
        return OptimalPlan(0.0, (), True)
    ticks = -(-r // g)
    if r - c < d:  # on-demand from the first tick is the best there is, and still late
        return OptimalPlan(0.0, (Choice.ON_DEMAND,) * (-(-(c + d) // g)), False)
    if ticks * (r - c + 1) > _MAX_CELLS:
        raise ValueError(
            f"the optimum would track {r - c + 1} wastes over {ticks} ticks: too many for an "
            "exact DP; round the durations to a coarser common unit (whole minutes, say)"
        )
    n, start = len(trace.counts), start_tick % len(trace.counts)
    span = max(1, -(-d // g))
    avail = [trace.counts[(start + k) % n] >= nodes for k in range(ticks + span)]
    solver = _Solver(g, c, r - c, d, span, avail, ticks)
    value, choices = solver.solve()
    return OptimalPlan(grid.seconds(value), tuple(choices), True)


class _Solver:
    """The DP of the module doc; rows are indexed by waste w in [0, R - C]."""

    def __init__(
        self, g: int, c: int, slack: int, d: int, span: int, avail: list[bool], ticks: int
    ) -> None:
        self.g, self.c, self.slack, self.d, self.span = g, c, slack, d, span
        self.avail, self.ticks = avail, ticks
        self.width = slack + 1
        # run[k]: how many ticks in a row spot is available from tick k
        run = [0] * (len(avail) + 1)
        for k in range(len(avail) - 1, -1, -1):
            run[k] = run[k + 1] + 1 if avail[k] else 0
        self.run = run
        size = ticks + span + 1
        self.idle: list[Row | None] = [None] * size
        self.od: list[Row | None] = [None] * size
        self.spot: list[Row | None] = [None] * size
        self.preempted: list[Row | None] = [None] * size
        self.best = -1
        self.event: tuple[int, Kind, int] = (0, "od_start", 0)

    # ---------------------------------------------------------------- forward

    def solve(self) -> tuple[int, list[Choice]]:
        g, c, d, span, width = self.g, self.c, self.d, self.span, self.width
        idle, od, spot, run, avail = self.idle, self.od, self.spot, self.run, self.avail
        idle[0] = [0] + [NEG] * (width - 1)
        gain = span * g - d  # progress made while a changeover completes
        for k in range(self.ticks):
            t = k * g
            i_row, o_row, s_row = idle[k], od[k], spot[k]
            if s_row is not None and not avail[k]:
                self.preempted[k] = s_row
                i_row = idle[k] = _max(i_row, s_row)
                s_row = spot[k] = None
            lo = max(0, t - c + 1)  # smaller wastes mean progress >= C: finished already
            done_by = t + g - c  # progressing states with w <= done_by finish in this tick
            start_by = t + gain - c  # ... and those with w <= start_by during a changeover
            if o_row is not None:
                for w in range(lo, min(done_by, width - 1) + 1):
                    self._finish(o_row[w], k, "od", w)
                od[k + 1] = _max(od[k + 1], _cut(o_row, done_by))
            if s_row is not None:
                for w in range(lo, min(done_by, width - 1) + 1):
                    if s_row[w] >= 0:
                        self._finish(s_row[w] + c - t + w, k, "spot", w)
                spot[k + 1] = _max_add(spot[k + 1], _cut(s_row, done_by), g)
            # Leaving spot while it is still there (for idle or on-demand) is never needed:
            # staying until the preemption, then doing what the other schedule does, wastes
            # no more and gets more spot. So idle and on-demand are entered from the rest.
            i_or_o = _max(i_row, o_row)
            if i_or_o is not None:
                idle[k + 1] = _shift(i_or_o, g)  # nothing else leads to idle at k + 1
            to_od = i_row
            if to_od is not None:
                for w in range(lo, min(start_by, width - 1 - d) + 1):
                    self._finish(to_od[w], k, "od_start", w)
                od[k + span] = _max(od[k + span], _shift(_cut(to_od, start_by), d))
            if avail[k] and i_or_o is not None:
                for w in range(lo, min(start_by, width - 1 - d) + 1):
                    needed = -(-(d + c - t + w) // g)  # ticks of spot until the finish
                    if i_or_o[w] >= 0 and run[k] >= needed:
                        self._finish(i_or_o[w] + c - t + w, k, "spot_start", w)
                if run[k] >= span:
                    row = _shift(_cut(i_or_o, start_by), d)
                    spot[k + span] = _max_add(spot[k + span], row, gain)
        return self.best, self._plan()

    def _finish(self, value: int, k: int, kind: Kind, w: int) -> None:
        if value > self.best:
            self.best, self.event = value, (k, kind, w)

    # ---------------------------------------------------------------- backward

    def _plan(self) -> list[Choice]:
        """Walk back from the best finish to the start, one transition at a time."""
        span = self.span
        choices: list[Choice] = [Choice.IDLE] * (self.ticks + span)
        k, kind, w = self.event
        if kind == "od":
            market, s = "od", _at(self.od[k], w)
            choices[k] = Choice.ON_DEMAND
        elif kind == "spot":
            market, s = "spot", _at(self.spot[k], w)
            choices[k] = Choice.SPOT
        elif kind == "od_start":
            choices[k : k + span] = [Choice.ON_DEMAND] * span
            market, s = "idle", _at(self.idle[k], w)
        else:
            choices[k : k + span] = [Choice.SPOT] * span
            i, o = _at(self.idle[k], w), _at(self.od[k], w)
            market, s = ("idle", i) if i >= o else ("od", o)
        while (market, k, w) != ("idle", 0, 0):
            market, k, w, s = self._step(market, k, w, s, choices)
        last = max(j for j, ch in enumerate(choices) if ch is not Choice.IDLE)
        return choices[: last + 1]

    def _step(
        self, market: str, k: int, w: int, s: int, choices: list[Choice]
    ) -> tuple[str, int, int, int]:
        g, d, span, gain = self.g, self.d, self.span, self.span * self.g - self.d
        if market == "idle":
            if _at(self.preempted[k], w) == s:
                return "spot", k, w, s
            for name, rows in (("idle", self.idle), ("od", self.od)):
                if w >= g and _at(rows[k - 1], w - g) == s:
                    choices[k - 1] = Choice.IDLE
                    return name, k - 1, w - g, s
        elif market == "od":
            if _at(self.od[k - 1], w) == s:
                choices[k - 1] = Choice.ON_DEMAND
                return "od", k - 1, w, s
            if k >= span and w >= d and _at(self.idle[k - span], w - d) == s:
                choices[k - span : k] = [Choice.ON_DEMAND] * span
                return "idle", k - span, w - d, s
        else:
            if _at(self.spot[k - 1], w) == s - g:
                choices[k - 1] = Choice.SPOT
                return "spot", k - 1, w, s - g
            if k >= span and w >= d and self.run[k - span] >= span:
                for name, rows in (("idle", self.idle), ("od", self.od)):
                    if _at(rows[k - span], w - d) == s - gain:
                        choices[k - span : k] = [Choice.SPOT] * span
                        return name, k - span, w - d, s - gain
        raise AssertionError(f"no way into {market} at tick {k}, waste {w}: the DP is broken")


# --------------------------------------------------------------------------- row helpers
# Rows are plain lists; None stands for "nothing reachable", which skips most of the work
# on ticks without spot.


def _max(a: Row | None, b: Row | None) -> Row | None:
    if a is None:
        return b
    if b is None:
        return a
    return [x if x > y else y for x, y in zip(a, b, strict=True)]


def _shift(a: Row | None, h: int) -> Row | None:
    """The row with every waste increased by h (what falls off the end cannot finish)."""
    if a is None or h >= len(a):
        return None
    return [NEG] * h + a[: len(a) - h] if h else a


def _cut(a: Row | None, upto: int) -> Row | None:
    """The row without wastes <= upto: those states have finished."""
    if a is None or upto < 0:
        return a
    return [NEG] * (upto + 1) + a[upto + 1 :] if upto + 1 < len(a) else None


def _max_add(a: Row | None, b: Row | None, v: int) -> Row | None:
    """max(a, b + v), in one pass."""
    if b is None:
        return a
    if a is None:
        return [y + v for y in b]
    return [x if x > (y := z + v) else y for x, z in zip(a, b, strict=True)]


def _at(a: Row | None, w: int) -> int:
    return NEG if a is None or w < 0 or w >= len(a) else a[w]
