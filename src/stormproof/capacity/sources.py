"""Interruption sources of the local fleet: a rate and a replayed spot trace.

Both map real (wall-clock) time onto *pool time* with the pool's
``time_scale``, so a two-week trace replays in minutes and a rate of 0.1
interruptions per instance-hour can be watched in seconds. The notice itself
stays in real seconds: it is the time a task really gets to checkpoint.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from stormproof.capacity.base import FleetView
from stormproof.core.events import Event, InterruptionNotice
from stormproof.traces import Trace


@dataclass
class RateSource:
    """Interrupts each up instance of ``pool`` after an exponential time (Poisson arrivals).

    ``rate_per_h`` is per instance-hour of pool time. Draws are seeded by the
    run's seed and the instance id, so a resumed run interrupts the same
    instances at the same pool times.
    """

    pool: str
    rate_per_h: float
    notice_s: float
    origin: float
    time_scale: float = 1.0
    seed: int = 0
    _due: dict[str, float] = field(default_factory=dict)
    _noticed: set[str] = field(default_factory=set)

    def poll(self, now: float, fleet: FleetView) -> list[Event]:
        if self.rate_per_h <= 0:
            return []
        out: list[Event] = []
        for inst in fleet.live(self.pool):
            if inst.state != "up" or inst.id in self._noticed:
                continue
            due = self._due.get(inst.id)
            if due is None:
                due = self._due[inst.id] = now + self._draw(inst.id) / self.time_scale
            if now >= due:
                self._noticed.add(inst.id)
                out.append(InterruptionNotice(now, inst.id, self.notice_s, "rate"))
        return out

    def can_launch(self, now: float, pool: str, fleet: FleetView) -> str | None:
        return None

    def _draw(self, instance_id: str) -> float:
        unit = random.Random(f"{self.seed}:{instance_id}").random()
        return -math.log(1.0 - unit) * 3600.0 / self.rate_per_h


@dataclass
class TraceSource:
    """The pool's capacity follows a spot availability trace over pool time.

    When the trace drops below the instances the pool holds, the newest ones
    get a notice; while it stays below, launches are refused
    (``Capacity.Unavailable``); when it rises, launches succeed again.
    """

    pool: str
    trace: Trace
    notice_s: float
    origin: float
    time_scale: float = 1.0
    offset_s: float = 0.0
    _noticed: set[str] = field(default_factory=set)
    _granted: tuple[float, int] = (-1.0, 0)  # launches allowed at one instant, not yet up

    def available(self, now: float) -> int:
        return self.trace.at(self.offset_s + (now - self.origin) * self.time_scale)

    def poll(self, now: float, fleet: FleetView) -> list[Event]:
        holding = [i for i in fleet.live(self.pool) if i.state == "up"]
        excess = len(holding) - self.available(now)
        out: list[Event] = []
        for inst in reversed(holding):
            if excess <= 0:
                break
            excess -= 1
            if inst.id not in self._noticed:
                self._noticed.add(inst.id)
                out.append(InterruptionNotice(now, inst.id, self.notice_s, "trace"))
        return out

    def can_launch(self, now: float, pool: str, fleet: FleetView) -> str | None:
        if pool != self.pool:
            return None
        holding = sum(1 for i in fleet.live(pool) if i.state == "up")
        granted = self._granted[1] if self._granted[0] == now else 0
        available = self.available(now)
        if holding + granted < available:
            self._granted = (now, granted + 1)
            return None
        at = self.offset_s + (now - self.origin) * self.time_scale
        return f"the trace {self.trace.source} has {available} instance(s) at {at:.0f}s"
