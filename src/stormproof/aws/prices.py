"""Instance prices: spot from ``DescribeSpotPriceHistory``, on-demand from the pricing API.

Used where a pool gives no ``price`` (a configured price always wins): ``plan``,
``simulate`` and the cost of a run price each pool's node (its largest instance type).
Prices are cached in a JSON file with the time each was read (``fetched_at``), and a
cached price younger than ``MAX_AGE_S`` is used without asking AWS again, so ``plan`` is
fast and works offline once the cache is warm. A price AWS cannot give stays unknown (0,
said once on stderr): never a guess.

Spot: the median of the current price across the region's availability zones (Batch's
price-capacity-optimized strategy takes neither the cheapest nor the dearest zone).
On-demand: Linux, shared tenancy, no pre-installed software, the region's price list.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

MAX_AGE_S = 24 * 3600.0
#: The pricing API answers in these regions only; us-east-1 has every region's prices.
PRICING_REGION = "us-east-1"


def cache_path() -> Path:
    """``$XDG_CACHE_HOME/stormproof/aws-prices.json`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stormproof" / "aws-prices.json"


@dataclass
class PriceCache:
    path: Path

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str, now: float) -> float | None:
        entry = self.read().get(key)
        if not isinstance(entry, dict) or now - float(entry.get("fetched_at", 0)) > MAX_AGE_S:
            return None
        return float(entry["usd_per_h"])

    def put(self, key: str, usd_per_h: float, now: float) -> None:
        data = self.read()
        data[key] = {
            "usd_per_h": usd_per_h,
            "fetched_at": now,
            "date": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(self.path)


def spot_price(ec2: Any, instance_type: str) -> float | None:
    """The median current spot price of ``instance_type`` over the region's zones."""
    history = ec2.describe_spot_price_history(
        InstanceTypes=[instance_type],
        ProductDescriptions=["Linux/UNIX"],
        StartTime=datetime.now(timezone.utc),
        MaxResults=100,
    )
    latest: dict[str, tuple[Any, float]] = {}
    for point in history.get("SpotPriceHistory", []):
        zone, when = point.get("AvailabilityZone", "?"), point.get("Timestamp")
        price = float(point["SpotPrice"])
        if zone not in latest or (when is not None and when > latest[zone][0]):
            latest[zone] = (when, price)
    prices = [p for _w, p in latest.values()]
    return statistics.median(prices) if prices else None


def on_demand_price(pricing: Any, region: str, instance_type: str) -> float | None:
    """The on-demand Linux price of ``instance_type`` in ``region`` (USD per hour)."""
    filters = [
        ("instanceType", instance_type),
        ("regionCode", region),
        ("operatingSystem", "Linux"),
        ("tenancy", "Shared"),
        ("preInstalledSw", "NA"),
        ("capacitystatus", "Used"),
    ]
    response = pricing.get_products(
        ServiceCode="AmazonEC2",
        Filters=[{"Type": "TERM_MATCH", "Field": f, "Value": v} for f, v in filters],
        MaxResults=10,
    )
    for item in response.get("PriceList", []):
        product = json.loads(item) if isinstance(item, str) else item
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = dimension.get("pricePerUnit", {}).get("USD")
                if usd is not None and float(usd) > 0:
                    return float(usd)
    return None


def price(
    aws: Any, cache: PriceCache, market: str, instance_type: str, now: float | None = None
) -> float | None:
    """The price of one ``instance_type`` instance per hour: cached, else asked of AWS."""
    now = time.time() if now is None else now
    key = f"{aws.region}/{market}/{instance_type}"
    cached = cache.get(key, now)
    if cached is not None:
        return cached
    if market == "spot":
        found = spot_price(aws.client("ec2"), instance_type)
    else:
        found = on_demand_price(aws.pricing_client(), str(aws.region), instance_type)
    if found is not None:
        cache.put(key, found, now)
    return found
