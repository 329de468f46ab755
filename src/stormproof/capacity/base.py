"""Two narrow Protocols: a fleet that launches instances, and sources of interruptions.

The core decides (``LaunchInstance``, ``TerminateInstance``) and is told
(``InstanceUp``, ``InstanceLaunchFailed``, ``InterruptionNotice``,
``InstanceLost``). Everything between is here, so a cloud backend is one more
``Fleet`` and a cloud's warning is one more ``InterruptionSource``: an agent
polling EC2's instance metadata (``spot/instance-action``, rebalance
recommendations) or GCP's ``preempted`` flag returns the same
``InterruptionNotice`` that ``stormproof interrupt`` and a replayed trace do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from stormproof.core.events import Event


@dataclass(frozen=True, slots=True)
class InstanceView:
    """What a source may know of an instance: enough to decide whether to take it away."""

    id: str
    pool: str
    state: str  # pending | up | draining


class FleetView(Protocol):
    """The run's live instances, read-only (the driver passes the core's capacity)."""

    def live(self, pool: str) -> Sequence[InstanceView]: ...


class InterruptionSource(Protocol):
    """Something that takes instances away: a rate, a trace, a cloud's warning."""

    def poll(self, now: float, fleet: FleetView) -> list[Event]:
        """Notices (or losses) due by ``now``; each instance at most once."""

    def can_launch(self, now: float, pool: str, fleet: FleetView) -> str | None:
        """``None`` if a new instance of ``pool`` can start now, else why not."""


class Fleet(Protocol):
    """Where instances come from. ``launch`` answers later, through ``poll``.

    ``launch`` must be idempotent by ``instance_id`` (a cloud fleet passes it as
    the client token): after a crash the driver asks again for every launch the
    log has no answer to, and the answer must be about one instance, not two.
    """

    def launch(self, instance_id: str, pool: str) -> None: ...

    def terminate(self, instance_id: str) -> None: ...

    def poll(self, now: float, fleet: FleetView) -> list[Event]: ...

    def close(self, final: bool) -> None:
        """The run's driver stops. ``final``: the run has ended and every instance it still
        holds is to go (a cloud fleet's backstop for the core's own terminations); otherwise
        the run may be resumed and its instances adopted, so they stay."""
