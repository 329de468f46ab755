"""From a validated workflow file and configuration to what the core schedules.

This is where the recipe's fields take the recipe's meaning:

* ``retry_attempts`` (or ``global_config.max_retry_attempts``) and
  ``backoff_multiplier`` become one retrier on ``States.ALL`` whose first
  interval is ``global_config.retry_interval`` (30 s, the recipe's
  ``ExecuteTask`` interval); an explicit ``retry`` list replaces it.
* Interruptions and lost nodes never reach the retriers: they draw on
  ``max_interruptions`` (the core's provider-error budget).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from stormproof.config import PolicyConfig
from stormproof.core.defs import (
    BreakerRule,
    OnFailure,
    PoolDef,
    Resources,
    RetryRule,
    RunOptions,
    SpotPolicy,
    SpotStrategy,
    TaskDef,
)
from stormproof.plan.graph import Dag
from stormproof.spec.model import ASSUMED_RUNTIME_S, GlobalConfig, TaskSpec, WorkflowSpec


def retry_rules(task: TaskSpec, cfg: GlobalConfig) -> tuple[RetryRule, ...]:
    if task.retry is not None:
        return tuple(
            RetryRule(
                error_equals=tuple(r.error_equals),
                interval_s=r.interval_seconds,
                max_attempts=r.max_attempts,
                backoff_rate=r.backoff_rate,
                max_delay_s=r.max_delay_seconds,
                jitter=r.jitter == "full",
            )
            for r in task.retry
        )
    attempts = cfg.max_retry_attempts if task.retry_attempts is None else task.retry_attempts
    if attempts == 0:
        return ()
    return (RetryRule(("States.ALL",), cfg.retry_interval, attempts, task.backoff_multiplier),)


_ON_FAILURE = {o.value: o for o in OnFailure}  # an Enum call per task adds up at 100,000


def compile_tasks(
    spec: WorkflowSpec, dag: Dag | None = None, default_runtime_s: float | None = None
) -> list[TaskDef]:
    """The core's view of every task, in file order, with upward rank as priority.

    ``default_runtime_s`` is what a task without ``estimated_runtime`` is taken to last (a
    run's own, ``RunContext.default_runtime_s``; else ``DEFAULT_RUNTIME_S``).
    """
    dag = dag if dag is not None else Dag.from_spec(spec)
    cfg = spec.global_config
    default = DEFAULT_RUNTIME_S if default_runtime_s is None else default_runtime_s
    rank = _rank_with_checkpoints(dag, spec, default)
    out = []
    for i, t in enumerate(spec.tasks):
        out.append(
            TaskDef(
                id=t.id,
                index=i,
                parents=dag.parents[i],
                children=dag.children[i],
                resources=Resources(t.vcpus, t.memory, t.gpus),
                nodes=t.nodes,
                retry=retry_rules(t, cfg),
                timeout_s=t.timeout,
                kill_grace_s=cfg.kill_grace if t.kill_grace is None else t.kill_grace,
                max_interruptions=(
                    cfg.max_interruptions if t.max_interruptions is None else t.max_interruptions
                ),
                on_failure=_ON_FAILURE[(t.on_failure or cfg.on_failure).value],
                spot_enabled=t.spot_enabled,
                checkpoint_enabled=t.checkpoint_enabled,
                checkpoint_interval_s=(
                    cfg.checkpoint_interval
                    if t.checkpoint_interval is None
                    else t.checkpoint_interval
                )
                or None,
                keep_checkpoints=(
                    cfg.keep_checkpoints if t.keep_checkpoints is None else t.keep_checkpoints
                ),
                keep_checkpoints_on_success=(
                    cfg.keep_checkpoints_on_success
                    if t.keep_checkpoints_on_success is None
                    else t.keep_checkpoints_on_success
                ),
                priority=rank[i],
                memory_escalation=(
                    cfg.memory_escalation if t.memory_escalation is None else t.memory_escalation
                ),
                estimated_s=_runtime(t, default),
                kind=t.type,
                at_risk_s=_at_risk(t, cfg, default),
            )
        )
    return out


#: What the core and the simulator assume a task without ``estimated_runtime`` takes: the one
#: default ``plan`` uses too (a deadline policy that took it as 0 s would leave it no time).
#: Runs started before it was 30 minutes recorded none and keep 60 s (``RunContext``).
DEFAULT_RUNTIME_S = ASSUMED_RUNTIME_S


def _runtime(t: TaskSpec, default: float = DEFAULT_RUNTIME_S) -> float:
    return default if t.estimated_runtime is None else t.estimated_runtime


def _interval(t: TaskSpec, cfg: GlobalConfig) -> float | None:
    interval = cfg.checkpoint_interval if t.checkpoint_interval is None else t.checkpoint_interval
    return interval if t.checkpoint_enabled and interval else None


def checkpoint_overhead(runtime: float, interval: float | None, delta: float) -> float:
    """Wall time a task spends writing checkpoints when asked every ``interval`` of wall time.

    Each request pauses the work ``delta``, so at most ``runtime / (interval - delta)`` of them
    fall before the work is done.
    """
    if not interval or delta <= 0 or runtime <= 0:
        return 0.0
    return delta * math.ceil(runtime / max(interval - delta, 1e-9))


def _rank_with_checkpoints(dag: Dag, spec: WorkflowSpec, default: float) -> list[float]:
    """Upward rank with each task's checkpoint pauses added: what on-demand really takes.

    Deadline policies derive a task's latest start from it, so it must not
    under-estimate; the order of the ready queue barely changes.
    """
    cfg = spec.global_config
    runtimes = [_runtime(t, default) for t in spec.tasks]
    own = [
        r + checkpoint_overhead(r, _interval(t, cfg), t.checkpoint_cost or 0.0)
        for r, t in zip(runtimes, spec.tasks, strict=True)
    ]
    rank = [0.0] * len(own)
    for i in reversed(dag.order):
        kids = dag.children[i]
        rank[i] = own[i] + (max([rank[c] for c in kids]) if kids else 0.0)
    return rank


def _at_risk(t: TaskSpec, cfg: GlobalConfig, default: float) -> float:
    """What one interruption can cost the task at worst: lost work plus the restart."""
    runtime = _runtime(t, default)
    interval = _interval(t, cfg)
    delta = t.checkpoint_cost or 0.0
    if interval:
        return min(runtime, interval + delta) + delta  # + delta: restoring costs about a save
    return runtime


def run_options(
    spec: WorkflowSpec,
    pools: Sequence[PoolDef],
    seed: int,
    max_parallel: int | None,
    policy: Mapping[str, Any] | None = None,
) -> RunOptions:
    """The core's run-wide inputs; ``policy`` is the dict a ``RunContext`` stores."""
    limit = max_parallel if max_parallel is not None else spec.global_config.max_parallel
    policy = policy or {}
    breaker = policy.get("breaker") or {}
    return RunOptions(
        seed=seed,
        max_parallel=limit,
        pools=tuple(pools),
        fallback_after_interruptions=policy.get("fallback_after_interruptions"),
        last_attempt_on_demand=bool(policy.get("last_attempt_on_demand", False)),
        spot_strategy=SpotStrategy(spec.global_config.spot_strategy.value),
        breaker=BreakerRule(**breaker) if breaker else BreakerRule(),
        launch_retry_s=float(policy.get("launch_retry_s", 60.0)),
        spot_policy=SpotPolicy(policy.get("name", "spot_first")),
        deadline_s=policy.get("deadline_s"),
        successors=int(policy.get("successors") or 0),
    )


def policy_dict(policy: PolicyConfig, executor: str = "local") -> dict[str, Any]:
    """What a run records of ``stormproof.yaml``'s ``policy:`` (a ``config.PolicyConfig``).

    ``successors`` is recorded resolved for the run's executor, so a resume uses the same
    value whatever the defaults become; runs recorded without it have it off.
    """
    rule = policy.breaker_rule()
    return {
        "successors": policy.successors_for(executor),
        "name": policy.name,
        "deadline_s": policy.deadline,
        "fallback_after_interruptions": policy.fallback_after_interruptions,
        "last_attempt_on_demand": policy.last_attempt_on_demand,
        "launch_retry_s": policy.launch_retry,
        "breaker": {
            "threshold": rule.threshold,
            "window_s": rule.window_s,
            "cooldown_s": rule.cooldown_s,
            "max_cooldown_s": rule.max_cooldown_s,
            "min_healthy": rule.min_healthy,
            "per_task_type": rule.per_task_type,
        },
    }


_PLACEHOLDER = re.compile(r"\$\{(STORMPROOF_[A-Z_]+)\}")


def expand(text: str, values: Mapping[str, str]) -> str:
    """Replace ``${STORMPROOF_*}`` names we define; leave every other ``$`` for the shell."""
    if "${" not in text:  # most commands: no regex pass (the driver expands every launch)
        return text
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)
