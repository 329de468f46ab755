"""``/metrics``: every run of the home in the Prometheus text format.

Built at scrape time from the same views as the dashboard (so the figures are the ones
``status --json`` shows), by a custom collector on a registry of its own: nothing global,
nothing to keep in step with the runs.

=====================================================  =========================================
metric                                                 what
=====================================================  =========================================
``stormproof_runs{state}``                             runs by state
``stormproof_run_info{run,workflow,state}``            1 per run, its workflow and state
``stormproof_run_seconds{run}``                        execution time (to now while running)
``stormproof_tasks{run,state}``                        tasks by state
``stormproof_attempts_running{run}``                   attempts placed or running now
``stormproof_attempts_started_total{run,pool}``        attempts placed on capacity
``stormproof_attempts_ended_total{run,pool,outcome}``  attempts ended, by outcome
``stormproof_interruptions_total{run,pool}``           attempts taken away (interrupted, lost)
``stormproof_interruption_notices_total{run,pool}``    notices and losses of instances
``stormproof_breaker_state{run,pool,state}``           1 for the breaker's state, 0 for others
``stormproof_breaker_trips_total{run,pool}``           times the breaker opened
``stormproof_cost_usd{run,kind}``                      spent, on_demand_equivalent, saved, wasted
``stormproof_wasted_seconds{run}``                     instance time lost to interruptions
``stormproof_attempt_cpu_seconds_total{run}``          CPU time of the measured attempts
``stormproof_attempt_max_rss_mib{run}``                largest peak memory of one attempt
``stormproof_attempt_queue_wait_seconds{run}``         histogram: ready to started
``stormproof_attempt_run_seconds{run}``                histogram: started to ended
=====================================================  =========================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from stormproof.runtime.view import RunView
from stormproof.store.base import RunInfo

BUCKETS_S: Final = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
BREAKER_STATES: Final = ("closed", "open", "half_open")
RUN_STATES: Final = ("running", "stopped", "succeeded", "failed", "cancelled")
#: Attempt states that are outcomes (the others are still live).
OUTCOMES: Final = ("succeeded", "failed", "interrupted", "lost", "timed_out", "cancelled")


class RunsCollector(Collector):
    def __init__(self, runs: Callable[[], list[tuple[RunInfo, RunView]]], now: float) -> None:
        self.runs = runs
        self.now = now

    def collect(self) -> Iterator[Metric]:
        runs = self.runs()
        yield from _run_metrics(runs, self.now)
        yield from _attempt_metrics([v for _, v in runs])
        yield from _pool_metrics([v for _, v in runs])
        yield from _money_metrics([v for _, v in runs], self.now)
        yield from _histograms([v for _, v in runs])


def registry(runs: Callable[[], list[tuple[RunInfo, RunView]]], now: float) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(RunsCollector(runs, now))
    return reg


def _run_metrics(runs: list[tuple[RunInfo, RunView]], now: float) -> Iterable[Metric]:
    by_state = GaugeMetricFamily("stormproof_runs", "Runs by state.", labels=["state"])
    counts = {s: 0 for s in RUN_STATES}
    for _, v in runs:
        counts[v.state] = counts.get(v.state, 0) + 1
    for state, n in counts.items():
        by_state.add_metric([state], n)
    info = GaugeMetricFamily(
        "stormproof_run_info",
        "1 per run: its workflow and state.",
        labels=["run", "workflow", "state"],
    )
    seconds = GaugeMetricFamily(
        "stormproof_run_seconds",
        "Execution time of the run (to now while it runs).",
        labels=["run"],
    )
    tasks = GaugeMetricFamily("stormproof_tasks", "Tasks by state.", labels=["run", "state"])
    for i, v in runs:
        info.add_metric([v.name, i.workflow_name, v.state], 1)
        if v.started is not None:
            seconds.add_metric([v.name], (v.ended if v.ended is not None else now) - v.started)
        for state, n in sorted(v.counts().items()):
            tasks.add_metric([v.name, state], n)
    yield from (by_state, info, seconds, tasks)


def _attempt_metrics(views: list[RunView]) -> Iterable[Metric]:
    running = GaugeMetricFamily(
        "stormproof_attempts_running", "Attempts placed or running now.", labels=["run"]
    )
    started = CounterMetricFamily(
        "stormproof_attempts_started", "Attempts placed on capacity.", labels=["run", "pool"]
    )
    ended = CounterMetricFamily(
        "stormproof_attempts_ended",
        "Attempts ended, by outcome.",
        labels=["run", "pool", "outcome"],
    )
    cpu = CounterMetricFamily(
        "stormproof_attempt_cpu_seconds", "CPU seconds of the measured attempts.", labels=["run"]
    )
    rss = GaugeMetricFamily(
        "stormproof_attempt_max_rss_mib", "Largest peak memory of one attempt, MiB.", labels=["run"]
    )
    for v in views:
        running.add_metric([v.name], v.running_attempts())
        placed: dict[str, int] = {}
        outcomes: dict[tuple[str, str], int] = {}
        for t in v.tasks.values():
            for a in t.attempts:
                pool = a.pool or ""
                placed[pool] = placed.get(pool, 0) + 1
                if a.state in OUTCOMES:
                    outcomes[(pool, a.state)] = outcomes.get((pool, a.state), 0) + 1
        for pool, n in sorted(placed.items()):
            started.add_metric([v.name, pool], n)
        for (pool, outcome), n in sorted(outcomes.items()):
            ended.add_metric([v.name, pool, outcome], n)
        used = v.resources()
        if used["cpu_s"] is not None:
            cpu.add_metric([v.name], used["cpu_s"])
        if used["max_rss_mib"] is not None:
            rss.add_metric([v.name], used["max_rss_mib"])
    yield from (running, started, ended, cpu, rss)


def _pool_metrics(views: list[RunView]) -> Iterable[Metric]:
    taken = CounterMetricFamily(
        "stormproof_interruptions",
        "Attempts taken away by the provider (Capacity.Interrupted, Node.Lost).",
        labels=["run", "pool"],
    )
    notices = CounterMetricFamily(
        "stormproof_interruption_notices",
        "Interruption notices and losses of instances, busy or idle.",
        labels=["run", "pool"],
    )
    breaker = GaugeMetricFamily(
        "stormproof_breaker_state", "1 for the breaker's state.", labels=["run", "pool", "state"]
    )
    trips = CounterMetricFamily(
        "stormproof_breaker_trips", "Times the breaker opened.", labels=["run", "pool"]
    )
    for v in views:
        by_pool: dict[str, int] = {}
        for t in v.tasks.values():
            for a in t.attempts:
                if a.budget == "interruptions":
                    by_pool[a.pool or ""] = by_pool.get(a.pool or "", 0) + 1
        for pool, n in sorted(by_pool.items()):
            taken.add_metric([v.name, pool], n)
        noticed: dict[str, int] = {}
        for mark in v.notices:
            noticed[mark["pool"]] = noticed.get(mark["pool"], 0) + 1
        for pool, k in sorted(noticed.items()):
            notices.add_metric([v.name, pool], k)
        for pool, b in sorted(v.breakers.items()):
            for state in BREAKER_STATES:
                breaker.add_metric([v.name, pool, state], 1 if b["state"] == state else 0)
            trips.add_metric([v.name, pool], int(b.get("trips") or 0))
    yield from (taken, notices, breaker, trips)


def _money_metrics(views: list[RunView], now: float) -> Iterable[Metric]:
    cost = GaugeMetricFamily("stormproof_cost_usd", "Money in USD.", labels=["run", "kind"])
    wasted = GaugeMetricFamily(
        "stormproof_wasted_seconds", "Instance time lost to interruptions.", labels=["run"]
    )
    for v in views:
        c = v.cost(v.ended if v.ended is not None else now)
        for kind, value in (
            ("spent", c.spent),
            ("on_demand_equivalent", c.on_demand_equivalent),
            ("saved", c.saved),
            ("wasted", c.wasted),
        ):
            cost.add_metric([v.name, kind], value)
        wasted.add_metric([v.name], c.wasted_s)
    yield from (cost, wasted)


def _histograms(views: list[RunView]) -> Iterable[Metric]:
    queue = HistogramMetricFamily(
        "stormproof_attempt_queue_wait_seconds",
        "From the task being ready to its attempt starting.",
        labels=["run"],
    )
    run = HistogramMetricFamily(
        "stormproof_attempt_run_seconds", "From an attempt starting to its end.", labels=["run"]
    )
    for v in views:
        waits, runs = [], []
        for t in v.tasks.values():
            for a in t.attempts:
                begun = a.started if a.started is not None else a.launched
                if a.queued is not None and a.started is not None:
                    waits.append(max(0.0, a.started - a.queued))
                if a.ended is not None:
                    runs.append(max(0.0, a.ended - begun))
        queue.add_metric([v.name], *_buckets(waits))
        run.add_metric([v.name], *_buckets(runs))
    yield from (queue, run)


def _buckets(values: list[float]) -> tuple[list[tuple[str, float]], float]:
    counts = []
    for bound in BUCKETS_S:
        counts.append((str(float(bound)), float(sum(1 for x in values if x <= bound))))
    counts.append(("+Inf", float(len(values))))
    return counts, sum(values)
