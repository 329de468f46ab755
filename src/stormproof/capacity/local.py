"""The local fleet: pools become simulated instances on this machine (DESIGN §7).

Launching is instant (the next poll answers every launch asked since, with no
delay) unless a source says the pool has no capacity now, so
every fault path of a cloud fleet (reclaimed instances, refused launches,
lost nodes) can be exercised on a laptop, with real processes getting real
signals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from stormproof.capacity.base import FleetView, InterruptionSource
from stormproof.core.events import Event, InstanceLaunchFailed, InstanceUp


@dataclass
class LocalFleet:
    sources: Sequence[InterruptionSource] = ()
    #: Launches asked for and not answered yet, by instance id (asking twice is one launch).
    _launches: dict[str, str] = field(default_factory=dict)

    def launch(self, instance_id: str, pool: str) -> None:
        self._launches[instance_id] = pool

    def terminate(self, instance_id: str) -> None:
        """Nothing to give back: the core already sent the kills to what ran there."""

    def close(self, final: bool) -> None:
        """Nothing is held between runs: local instances are the core's bookkeeping only."""

    def poll(self, now: float, fleet: FleetView) -> list[Event]:
        out: list[Event] = []
        for instance_id, pool in self._launches.items():
            refused = next(
                (why for s in self.sources if (why := s.can_launch(now, pool, fleet)) is not None),
                None,
            )
            if refused is None:
                out.append(InstanceUp(now, instance_id))
            else:
                out.append(InstanceLaunchFailed(now, instance_id, refused))
        self._launches.clear()
        for source in self.sources:
            out += source.poll(now, fleet)
        return out


@dataclass(frozen=True)
class PoolSource:
    """What interrupts one pool on the local fleet, as a run records it."""

    pool: str
    notice_s: float = 120.0
    interruption_rate: float | None = None
    trace: str | None = None  # absolute path
    time_scale: float = 1.0
    trace_offset_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoolSource:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def build_sources(
    specs: Sequence[PoolSource], origin: float, seed: int
) -> list[InterruptionSource]:
    """The sources a run recorded, ready to poll.

    ``origin`` is when the run first started: a resumed run continues the
    trace where it was, not from its beginning.
    """
    from stormproof.capacity.sources import RateSource, TraceSource
    from stormproof.traces import load_trace

    out: list[InterruptionSource] = []
    for spec in specs:
        scale = spec.time_scale
        if spec.interruption_rate:
            rate = spec.interruption_rate
            out.append(RateSource(spec.pool, rate, spec.notice_s, origin, scale, seed))
        if spec.trace:
            trace = load_trace(spec.trace)
            offset = spec.trace_offset_s
            out.append(TraceSource(spec.pool, trace, spec.notice_s, origin, scale, offset))
    return out
