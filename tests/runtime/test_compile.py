"""From the workflow file to the core's decisions: the settings a file gives must reach the core.

Each test writes a real workflow file, loads it as ``run`` does (``load_workflow``),
compiles it (``compile_tasks``, ``run_options``) and drives the core with the
events a run would see; what it asserts on is the core's decisions. A setting
dropped anywhere between the file and the core (``global_config.max_parallel``
ignored, ``jitter: full`` or ``backoff_multiplier`` lost) changes them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from stormproof.config import PolicyConfig, load_config
from stormproof.core.decisions import Decision, LaunchAttempt, StartTimer, TaskRetrying
from stormproof.core.defs import BreakerRule, Market, PoolDef, Resources, RunOptions
from stormproof.core.events import AttemptExited, AttemptStarted, TimerFired
from stormproof.core.machine import Workflow
from stormproof.runtime.compile import checkpoint_overhead, compile_tasks, policy_dict, run_options
from stormproof.spec.load import load_workflow
from stormproof.spec.model import WorkflowSpec
from tests.core.builders import begin

#: Room for 64 one-vCPU attempts at once: only ``max_parallel`` may hold them back.
BIG = PoolDef("big", Market.ON_DEMAND, Resources(64, 65536, 0), count=1)


def core_of(tmp_path: Path, text: str, max_parallel: int | None = None, seed: int = 7) -> Workflow:
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(text))
    spec = load_workflow(path)
    return Workflow(compile_tasks(spec), run_options(spec, (BIG,), seed, max_parallel))


def launched(decisions: list[Decision]) -> list[str]:
    return [d.attempt_id for d in decisions if isinstance(d, LaunchAttempt)]


def independent(n: int, extra: str = "") -> str:
    tasks = "\n".join(
        f"  - {{id: t{i}, command: ['true'], vcpus: 1, memory: 64}}" for i in range(n)
    )
    return f"name: wide\n{extra}tasks:\n{tasks}\n"


def test_global_config_max_parallel_caps_the_attempts_the_core_launches(tmp_path: Path) -> None:
    core = core_of(tmp_path, independent(6, "global_config: {max_parallel: 2}\n"))
    first = launched(begin(core))
    assert len(first) == 2
    core.handle(AttemptStarted(1.0, first[0], "1"))
    more = launched(core.handle(AttemptExited(2.0, first[0], 0)))
    assert len(more) == 1, "one place freed, one more attempt"


def test_without_a_limit_every_ready_task_launches_and_the_run_s_own_limit_wins(
    tmp_path: Path,
) -> None:
    assert len(launched(begin(core_of(tmp_path, independent(6))))) == 6
    limited = core_of(tmp_path, independent(6, "global_config: {max_parallel: 2}\n"), 3)
    assert len(launched(begin(limited))) == 3  # `run --max-parallel 3`


def fail_until_exhausted(core: Workflow, task: str) -> list[float]:
    """Start the task's attempts and fail each; the delays the core decided between them."""
    now, delays = 0.0, []
    pending = launched(begin(core, now))
    while pending:
        attempt = pending[0]
        core.handle(AttemptStarted(now, attempt, "1"))
        now += 1.0
        decisions = core.handle(AttemptExited(now, attempt, 1))
        retry = [d for d in decisions if isinstance(d, TaskRetrying) and d.task_id == task]
        if not retry:
            return delays
        delays.append(retry[0].delay_s)
        timers = [d for d in decisions if isinstance(d, StartTimer)]
        assert [t.fire_at for t in timers] == [now + retry[0].delay_s]
        now = timers[0].fire_at
        pending = launched(core.handle(TimerFired(now, timers[0].timer_id)))
    return delays


def test_a_task_s_backoff_multiplier_grows_the_retry_delays(tmp_path: Path) -> None:
    core = core_of(
        tmp_path,
        """
        name: flaky
        global_config: {retry_interval: 2s}
        tasks:
          - {id: t, command: ["false"], retry_attempts: 3, backoff_multiplier: 3}
        """,
    )
    assert fail_until_exhausted(core, "t") == [2.0, 6.0, 18.0]


def test_a_retrier_s_full_jitter_draws_each_delay_below_its_backoff(tmp_path: Path) -> None:
    text = """
        name: jittery
        tasks:
          - id: t
            command: ["false"]
            retry:
              - {error_equals: [States.ALL], interval_seconds: 10, max_attempts: 4,
                 backoff_rate: 2, jitter: JITTER}
        """
    plain = fail_until_exhausted(core_of(tmp_path, text.replace("JITTER", "none")), "t")
    assert plain == [10.0, 20.0, 40.0, 80.0]
    for seed in (1, 2, 3):
        jittery = core_of(tmp_path, text.replace("JITTER", "full"), seed=seed)
        drawn = fail_until_exhausted(jittery, "t")
        assert len(drawn) == 4
        assert all(0 <= d < cap for d, cap in zip(drawn, plain, strict=True)), drawn
        assert drawn != plain


def test_the_recipe_s_retry_fields_become_one_retrier_on_every_error(tmp_path: Path) -> None:
    """``max_retry_attempts`` for all, ``retry_attempts`` per task (0: never again), the first
    delay ``retry_interval``, for any error (``States.ALL``, a failed exit here)."""
    text = """
        name: recipe
        global_config: {max_retry_attempts: 2, retry_interval: 5s}
        tasks:
          - {id: t, command: ["false"]RETRIES}
        """
    assert fail_until_exhausted(core_of(tmp_path, text.replace("RETRIES", "")), "t") == [5.0, 10.0]
    once = core_of(tmp_path, text.replace("RETRIES", ", retry_attempts: 1"))
    assert fail_until_exhausted(once, "t") == [5.0]
    never = core_of(tmp_path, text.replace("RETRIES", ", retry_attempts: 0"))
    assert fail_until_exhausted(never, "t") == []


def test_a_retrier_s_max_delay_caps_its_backoff(tmp_path: Path) -> None:
    core = core_of(
        tmp_path,
        """
        name: capped
        tasks:
          - id: t
            command: ["false"]
            retry:
              - {error_equals: [Task.Failed], interval_seconds: 10, max_attempts: 3,
                 backoff_rate: 2, max_delay_seconds: 15}
        """,
    )
    assert fail_until_exhausted(core, "t") == [10.0, 15.0, 15.0]


def test_every_task_setting_overrides_its_global_default_or_falls_back_to_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(
        textwrap.dedent(
            """
            name: settings
            global_config:
              kill_grace: 7s
              max_interruptions: 4
              on_failure: continue
              checkpoint_interval: 10m
              keep_checkpoints: 3
              keep_checkpoints_on_success: true
              memory_escalation: 1.5
            tasks:
              - {id: plain, command: ["x"], checkpoint_enabled: true}
              - id: own
                command: ["x"]
                depends_on: [plain]
                type: multi_node
                vcpus: 3
                memory: 5000
                gpus: 1
                nodes: 2
                timeout: 1h
                kill_grace: 2s
                max_interruptions: 1
                on_failure: fail
                spot_enabled: false
                checkpoint_enabled: true
                checkpoint_interval: 1m
                keep_checkpoints: 1
                keep_checkpoints_on_success: false
                memory_escalation: 2
                estimated_runtime: 2h
            """
        )
    )
    plain, own = compile_tasks(load_workflow(path))
    assert (plain.kill_grace_s, own.kill_grace_s) == (7.0, 2.0)
    assert (plain.max_interruptions, own.max_interruptions) == (4, 1)
    assert (plain.on_failure.value, own.on_failure.value) == ("continue", "fail")
    assert (plain.checkpoint_interval_s, own.checkpoint_interval_s) == (600.0, 60.0)
    assert (plain.keep_checkpoints, own.keep_checkpoints) == (3, 1)
    assert (plain.keep_checkpoints_on_success, own.keep_checkpoints_on_success) == (True, False)
    assert (plain.memory_escalation, own.memory_escalation) == (1.5, 2.0)
    assert (plain.timeout_s, own.timeout_s) == (None, 3600.0)
    assert (plain.spot_enabled, own.spot_enabled) == (True, False)
    assert (plain.checkpoint_enabled, own.checkpoint_enabled) == (True, True)
    assert (plain.kind, own.kind) == ("batch", "multi_node")
    assert (own.resources.vcpus, own.resources.memory_mib, own.resources.gpus) == (3, 5000, 1)
    assert own.nodes == 2
    assert (plain.estimated_s, own.estimated_s) == (1800.0, 7200.0)  # the recipe's 30 min guess
    assert (plain.parents, plain.children, own.parents) == ((), (1,), (0,))
    assert plain.priority > own.priority > 0  # upward rank: plain is on own's path
    assert own.at_risk_s > 0


def test_the_policy_in_stormproof_yaml_reaches_the_core_s_run_options(tmp_path: Path) -> None:
    """stormproof.yaml's ``policy:`` → what a run records (``policy_dict``) → ``RunOptions``."""
    (tmp_path / "stormproof.yaml").write_text(
        textwrap.dedent(
            """
            pools:
              - {name: spot, market: spot, vcpus: 4, memory: 8192, price: 0.1}
              - {name: od, market: on_demand, vcpus: 4, memory: 8192, price: 0.3}
            policy:
              name: uniform_progress
              deadline: 36h
              fallback_after_interruptions: 2
              last_attempt_on_demand: true
              launch_retry: 90s
              successors: 2
              breaker: {threshold: 5, window: 20m, cooldown: 3m, max_cooldown: 2h,
                        min_healthy: 1, per_task_type: true}
            """
        )
    )
    config = load_config(None, tmp_path, {})
    spec = load_workflow_text(tmp_path, "name: w\nglobal_config: {spot_strategy: lowest_price}\n")
    options = run_options(spec, config.pool_defs(), 9, None, policy_dict(config.policy, "slurm"))
    assert (options.seed, [p.name for p in options.pools]) == (9, ["spot", "od"])
    assert options.spot_policy.value == "uniform_progress"
    assert options.deadline_s == 36 * 3600.0
    assert options.fallback_after_interruptions == 2
    assert options.last_attempt_on_demand is True
    assert options.launch_retry_s == 90.0
    assert options.successors == 2
    assert options.spot_strategy.value == "lowest_price"
    assert options.breaker == BreakerRule(5, 1200.0, 180.0, 7200.0, 1, True)


def test_without_a_policy_the_core_gets_its_defaults(tmp_path: Path) -> None:
    spec = load_workflow_text(tmp_path, "name: w\n")
    options = run_options(spec, (BIG,), 1, None, None)
    assert options == RunOptions(seed=1, pools=(BIG,))
    recorded = policy_dict(PolicyConfig(), "local")
    assert run_options(spec, (BIG,), 1, None, recorded).successors == 3  # local's default
    assert run_options(spec, (BIG,), 1, None, policy_dict(PolicyConfig())).breaker == (
        BreakerRule()
    )


def load_workflow_text(tmp_path: Path, head: str) -> WorkflowSpec:
    path = tmp_path / "wf.yaml"
    path.write_text(head + "tasks:\n  - {id: a, command: ['true']}\n")
    return load_workflow(path)


def test_checkpoint_pauses_count_in_a_task_s_path_and_bound_what_an_interruption_costs(
    tmp_path: Path,
) -> None:
    """100 s of work asked for a 5 s checkpoint every 30 s pauses 4 times (20 s); an
    interruption loses at most an interval and a restore (30 + 5 + 5 s) instead of it all."""
    path = tmp_path / "wf.yaml"
    path.write_text(
        textwrap.dedent(
            """
            name: ckpt
            tasks:
              - {id: a, command: ['true'], estimated_runtime: 100s, checkpoint_enabled: true,
                 checkpoint_interval: 30s, checkpoint_cost: 5s}
              - {id: b, command: ['true'], estimated_runtime: 100s, depends_on: [a]}
            """
        )
    )
    a, b = compile_tasks(load_workflow(path))
    assert (a.priority, b.priority) == (220.0, 100.0)
    assert (a.at_risk_s, b.at_risk_s) == (40.0, 100.0)
    assert a.checkpoint_interval_s == 30.0 and b.checkpoint_interval_s is None


@pytest.mark.parametrize(
    ("runtime", "interval", "delta", "overhead"),
    [
        (100.0, 30.0, 5.0, 20.0),  # ceil(100 / 25) pauses
        (100.0, 25.0, 5.0, 25.0),  # ceil(100 / 20)
        (100.0, None, 5.0, 0.0),
        (100.0, 30.0, 0.0, 0.0),
        (0.0, 30.0, 5.0, 0.0),
        (10.0, 5.0, 5.0, 5.0 * 1e10),  # a pause as long as the interval: never done
    ],
)
def test_checkpoint_overhead(
    runtime: float, interval: float | None, delta: float, overhead: float
) -> None:
    assert checkpoint_overhead(runtime, interval, delta) == pytest.approx(overhead)
