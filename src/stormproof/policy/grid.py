"""One exact time grid for a job: every duration as a whole number of grid units.

The simulator and the optimum both count in units of the largest duration that divides
the tick, the changeover, the compute time and the deadline (for the "Can't Be Late" setup:
600 s ticks, 0.2 h = 720 s changeover, 48 h, 60 h -> 120 s units). Integer arithmetic makes
"finished exactly at the deadline" and "the optimum equals what the simulator measures"
exact comparisons instead of float tolerances.

Inputs are floats of seconds; each is read as the nearest fraction with a denominator of at
most 1000 (millisecond precision), so that 0.2 h * 3600 = 720.0000000000001 is 720 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["Grid"]

_MAX_DENOMINATOR = 1000


@dataclass(frozen=True, slots=True)
class Grid:
    unit_s: Fraction  # seconds per unit
    gap: int  # tick length, units
    compute: int  # C(0), units
    deadline: int  # R(0), units
    changeover: int  # d, units

    @classmethod
    def of(cls, gap_s: float, compute_s: float, deadline_s: float, changeover_s: float) -> Grid:
        names = ("tick length", "compute time", "deadline", "changeover delay")
        values = (gap_s, compute_s, deadline_s, changeover_s)
        for name, value in zip(names, values, strict=True):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"the {name} must be a finite number of seconds >= 0, not {value}")
        if gap_s <= 0:
            raise ValueError(f"the tick length must be > 0 s, not {gap_s}")
        fracs = [Fraction(v).limit_denominator(_MAX_DENOMINATOR) for v in values]
        denominator = math.lcm(*(f.denominator for f in fracs))
        scaled = [int(f * denominator) for f in fracs]
        divisor = math.gcd(*scaled)
        gap, compute, deadline, changeover = (v // divisor for v in scaled)
        return cls(Fraction(divisor, denominator), gap, compute, deadline, changeover)

    def seconds(self, units: int) -> float:
        return float(units * self.unit_s)

    def hours(self, units: int) -> float:
        return float(units * self.unit_s / 3600)
