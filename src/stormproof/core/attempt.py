"""What the core keeps of an attempt in flight, what work costs, and the names errors have.

Shared by the core's modules (``placement`` makes attempts, ``outcomes`` ends
and bills them, ``fleet`` ends those on a lost instance); plain data with no
behaviour but ``Cost``'s sums.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stormproof.core.defs import Resources
from stormproof.core.states import AttemptState

TASK_FAILED = "Task.Failed"
TASK_TIMEOUT = "Task.Timeout"
NODE_LOST = "Node.Lost"
CAPACITY_INTERRUPTED = "Capacity.Interrupted"
CAPACITY_UNAVAILABLE = "Capacity.Unavailable"
TASK_OUT_OF_MEMORY = "Task.OutOfMemory"
#: Errors that are the provider's fault: they draw on ``max_interruptions``, never on retries.
PROVIDER_ERRORS = frozenset({NODE_LOST, CAPACITY_INTERRUPTED})
#: The task's own failures: what a per-task-type breaker counts.
TASK_ERRORS = frozenset({TASK_FAILED, TASK_TIMEOUT, TASK_OUT_OF_MEMORY})


@dataclass(slots=True)
class Attempt:
    """An attempt that has not ended yet (ended ones are only in the log)."""

    id: str
    task: int
    number: int
    instances: tuple[str, ...]
    pool: str = ""
    need: Resources = field(default_factory=lambda: Resources(0, 0, 0))
    state: AttemptState = AttemptState.PLACED
    #: "timeout", "interrupted", "cancel" or "failing" once a kill was decided
    kill_reason: str | None = None
    launched_at: float = 0.0
    started_at: float | None = None
    last_commit_at: float | None = None
    restored: bool = False
    usd_per_h: float = 0.0
    od_usd_per_h: float = 0.0
    #: The attempt this one is queued behind ("" for one placed on free capacity).
    after: str = ""
    #: The attempt queued behind this one, if any.
    successor: str | None = None
    #: Whether it holds its place on ``instances`` (a queued successor does not, yet).
    holds: bool = True


@dataclass(slots=True)
class Cost:
    """Money and instance time, per task and for the run (DESIGN §5), in USD and seconds."""

    spent: float = 0.0
    on_demand_equivalent: float = 0.0
    wasted: float = 0.0
    wasted_s: float = 0.0
    spot_s: float = 0.0
    on_demand_s: float = 0.0

    @property
    def saved(self) -> float:
        return self.on_demand_equivalent - self.spent

    def add(self, other: Cost) -> None:
        self.spent += other.spent
        self.on_demand_equivalent += other.on_demand_equivalent
        self.wasted += other.wasted
        self.wasted_s += other.wasted_s
        self.spot_s += other.spot_s
        self.on_demand_s += other.on_demand_s
