"""The deadline-aware spot policies: one decision rule for a single long job and for a DAG.

Rules of this module:

1. One rule, two callers. ``decide(policy, situation)`` says what a job should be on next:
   spot, on-demand, or nothing (wait for spot). The single-job simulator
   (``policy.single.simulate_job``, which ``bench/cant_be_late.py`` measures against the
   paper's Table 3) asks it at every tick of a trace; the core (``core.machine``, which
   drives ``run`` and ``simulate``) asks it each time it looks for a place for a ready task.
2. Pure: a ``Situation`` in, a ``Choice`` out. No clock, no state, no I/O, no randomness.
3. The safety net is shared by every policy but ``spot_first``: spot only while the slack
   covers a move onto spot and what one preemption can then cost (``can_start_spot``), and
   waiting only while on-demand still fits afterwards (``can_wait``). That is why no policy
   misses a deadline that on-demand could meet.

What the two callers mean by the fields:

* one job on a spot trace ("Can't Be Late", Wu et al., NSDI'24): work left C(t), time left
  R(t), the changeover d of every move onto a market, ``at_risk_s`` = d (a preemption costs
  the changeover back onto a market), ``tick_s`` the trace's tick;
* a task of a DAG in the core: work left is the task's rank (the critical path from it to
  the end, at on-demand speed), the job's total work C(0) the workflow's critical path,
  ``changeover_s`` 0 (instances are up before attempts are placed), ``at_risk_s`` the
  task's (lost work since the last checkpoint plus the restore, or its whole runtime
  without checkpoints), ``tick_s`` 0 (the core wakes a waiting task with a timer at
  ``wait_until``), and the market ``IDLE``: a ready task is on none, and an attempt stays
  where it started until it ends, so each ready task is one decision, like one tick.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import NamedTuple

from stormproof.core.defs import SpotPolicy

__all__ = [
    "GAMBLE_SHARE",
    "SPOT_SHARE",
    "Choice",
    "Situation",
    "can_start_spot",
    "can_wait",
    "decide",
    "wait_until",
]

#: ``stormproof``: wait for spot only while spot during this share of the time left would
#: finish the work left (chosen on the Table 3 traces; see ``decide``).
SPOT_SHARE = 0.7
#: ``stormproof``: from on-demand, hop onto a window seen for the first time only with this
#: share of the time left as slack to spare.
GAMBLE_SHARE = 0.16


class Choice(str, Enum):
    """A market to be on next; also the market a job is on now (IDLE: none, waiting)."""

    IDLE = "idle"
    SPOT = "spot"
    ON_DEMAND = "on_demand"


class Situation(NamedTuple):
    """What an online policy may know when it decides: the present and the past, no future.

    All durations are seconds. (A named tuple: the single-job simulator makes one per tick,
    and a tuple is four times cheaper to build than a frozen dataclass.)
    """

    elapsed_s: float  # since the job (the run) started
    remaining_work_s: float  # C(t): progress still to make (a DAG task: its rank)
    remaining_time_s: float  # R(t): time left to the deadline (negative once missed)
    spot_available: bool  # now (a single job: during the coming tick)
    market: Choice  # what the job is on now (IDLE right after a preemption)
    changeover_s: float  # d: the delay of every move onto a market before progress
    at_risk_s: float  # slack one preemption on spot can cost on top of the move onto spot
    tick_s: float  # the next decision comes this much later (0: whenever needed)
    compute_s: float  # C(0)
    deadline_s: float  # R(0)
    spot_streak_s: float  # how long spot has been as it is now (since the job began)

    @property
    def slack_s(self) -> float:
        """Time that can still be spent not progressing: R(t) - C(t)."""
        return self.remaining_time_s - self.remaining_work_s

    @property
    def spot_reserve_s(self) -> float:
        """Slack a move onto spot can use up at worst: the move, then one preemption."""
        return self.changeover_s + self.at_risk_s


# --------------------------------------------------------------------------- safety


def can_start_spot(s: Situation) -> bool:
    """Whether moving onto spot now keeps the deadline safe whatever spot does next.

    The move eats up to the changeover; a preemption after it must still leave room to
    finish on on-demand. For one job: slack >= 2d (the paper's Safety Net threshold).
    """
    return s.slack_s >= s.spot_reserve_s


def can_wait(s: Situation) -> bool:
    """Whether waiting until the next decision still leaves both doors open.

    Waiting costs a tick of slack; after it on-demand must still fit (slack - tick >= d),
    and spot must still be reachable now (``can_start_spot``): otherwise waiting only
    delays the inevitable.
    """
    return s.slack_s - s.tick_s >= s.changeover_s and s.slack_s >= s.spot_reserve_s


def _last_safe_wait(s: Situation) -> float:
    """The elapsed time up to which ``can_wait`` holds for a job that makes no progress."""
    return s.elapsed_s + s.slack_s - s.changeover_s - max(s.tick_s, s.at_risk_s)


# --------------------------------------------------------------------------- the rule


def decide(
    policy: SpotPolicy,
    s: Situation,
    spot_share: float = SPOT_SHARE,
    gamble_share: float = GAMBLE_SHARE,
) -> Choice:
    """What the job should be on next, by ``policy``. SPOT only when ``s.spot_available``.

    * ``on_demand``: always on-demand.
    * ``spot_first``: spot when there is some, else on-demand; no deadline logic.
    * ``greedy`` (the paper's Greedy): spot whenever available and safe, else wait; on
      on-demand once waiting is no longer safe, and from then on to the end.
    * ``uniform_progress`` (the paper's Uniform Progress): keep progress on the line
      t * C(0) / R(0). Idle and behind the line: on-demand. Spot whenever available and
      safe, kept until preempted. On on-demand, stay until progress reaches the line at
      t + the spot reserve (2d for one job), and then leave on-demand only to take spot
      (leaving it for idle would cycle idle <-> on-demand and pay a changeover each time).
    * ``stormproof``: on-demand as the base, every spot window worth a hop, and waiting
      only at the end. What the exact optimum does on real traces, made online:

      1. On spot: stay until preempted (nothing is cheaper).
      2. Spot available: take it if the safety net allows. From on-demand a hop costs two
         changeovers (onto spot, and back when preempted), and a window seen for the
         first time is often a single tick that gives nothing; so when the slack to spare
         is short (less than ``gamble_share`` of the time left) it hops only onto a window
         that has already lasted a tick.
      3. Spot unavailable: wait only if spot during ``spot_share`` of the time left would
         finish the work, C(t) <= spot_share * R(t); else progress on on-demand. Waiting
         spends slack that later hops need; greedy's failure is to spend it first and then
         sit on on-demand through the spot near the deadline.

      The two shares were chosen on the eight Table 3 traces (93.2% of the optimum's spot
      hours), where the result is flat around them: 92.5-93.2% for ``spot_share`` 0.6-0.8
      and ``gamble_share`` 0.1-0.16 (92.6% without the gate). On the same traces with a
      52 h or 70 h deadline instead of 60 h: 77% and 96% (uniform progress 61% and 90%).

    In every policy but ``spot_first`` the safety net comes first: spot only if
    ``can_start_spot``, idle only if ``can_wait``.
    """
    market = s.market
    if policy is SpotPolicy.ON_DEMAND:
        return Choice.ON_DEMAND
    if market is Choice.SPOT:  # still available, or the caller would have said IDLE
        return Choice.SPOT
    if policy is SpotPolicy.SPOT_FIRST:
        return Choice.SPOT if s.spot_available else Choice.ON_DEMAND
    if policy is SpotPolicy.GREEDY:
        if market is Choice.ON_DEMAND:
            return Choice.ON_DEMAND
        if s.spot_available and can_start_spot(s):
            return Choice.SPOT
        return Choice.IDLE if can_wait(s) else Choice.ON_DEMAND
    if policy is SpotPolicy.UNIFORM_PROGRESS:
        done = s.compute_s - s.remaining_work_s
        rate = s.compute_s / s.deadline_s if s.deadline_s > 0 else math.inf
        if market is Choice.ON_DEMAND:
            ahead = done >= (s.elapsed_s + s.spot_reserve_s) * rate
            if ahead and s.spot_available and can_start_spot(s):
                return Choice.SPOT
            return Choice.ON_DEMAND
        if s.spot_available and can_start_spot(s):
            return Choice.SPOT
        if done < s.elapsed_s * rate:
            return Choice.ON_DEMAND
        return Choice.IDLE if can_wait(s) else Choice.ON_DEMAND
    # stormproof
    if s.spot_available and can_start_spot(s):
        brand_new = s.spot_streak_s < s.tick_s
        spare = s.slack_s - s.spot_reserve_s
        if market is Choice.ON_DEMAND and brand_new and spare < gamble_share * s.remaining_time_s:
            return Choice.ON_DEMAND
        return Choice.SPOT
    if s.remaining_work_s <= spot_share * s.remaining_time_s and can_wait(s):
        return Choice.IDLE
    return Choice.ON_DEMAND


def wait_until(
    policy: SpotPolicy,
    s: Situation,
    spot_share: float = SPOT_SHARE,
) -> float:
    """Until what elapsed time ``decide`` keeps answering IDLE while spot stays away.

    For a job that is idle or on on-demand and makes no progress meanwhile (its work left
    stays, its time left shrinks): ``decide`` at elapsed time t answers IDLE for
    t <= ``wait_until(...)`` and ON_DEMAND after (``-inf``: it would not wait at all). The
    core starts a timer at that time, so a waiting task goes on-demand without a tick.
    """
    if policy in (SpotPolicy.ON_DEMAND, SpotPolicy.SPOT_FIRST):
        return -math.inf
    on_demand = s.market is Choice.ON_DEMAND
    last = _last_safe_wait(s)
    if policy is SpotPolicy.GREEDY:
        return -math.inf if on_demand else last
    if policy is SpotPolicy.UNIFORM_PROGRESS:
        if on_demand:
            return -math.inf
        if s.compute_s <= 0 or s.deadline_s <= 0:
            return last if s.compute_s <= 0 else -math.inf
        done = s.compute_s - s.remaining_work_s
        return min(last, done * s.deadline_s / s.compute_s)
    if spot_share <= 0:
        return last if s.remaining_work_s <= 0 else -math.inf
    return min(last, s.elapsed_s + s.remaining_time_s - s.remaining_work_s / spot_share)
