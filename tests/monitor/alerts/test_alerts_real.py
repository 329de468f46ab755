"""Alerts from real runs to a real webhook receiver through apprise's json:// URL."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest

from ...cli.conftest import Cli, wait_for
from .._webhook import dead_url, receiver

pytestmark = pytest.mark.slow

TWO_FAILURES = """\
name: alerting
global_config: {on_failure: continue}
tasks:
  - {id: a, command: "true"}
  - {id: b, command: "exit 3", depends_on: [a], retry_attempts: 0}
  - {id: c, command: "exit 4", depends_on: [a], retry_attempts: 0}
"""
FAIL_WHILE_ANOTHER_RUNS = """\
name: alerting
global_config: {on_failure: continue}
tasks:
  - {id: fail, command: "exit 3", retry_attempts: 0}
  - {id: slow, command: "sleep 4"}
"""


def config(cli: Cli, *rules: str, pools: str = "") -> None:
    cli.write("stormproof.yaml", pools + "alerts:\n" + "".join(f"  - {r}\n" for r in rules))


#: An on-demand pool at a dollar a second, so that every attempt costs something.
PRICED = "pools:\n  - {name: od, market: on_demand, vcpus: 2, memory: 2048, price: 3600}\n"


def history(cli: Cli, run: str, *, exists: bool = True) -> list[dict[str, Any]]:
    """The run's log; with ``exists=False``, nothing while the run is not created yet."""
    proc = cli("history", run, "--json")
    if not exists and "no run named" in proc.stderr:
        return []
    assert proc.returncode == 0, proc.stderr
    rows: list[dict[str, Any]] = json.loads(proc.stdout)
    return rows


def kinds(rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r["data"] for r in rows if r["kind"] == kind]


def test_each_cause_alerts_once_and_every_delivery_is_in_the_log(cli: Cli) -> None:
    cli.write("wf.yaml", TWO_FAILURES)
    with receiver() as r:
        config(
            cli,
            f'{{on: task_failed, notify: "{r.url}"}}',
            f'{{on: workflow_failed, notify: "{r.url}"}}',
            f'{{on: workflow_succeeded, notify: "{r.url}"}}',
        )
        proc = cli("run", "wf.yaml", "--name", "al", "-q")
        assert proc.returncode == 1, proc.stderr
        titles = sorted(r.titles())
    assert titles == [
        "stormproof: run al failed",
        "stormproof: task b failed in run al",
        "stormproof: task c failed in run al",
    ]
    rows = history(cli, "al")
    raised = kinds(rows, "AlertRaised")
    assert sorted(a["alert_id"] for a in raised) == [
        "al:0:task_failed:b",
        "al:0:task_failed:c",
        "al:1:workflow_failed",
    ]
    delivered = kinds(rows, "AlertDelivered")
    assert sorted(d["alert_id"] for d in delivered) == sorted(a["alert_id"] for a in raised)
    # an alert is logged in the same batch as its cause, caused by the same event
    by_seq = {row["seq"]: row for row in rows}
    for row in rows:
        if row["kind"] == "AlertRaised" and row["data"]["on"] == "task_failed":
            cause = by_seq[row["cause"]]
            assert cause["category"] == "event" and cause["kind"] == "AttemptExited"


def test_a_resumed_run_does_not_alert_twice_for_what_it_already_alerted(cli: Cli) -> None:
    cli.write("wf.yaml", FAIL_WHILE_ANOTHER_RUNS)
    with receiver() as r:
        config(
            cli,
            f'{{on: task_failed, notify: "{r.url}"}}',
            f'{{on: workflow_failed, notify: "{r.url}"}}',
            f'{{on: cost_above, above: 0, notify: "{r.url}"}}',
            pools=PRICED,
        )
        driver = cli.start("run", "wf.yaml", "--name", "rs", "-q")
        wait_for(lambda: len(r.received) == 2, timeout=30, what="task_failed and cost_above")
        wait_for(
            lambda: len(kinds(history(cli, "rs", exists=False), "AlertDelivered")) == 2,
            timeout=10,
            what="its delivery in the log",
        )
        driver.send_signal(signal.SIGTERM)  # the driver stops; `slow` runs on
        assert driver.wait(timeout=30) == 130
        assert cli.status("rs")["state"] == "stopped"
        proc = cli("resume", "rs", "-q", timeout=60)
        assert proc.returncode == 1, proc.stderr
        titles = r.titles()
    # the cost passed $0 before the stop; `slow` cost more after the resume: still one alert
    assert len(titles) == 3
    assert sum("has spent" in t for t in titles) == 1
    assert sum(t == "stormproof: task fail failed in run rs" for t in titles) == 1
    assert titles[-1] == "stormproof: run rs failed"
    rows = history(cli, "rs")
    assert len(kinds(rows, "RunResumed")) == 1
    assert sorted(a["on"] for a in kinds(rows, "AlertRaised")) == [
        "cost_above",
        "task_failed",
        "workflow_failed",
    ]


def test_an_alert_raised_but_not_delivered_when_the_driver_died_is_sent_on_resume(
    cli: Cli,
) -> None:
    cli.write("wf.yaml", FAIL_WHILE_ANOTHER_RUNS)
    with receiver(fail_first=10**6) as r:
        config(cli, f'{{on: task_failed, notify: "{r.url}"}}')
        driver = cli.start("run", "wf.yaml", "--name", "ob", "-q")
        wait_for(
            lambda: len(kinds(history(cli, "ob", exists=False), "AlertDeliveryFailed")) >= 1,
            timeout=30,
            what="a failed try in the log",
        )
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        r.fail_first = 0  # the receiver is back
        proc = cli("resume", "ob", "-q", timeout=60)
        assert proc.returncode == 1, proc.stderr
        titles = r.titles()
    assert titles == ["stormproof: task fail failed in run ob"]
    rows = history(cli, "ob")
    assert len(kinds(rows, "AlertRaised")) == 1
    assert [d["alert_id"] for d in kinds(rows, "AlertDelivered")] == ["ob:0:task_failed:fail"]


def test_a_dead_receiver_never_fails_the_run(cli: Cli) -> None:
    cli.write("wf.yaml", "name: fine\ntasks:\n  - {id: a, command: 'true'}\n")
    config(cli, f'{{on: workflow_succeeded, notify: "{dead_url()}"}}')
    started = time.monotonic()
    proc = cli("run", "wf.yaml", "--name", "dead", "-q", timeout=60)
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert cli.status("dead")["state"] == "succeeded"
    failures = kinds(history(cli, "dead"), "AlertDeliveryFailed")
    assert [f["try"] for f in failures] == [1, 2, 3, 4]
    assert failures[-1]["final"] is True and failures[0]["final"] is False
    assert "Connection error" in failures[0]["error"]
    assert took < 20  # 1 + 2 + 4 s of backoff, bounded by the drain


def test_alerts_test_sends_to_every_target_and_fails_on_a_dead_one(cli: Cli) -> None:
    with receiver() as r:
        config(cli, f'{{on: task_failed, notify: ["{r.url}", "{r.url}"]}}')
        proc = cli("alerts", "test")
        assert proc.returncode == 0, proc.stderr
        assert r.titles() == ["stormproof: test notification"]  # one target, once
        proc = cli("alerts", "test", "--url", dead_url())
    assert proc.returncode == 1
    assert "failed json://127.0.0.1:" in proc.stderr and "Connection error" in proc.stderr
    cli.write("stormproof.yaml", "")
    proc = cli("alerts", "test")
    assert proc.returncode == 2 and "no alert rules to test" in proc.stderr
