"""One pool's circuit breaker on its own: its edges, its probe, its forgiveness, its reasons.

The fleet tests drive breakers through the whole core; these pin down what a
mutation test found nothing else checked (a window's edge, the health floor's
edge, who becomes the probe, when a long-healthy pool is forgiven, the reasons
``history`` shows).
"""

from __future__ import annotations

from stormproof.core.breaker import Breaker, BreakerState, Transition
from stormproof.core.defs import BreakerRule

RULE = BreakerRule(threshold=2, window_s=60.0, cooldown_s=100.0, max_cooldown_s=1000.0)


def tripped(rule: BreakerRule = RULE, at: float = 0.0) -> Breaker:
    b = Breaker("spot", rule)
    b.fault(at, "i-1 interrupted")
    assert b.fault(at, "i-2 interrupted") is not None
    return b


def test_faults_count_within_the_window_not_at_its_edge() -> None:
    b = Breaker("spot", RULE)
    assert b.fault(0.0, "i-1 interrupted") is None
    assert b.fault(60.0, "i-2 interrupted") is None  # the first fell out exactly at the edge
    opened = b.fault(119.0, "i-3 interrupted")
    assert opened == Transition(
        BreakerState.OPEN,
        "2 faults within 60s (last: i-3 interrupted); open for 100s",
        219.0,
    )


def test_only_the_first_attempt_placed_while_half_open_is_its_probe() -> None:
    b = tripped()
    b.placed("a/1")  # closed or open: nobody is the probe
    assert b.probe is None
    assert b.cooled(99.0) is None  # not yet
    assert b.cooled(100.0) == Transition(
        BreakerState.HALF_OPEN, "cool-down over: one probe may run"
    )
    assert b.cooled(150.0) is None  # already half-open
    b.placed("b/1")
    b.placed("c/1")
    assert (b.probe, b.allows()) == ("b/1", False)
    assert b.ended(160.0, "c/1", True) is None  # not the probe: says nothing
    assert b.ended(170.0, "b/1", True) == Transition(BreakerState.CLOSED, "probe b/1 succeeded")
    assert (b.state, b.probe, b.allows()) == (BreakerState.CLOSED, None, True)


def test_a_fault_while_half_open_opens_it_again_for_twice_as_long() -> None:
    b = tripped()
    b.cooled(100.0)
    b.placed("b/1")
    again = b.fault(110.0, "i-3 lost")
    assert again == Transition(BreakerState.OPEN, "i-3 lost while half-open; open for 200s", 310.0)
    assert b.probe is None
    assert b.cooled(310.0) is not None and b.probe is None and b.allows()


def test_the_health_floor_opens_below_it_not_at_it_and_only_when_asked_for() -> None:
    rule = BreakerRule(min_healthy=2, cooldown_s=50.0)
    b = Breaker("spot", rule)
    assert b.healthy(0.0, up=2, target=4) is None
    assert b.healthy(0.0, up=1, target=1) is None  # the floor is at most what is wanted
    assert b.healthy(0.0, up=1, target=4) == Transition(
        BreakerState.OPEN, "healthy instances 1 < 2; open for 50s", 50.0
    )
    assert Breaker("spot", BreakerRule(min_healthy=0)).healthy(0.0, up=0, target=4) is None


def test_a_pool_healthy_for_longer_than_the_longest_cool_down_is_forgiven() -> None:
    b = tripped()  # trip 1: 100 s
    b.cooled(100.0)
    b.placed("p/1")
    b.ended(100.0, "p/1", True)  # closed at 100
    b.fault(1100.0, "i-3 interrupted")
    second = b.fault(1100.0, "i-4 interrupted")  # healthy for exactly 1000 s: not forgiven
    assert second is not None and second.until == 1100.0 + 200.0
    b.cooled(1300.0)
    b.placed("p/2")
    b.ended(1300.0, "p/2", True)  # closed at 1300
    b.fault(2301.0, "i-5 interrupted")
    third = b.fault(2301.0, "i-6 interrupted")  # healthy for 1001 s: forgiven, back to 100 s
    assert third is not None and third.until == 2301.0 + 100.0


def test_an_open_breaker_ignores_faults_and_a_closed_one_ignores_cooling() -> None:
    b = tripped()
    assert b.fault(10.0, "i-9 lost") is None
    assert b.open_until == 100.0
    assert Breaker("spot", RULE).cooled(1e9) is None
