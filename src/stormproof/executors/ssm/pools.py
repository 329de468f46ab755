"""The pools of ``capacity: aws`` as the core models them: one instance's shape and price.

An EC2 Fleet may launch any of a pool's instance types, so the core places on what every one
of them has: the smallest type's vCPUs and memory (``aws.instance_types.shape``), unless the
file gives ``vcpus``/``memory``. Its price is AWS's for that type when the file gives none
(spot price history, the pricing API; ``aws.prices``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from stormproof.aws import instance_types
from stormproof.aws.settings import AwsOptions
from stormproof.core.defs import PoolDef, Resources
from stormproof.executors.aws_batch.pools import aws_price


def smallest_type(types: list[str]) -> str | None:
    """The type with the fewest vCPUs (then memory) among those known here, else the first."""
    known = [(s.vcpus, s.memory_mib, t) for t in types if (s := instance_types.shape(t))]
    return min(known)[2] if known else (types[0] if types else None)


def describe(pools: tuple[PoolDef, ...], options: Mapping[str, Any]) -> tuple[PoolDef, ...]:
    opts = AwsOptions.from_dict(options)
    out = []
    for pool in pools:
        types = list(opts.pools.get(pool.name, {}).get("instance_types") or {})
        smallest = smallest_type(types)
        shape = instance_types.shape(smallest) if smallest else None
        cap = pool.capacity
        vcpus = cap.vcpus or (shape.vcpus if shape else 0.0)
        memory = cap.memory_mib or (shape.memory_mib if shape else 0)
        price = pool.price_usd_per_h
        if not price and opts.prices and smallest:
            price = aws_price(opts, pool.market.value, smallest)
        shown = pool.instance_type if pool.instance_type != "local" else ",".join(types)
        out.append(
            dataclasses.replace(
                pool,
                capacity=Resources(vcpus, memory, cap.gpus),
                price_usd_per_h=price,
                instance_type=shown or "local",
            )
        )
    return tuple(out)
