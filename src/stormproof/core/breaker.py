"""A circuit breaker per pool: stop placing work where capacity keeps vanishing.

closed ──N faults in the window, or healthy < floor──> open
open ──cool-down over (a timer)──> half_open
half_open ──the probe attempt succeeds──> closed
half_open ──a fault (the probe or anything else on the pool)──> open, longer cool-down

Faults are what the provider does to us (``Capacity.Interrupted``,
``Node.Lost``, a failed launch), never a task's own failure: a buggy task
must not push a healthy pool off the table. The cool-down doubles on each
trip that follows soon after the last close, so a pool that recovers and
fails again is retried less and less often (no flapping), and is forgiven
once it has stayed closed for ``max_cooldown_s``.

Pure: time is passed in; the caller owns the timers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from stormproof.core.defs import BreakerRule


class BreakerState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


#: Bound once: reading a member off an Enum class is slow on CPython 3.11, and every
#: placement asks its pool's breaker.
_CLOSED, _HALF_OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN


@dataclass(frozen=True, slots=True)
class Transition:
    state: BreakerState
    reason: str
    until: float | None = None  # set when the breaker opened: when it goes half-open


@dataclass(slots=True)
class Breaker:
    pool: str
    rule: BreakerRule
    state: BreakerState = BreakerState.CLOSED
    faults: deque[float] = field(default_factory=deque)
    trips: int = 0
    open_until: float = 0.0
    closed_at: float = 0.0
    #: The attempt let through while half-open; the breaker waits for its outcome.
    probe: str | None = None

    def allows(self) -> bool:
        """Whether a new attempt may be placed on the pool now."""
        if self.state is _CLOSED:
            return True
        return self.state is _HALF_OPEN and self.probe is None

    def placed(self, attempt_id: str) -> None:
        if self.state is _HALF_OPEN and self.probe is None:
            self.probe = attempt_id

    def fault(self, now: float, what: str) -> Transition | None:
        """The provider took capacity away (or refused it); maybe open."""
        if self.state is BreakerState.OPEN:
            return None
        if self.state is BreakerState.HALF_OPEN:
            return self._trip(now, f"{what} while half-open")
        self.faults.append(now)
        while self.faults and self.faults[0] <= now - self.rule.window_s:
            self.faults.popleft()
        if len(self.faults) >= self.rule.threshold:
            window = f"{self.rule.window_s:g}s"
            return self._trip(now, f"{len(self.faults)} faults within {window} (last: {what})")
        return None

    def healthy(self, now: float, up: int, target: int) -> Transition | None:
        """The floor: fewer healthy instances than ``min_healthy`` (of those wanted) opens it."""
        floor = min(self.rule.min_healthy, target)
        if self.state is BreakerState.CLOSED and floor > 0 and up < floor:
            return self._trip(now, f"healthy instances {up} < {floor}")
        return None

    def cooled(self, now: float) -> Transition | None:
        """The open cool-down is over: let one probe through."""
        if self.state is not BreakerState.OPEN or now < self.open_until:
            return None
        self.state = BreakerState.HALF_OPEN
        self.probe = None
        return Transition(BreakerState.HALF_OPEN, "cool-down over: one probe may run")

    def ended(self, now: float, attempt_id: str, succeeded: bool) -> Transition | None:
        """An attempt on the pool ended for a reason of its own (not a fault)."""
        if self.probe != attempt_id:
            return None
        self.probe = None
        if not succeeded:
            return None  # the task's own failure says nothing about the pool: probe again
        self.state = BreakerState.CLOSED
        self.faults.clear()
        self.closed_at = now
        return Transition(BreakerState.CLOSED, f"probe {attempt_id} succeeded")

    def _trip(self, now: float, why: str) -> Transition:
        healthy_for = now - self.closed_at
        if self.state is BreakerState.CLOSED and healthy_for > self.rule.max_cooldown_s:
            self.trips = 0  # stayed closed long enough since the last trip: forgiven
        self.trips += 1
        # 2.0 ** 64 is past any cap; an unbounded power of two overflows a float after
        # ~1,000 trips (a pool whose probes keep landing between its capacity windows)
        doubled = self.rule.cooldown_s * 2.0 ** min(self.trips - 1, 64)
        cooldown = min(doubled, self.rule.max_cooldown_s)
        self.state = BreakerState.OPEN
        self.open_until = now + cooldown
        self.probe = None
        self.faults.clear()
        return Transition(BreakerState.OPEN, f"{why}; open for {cooldown:g}s", self.open_until)
