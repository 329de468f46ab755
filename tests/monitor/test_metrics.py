"""``/metrics`` parsed with prometheus_client's own parser and held against ``status --json``."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ..cli.conftest import Cli
from ._runs import make_runs
from .web.test_api import client


def scrape(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}}."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            out.setdefault(sample.name, {})[labels] = sample.value
    return out


def of_run(samples: dict[tuple[tuple[str, str], ...], float], run: str) -> dict[str, float]:
    """The samples of one run, keyed by their other labels joined (``state=failed``)."""
    found = {}
    for labels, value in samples.items():
        d = dict(labels)
        if d.pop("run", None) == run:
            found[",".join(f"{k}={v}" for k, v in sorted(d.items()))] = value
    return found


def expected_outcomes(status: dict[str, Any]) -> dict[str, float]:
    counts: dict[str, float] = {}
    for task in status["tasks"].values():
        for a in task["attempts"]:
            key = f"outcome={a['state']},pool={a['pool']}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def compare(metrics: dict[str, Any], status: dict[str, Any], run: str) -> None:
    """Every figure /metrics gives for ``run`` is the one ``status --json`` gives."""
    tasks = of_run(metrics["stormproof_tasks"], run)
    assert tasks == {f"state={k}": v for k, v in status["counts"].items()}
    cost = of_run(metrics["stormproof_cost_usd"], run)
    for kind in ("spent", "on_demand_equivalent", "saved", "wasted"):
        assert abs(cost[f"kind={kind}"] - status["cost"][kind]) < 1e-5, kind
    assert of_run(metrics["stormproof_attempts_ended_total"], run) == expected_outcomes(status)
    taken = of_run(metrics.get("stormproof_interruptions_total", {}), run)
    assert sum(taken.values()) == status["interruptions"]
    notices = of_run(metrics.get("stormproof_interruption_notices_total", {}), run)
    assert sum(notices.values()) == status["instance_notices"]
    breakers = of_run(metrics["stormproof_breaker_state"], run)
    for pool, b in status["breakers"].items():
        assert breakers[f"pool={pool},state={b['state']}"] == 1
    running = of_run(metrics["stormproof_attempts_running"], run)
    assert running == {"": status["running_attempts"]}
    attempts = sum(len(t["attempts"]) for t in status["tasks"].values())
    waits = of_run(metrics["stormproof_attempt_run_seconds_count"], run)
    assert waits == {"": attempts}


def test_metrics_match_status_json(tmp_path: Any) -> None:
    cli = Cli(tmp_path, [])
    make_runs(cli)
    with client(cli.cwd / ".stormproof") as c:
        response = c.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    metrics = scrape(response.text)
    by_state = {dict(k)["state"]: v for k, v in metrics["stormproof_runs"].items()}
    assert by_state["failed"] == 1 and by_state["succeeded"] == 1 and by_state["running"] == 0
    for run in ("demo", "small"):
        status = json.loads(cli("status", run, "--json").stdout)
        compare(metrics, status, run)
    demo = of_run(metrics["stormproof_attempts_ended_total"], "demo")
    assert demo == {"outcome=failed,pool=spot": 2, "outcome=succeeded,pool=spot": 3}
    assert of_run(metrics["stormproof_cost_usd"], "demo")["kind=spent"] > 0
    assert of_run(metrics["stormproof_attempt_queue_wait_seconds_count"], "demo") == {"": 5}
