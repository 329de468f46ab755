"""One long job, one instance, a deadline: when to use spot, on-demand, or nothing.

The model is the one of "Can't Be Late" (Wu et al., NSDI'24), on the ticks of a spot trace:

* the job needs ``compute`` seconds of progress by ``deadline`` seconds after it is submitted;
* at each tick boundary a policy picks SPOT (only if spot is available during that tick),
  ON_DEMAND (always available) or IDLE; spot that disappears at a boundary preempts the job;
* every move onto a market (idle->spot, spot->on-demand, ...) starts a changeover of
  ``changeover`` seconds: no progress, billed at the new market's price. A changeover cut
  short by a preemption is lost. Moving to idle costs nothing. The job stops (and stops
  paying) the moment its progress reaches ``compute``, even mid-tick.

Hours on spot and on-demand count progress only; changeover time is reported apart.

Everything here is pure: no clock, no I/O, no randomness. A policy sees an ``Observation``
(what an online scheduler can know now) and returns a ``Choice``; ``simulate_job`` plays it
on a trace. The online policies are the core's own rules (``core.policy.decide``, which
also places the tasks of ``run`` and ``simulate``), so what this model measures is what
real runs do. They are stateless, so one instance can be reused across jobs and the same
inputs always give the same ``JobResult``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from stormproof.core.defs import SpotPolicy
from stormproof.core.policy import GAMBLE_SHARE, SPOT_SHARE, Choice, Situation, decide
from stormproof.policy.grid import Grid
from stormproof.traces import Trace

__all__ = [
    "Choice",
    "GreedyPolicy",
    "JobResult",
    "Observation",
    "OnDemandPolicy",
    "Policy",
    "PolicyError",
    "StormproofPolicy",
    "UniformProgressPolicy",
    "simulate_job",
]


#: What an online policy may know at a tick boundary: the core's ``Situation``, with
#: ``at_risk_s`` = the changeover (a preemption costs the move back onto a market) and
#: ``tick_s`` = the trace's tick.
Observation = Situation


class Policy(Protocol):
    """Anything with a name that picks a market each tick."""

    @property
    def name(self) -> str: ...

    def decide(self, obs: Observation) -> Choice: ...


class PolicyError(ValueError):
    """A policy asked for something impossible (spot while spot is unavailable): a bug in it."""


@dataclass(frozen=True, slots=True)
class JobResult:
    od_hours: float  # progress made on on-demand
    spot_hours: float  # progress made on spot
    changeover_hours: float  # changeover time, on both markets, lost ones included
    finished_at_s: float  # since submission; math.inf if it never finished
    met_deadline: bool
    changeovers: int = 0  # moves onto a market


def simulate_job(
    policy: Policy,
    trace: Trace,
    start_tick: int,
    compute_s: float,
    deadline_s: float,
    changeover_s: float,
    *,
    nodes: int = 1,
) -> JobResult:
    """Play ``policy`` on ``trace`` from ``start_tick`` (wrapping), tick by tick.

    Spot counts as available during a tick when the trace offers at least ``nodes``
    instances. A job that has not finished by the deadline runs on (the policy still
    decides) until on-demand could have finished it from anywhere; if it still has not,
    ``finished_at_s`` is infinite.
    """
    grid = Grid.of(trace.gap_s, compute_s, deadline_s, changeover_s)
    g, d = grid.gap, grid.changeover
    counts, n, start = trace.counts, len(trace.counts), start_tick % len(trace.counts)
    remaining = grid.compute
    market, changeover_left = Choice.IDLE, 0
    on_demand = spot = changeover_time = switches = 0
    finished: int | None = 0 if remaining == 0 else None
    limit = grid.deadline + grid.compute + d + g
    t = k = streak_start = 0
    previous: bool | None = None
    # Observations are in float seconds; units are whole seconds in every sane setup, so
    # these products are exact (and a Fraction per field per tick would triple the cost).
    u = float(grid.unit_s)
    d_s, g_s, c_s, r_s = d * u, g * u, grid.compute * u, grid.deadline * u
    while finished is None and t < limit:
        available = counts[(start + k) % n] >= nodes
        if available != previous:
            streak_start, previous = t, available
        if market is Choice.SPOT and not available:
            market, changeover_left = Choice.IDLE, 0  # preempted: an unfinished changeover is lost
        obs = Observation(
            t * u,
            remaining * u,
            (grid.deadline - t) * u,
            available,
            market,
            d_s,
            d_s,  # at risk: a preemption costs the changeover back onto a market
            g_s,
            c_s,
            r_s,
            (t - streak_start) * u,
        )
        choice = policy.decide(obs)
        if choice is Choice.SPOT and not available:
            raise PolicyError(
                f"policy {policy.name!r} chose spot at {obs.elapsed_s:g} s, when none is available"
            )
        if choice is not market:
            market = choice
            changeover_left = 0 if choice is Choice.IDLE else d
            switches += choice is not Choice.IDLE
        if market is not Choice.IDLE:
            lost = min(changeover_left, g)
            changeover_left -= lost
            changeover_time += lost
            progress = min(g - lost, remaining)
            remaining -= progress
            if market is Choice.SPOT:
                spot += progress
            else:
                on_demand += progress
            if remaining == 0:
                finished = t + lost + progress
        t += g
        k += 1
    return JobResult(
        od_hours=grid.hours(on_demand),
        spot_hours=grid.hours(spot),
        changeover_hours=grid.hours(changeover_time),
        finished_at_s=math.inf if finished is None else grid.seconds(finished),
        met_deadline=finished is not None and finished <= grid.deadline,
        changeovers=switches,
    )


# --------------------------------------------------------------------------- policies
# Each is a name for one of the core's rules (``core.policy.decide``): the very rule that
# places a DAG's tasks in ``run`` and ``simulate``, here asked at every tick of one job.


@dataclass(frozen=True, slots=True)
class OnDemandPolicy:
    """The baseline: on-demand from the first tick to the last."""

    name: str = "on_demand"

    def decide(self, obs: Observation) -> Choice:
        return decide(SpotPolicy.ON_DEMAND, obs)


@dataclass(frozen=True, slots=True)
class GreedyPolicy:
    """The paper's Greedy: spot whenever available, else wait; on-demand once slack is gone.

    It only ever reaches on-demand through the safety net, so once there it stays until done.
    """

    name: str = "greedy"

    def decide(self, obs: Observation) -> Choice:
        return decide(SpotPolicy.GREEDY, obs)


@dataclass(frozen=True, slots=True)
class UniformProgressPolicy:
    """The paper's Uniform Progress: keep progress on the line t * C(0) / R(0).

    1. Uniform progress: idle and behind the line -> on-demand.
    2. Taking risks: spot whenever available (if the safety net allows a changeover),
       and stay on it until preempted.
    3. Hysteresis: on on-demand, stay until progress reaches the line at t + 2d; after that
       leave on-demand only to take spot (leaving it for idle would make the job cycle
       idle <-> on-demand, paying a changeover each time).
    4. Safety net: when waiting is no longer safe, on-demand until the end.
    """

    name: str = "uniform_progress"

    def decide(self, obs: Observation) -> Choice:
        return decide(SpotPolicy.UNIFORM_PROGRESS, obs)


@dataclass(frozen=True, slots=True)
class StormproofPolicy:
    """On-demand as the base, every spot window worth a hop, and waiting only at the end.

    The rule, and how its two shares were chosen, is ``core.policy.decide``'s ``stormproof``.
    """

    name: str = "stormproof"
    spot_share: float = SPOT_SHARE
    gamble_share: float = GAMBLE_SHARE

    def decide(self, obs: Observation) -> Choice:
        return decide(SpotPolicy.STORMPROOF, obs, self.spot_share, self.gamble_share)
