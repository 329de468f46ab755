"""Spot policies for deadline-bound jobs, and the exact optimum to measure them against.

``single`` holds the one-job model (``simulate_job``) and the online policies; ``optimal``
the offline optimum by dynamic programming. Everything here is pure.
"""

from __future__ import annotations

from stormproof.policy.optimal import OptimalPlan, solve_optimal
from stormproof.policy.single import (
    Choice,
    GreedyPolicy,
    JobResult,
    Observation,
    OnDemandPolicy,
    Policy,
    PolicyError,
    StormproofPolicy,
    UniformProgressPolicy,
    simulate_job,
)

__all__ = [
    "ONLINE_POLICIES",
    "Choice",
    "GreedyPolicy",
    "JobResult",
    "Observation",
    "OnDemandPolicy",
    "OptimalPlan",
    "Policy",
    "PolicyError",
    "StormproofPolicy",
    "UniformProgressPolicy",
    "simulate_job",
    "solve_optimal",
]

#: The policies that need no future knowledge, by name.
ONLINE_POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (OnDemandPolicy(), GreedyPolicy(), UniformProgressPolicy(), StormproofPolicy())
}
