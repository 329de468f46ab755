"""Delivery through apprise's json:// to a real HTTP receiver on loopback."""

from __future__ import annotations

import time

from stormproof.monitor.alerts.deliver import Deliverer, Outcome, apprise_send
from stormproof.monitor.alerts.rules import Alert

from .._webhook import dead_url, receiver

ALERT = Alert(
    "r:0:task_failed:b", 0, "task_failed", "failure", "stormproof: b failed", "body", 1.0, 7
)


def settle(d: Deliverer, timeout: float = 20.0) -> list[Outcome]:
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcomes += d.take()
        if d.idle and outcomes:
            return outcomes + d.take()
        time.sleep(0.02)
    raise AssertionError(f"deliveries did not settle: {outcomes}")


def test_apprise_posts_the_alert_as_json() -> None:
    with receiver() as r:
        ok, error, shown = apprise_send(r.url, ALERT)
    assert (ok, error) == (True, "")
    assert shown == f"json://127.0.0.1:{r.port}/hook"
    (message,) = r.received
    assert (message["title"], message["message"], message["type"]) == (
        "stormproof: b failed",
        "body",
        "failure",
    )


def test_a_failing_receiver_is_retried_with_backoff_until_it_takes_the_alert() -> None:
    with receiver(fail_first=2) as r:
        d = Deliverer(first_retry_s=0.1)
        started = time.monotonic()
        d.send(ALERT, 0, r.url)
        outcomes = settle(d)
        took = time.monotonic() - started
    assert [(o.tries, o.ok, o.retry_in_s) for o in outcomes] == [
        (1, False, 0.1),
        (2, False, 0.2),
        (3, True, None),
    ]
    assert took >= 0.3  # it waited the backoff out
    assert outcomes[0].to_data()["error"] and not outcomes[0].final and outcomes[2].final
    assert len(r.received) == 1


def test_a_dead_receiver_is_given_up_after_the_last_try_and_never_raises() -> None:
    d = Deliverer(first_retry_s=0.05, max_tries=3)
    d.send(ALERT, 0, dead_url())
    d.send(ALERT, 1, "nosuchscheme://x")
    outcomes = settle(d)
    by_target = {k: [o for o in outcomes if o.target == k] for k in (0, 1)}
    assert [o.tries for o in by_target[0]] == [1, 2, 3] and by_target[0][-1].final
    assert "Connection error" in by_target[0][0].error
    assert "apprise cannot use the URL nosuchscheme://" in by_target[1][0].error
    assert not any(o.ok for o in outcomes)


def test_close_hands_back_what_is_still_waiting_for_its_next_try() -> None:
    d = Deliverer(first_retry_s=30.0)
    d.send(ALERT, 0, dead_url())
    deadline = time.monotonic() + 10
    while not d._outcomes and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    left = d.close(wait_s=0.3)
    assert time.monotonic() - started < 2.0
    assert [(j.alert.id, j.target, j.tries) for j in left] == [(ALERT.id, 0, 1)]
