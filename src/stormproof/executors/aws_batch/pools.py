"""The pools of executor aws_batch, as the core and the user see them.

* ``describe``: a pool's node is its largest instance type (``aws.instance_types``), its
  node count ``max_vcpus`` over that node's vCPUs, its price AWS's when the file gives none;
* ``multi_node_on_demand``: tasks with ``nodes > 1`` run as multi-node parallel jobs, which
  Batch runs on on-demand compute environments only, so they go to on-demand pools;
* ``queue_problems``: what is wrong with the pools' job queues and compute environments
  before a run submits anything (missing, disabled, INVALID), one line each.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from typing import Any

from stormproof.aws import instance_types
from stormproof.aws.clients import Aws
from stormproof.aws.settings import AwsOptions
from stormproof.core.defs import PoolDef, Resources
from stormproof.spec.model import WorkflowSpec


def describe(pools: tuple[PoolDef, ...], options: Mapping[str, Any]) -> tuple[PoolDef, ...]:
    """The pools with what the file left out filled in from their instance types (and AWS)."""
    opts = AwsOptions.from_dict(options)
    out = []
    for pool in pools:
        side = opts.pools.get(pool.name, {})
        types = list(side.get("instance_types") or {})
        shape, _unknown = instance_types.largest(types)
        cap = pool.capacity
        vcpus = cap.vcpus or (shape.vcpus if shape else 0.0)
        memory = cap.memory_mib or (shape.memory_mib if shape else 0)
        count = pool.count
        max_vcpus = side.get("max_vcpus")
        if not count and max_vcpus and vcpus:
            count = max(1, int(max_vcpus // vcpus))
        node_type = _largest_type(types)
        price = pool.price_usd_per_h
        if not price and opts.prices and node_type:
            price = aws_price(opts, pool.market.value, node_type)
        out.append(
            dataclasses.replace(
                pool,
                capacity=Resources(vcpus, memory, cap.gpus),
                count=count,
                price_usd_per_h=price,
                instance_type=pool.instance_type
                if pool.instance_type != "local"
                else ",".join(types) or "local",
            )
        )
    return tuple(out)


def multi_node_on_demand(spec: WorkflowSpec) -> tuple[WorkflowSpec, list[str]]:
    """``spec`` with its multi-node tasks off spot, and the plan's note saying why."""
    multi = [t.id for t in spec.tasks if t.nodes > 1 and t.spot_enabled]
    if not multi:
        return spec, []
    tasks = [
        t.model_copy(update={"spot_enabled": False}) if t.id in multi else t for t in spec.tasks
    ]
    shown = ", ".join(multi[:5]) + (f" and {len(multi) - 5} more" if len(multi) > 5 else "")
    note = (
        f"{shown}: nodes > 1 runs as an AWS Batch multi-node parallel job, which Batch runs "
        "on on-demand compute environments only: placed on on-demand pools"
    )
    return spec.model_copy(update={"tasks": tasks}), [note]


def _largest_type(types: list[str]) -> str | None:
    shapes = [(instance_types.shape(t), t) for t in types]
    known = [(s.vcpus, s.memory_mib, t) for s, t in shapes if s is not None]
    return max(known)[2] if known else (types[0] if types else None)


def aws_price(opts: AwsOptions, market: str, instance_type: str) -> float:
    """AWS's price for one node of a pool that gives none; 0 (said once) if AWS cannot tell."""
    from stormproof.aws import prices

    try:
        aws = Aws(opts.region)
        found = prices.price(aws, prices.PriceCache(prices.cache_path()), market, instance_type)
    except Exception as exc:
        why = str(exc).splitlines()[0][:160]
        print(
            f"stormproof: no AWS price for {market} {instance_type} ({why}); give the pool a "
            "price: in stormproof.yaml",
            file=sys.stderr,
        )
        return 0.0
    return found or 0.0


def queue_problems(
    pools: list[str],
    queues: list[str],
    envs: list[str],
    found_queues: list[dict[str, Any]],
    found_envs: list[dict[str, Any]],
) -> list[str]:
    by_queue = {q["jobQueueName"]: q for q in found_queues}
    by_env = {e["computeEnvironmentName"]: e for e in found_envs}
    problems = []
    for pool, queue, env in zip(pools, queues, envs, strict=True):
        q = by_queue.get(queue)
        if q is None:
            problems.append(
                f"pool {pool!r}: job queue {queue!r} does not exist; run `stormproof aws setup`"
            )
        elif q.get("state") != "ENABLED" or q.get("status") == "INVALID":
            problems.append(
                f"pool {pool!r}: job queue {queue!r} is {q.get('state')}/{q.get('status')} "
                f"({q.get('statusReason', 'no reason given')}); enable it or run "
                "`stormproof aws setup` again"
            )
        e = by_env.get(env)
        if e is None:
            problems.append(
                f"pool {pool!r}: compute environment {env!r} does not exist; run "
                "`stormproof aws setup`"
            )
        elif e.get("status") == "INVALID":
            problems.append(
                f"pool {pool!r}: compute environment {env!r} is INVALID: "
                f"{e.get('statusReason', 'no reason given')}; fix its role, subnets or instance "
                "types (aws: and pools[] in stormproof.yaml) and run `stormproof aws setup` again"
            )
    return problems
