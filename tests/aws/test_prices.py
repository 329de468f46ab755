"""Prices: spot from moto's ``DescribeSpotPriceHistory`` (an emulator's fixed prices), on-demand
from the pricing API (which moto lacks: botocore's ``Stubber`` stands in with a recorded
answer), a cache with the date, and a configured price that always wins."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from stormproof.aws import prices
from stormproof.aws.clients import Aws
from stormproof.core.defs import Market, PoolDef, Resources
from stormproof.executors.aws_batch import AwsBatchExecutor
from tests.aws._moto import Moto
from tests.aws.fixtures import config_text, moto_cli

#: One product of the EC2 price list, as GetProducts returns it (trimmed to what is read).
RECORDED_PRODUCT = {
    "product": {"attributes": {"instanceType": "c5.xlarge", "regionCode": "us-east-1"}},
    "terms": {
        "OnDemand": {
            "JRTCKXETXF.abc": {
                "priceDimensions": {
                    "JRTCKXETXF.abc.6YS6EN2CT7": {
                        "unit": "Hrs",
                        "pricePerUnit": {"USD": "0.1700000000"},
                    }
                }
            }
        }
    },
}


@pytest.fixture
def aws(moto: Moto, monkeypatch: pytest.MonkeyPatch) -> Aws:
    for key, value in moto.env().items():
        monkeypatch.setenv(key, value)
    return Aws("us-east-1")


def test_spot_prices_are_the_median_over_zones_and_cached_with_their_date(
    aws: Aws, tmp_path: Path
) -> None:
    cache = prices.PriceCache(tmp_path / "prices.json")
    found = prices.price(aws, cache, "spot", "c5.large", now=1000.0)
    assert found == pytest.approx(0.00001)  # moto's fixed price in every zone
    entry = json.loads((tmp_path / "prices.json").read_text())["us-east-1/spot/c5.large"]
    assert entry["fetched_at"] == 1000.0 and entry["date"].startswith("1970-01-01T00:16:40")
    cache.put("us-east-1/spot/c5.large", 0.5, 1000.0)
    assert prices.price(aws, cache, "spot", "c5.large", now=2000.0) == 0.5  # from the cache
    stale = 1000.0 + prices.MAX_AGE_S + 1
    assert prices.price(aws, cache, "spot", "c5.large", now=stale) == pytest.approx(0.00001)


def test_on_demand_prices_come_from_the_pricing_api() -> None:
    pricing = boto3.client(
        "pricing", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    with Stubber(pricing) as stub:
        stub.add_response(
            "get_products",
            {"PriceList": [json.dumps(RECORDED_PRODUCT)], "FormatVersion": "aws_v1"},
            {
                "ServiceCode": "AmazonEC2",
                "Filters": [
                    {"Type": "TERM_MATCH", "Field": f, "Value": v}
                    for f, v in (
                        ("instanceType", "c5.xlarge"),
                        ("regionCode", "us-east-1"),
                        ("operatingSystem", "Linux"),
                        ("tenancy", "Shared"),
                        ("preInstalledSw", "NA"),
                        ("capacitystatus", "Used"),
                    )
                ],
                "MaxResults": 10,
            },
        )
        assert prices.on_demand_price(pricing, "us-east-1", "c5.xlarge") == 0.17


def test_a_configured_price_wins_and_a_missing_one_is_asked_of_aws(
    aws: Aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    options = {
        "pools": {"spot": {"market": "spot", "instance_types": {"c5.large": 1.0}}},
        "region": "us-east-1",
        "prices": True,
    }
    priced = PoolDef("spot", Market.SPOT, Resources(0, 0), 1, 0.034, delegated=True)
    unpriced = PoolDef("spot", Market.SPOT, Resources(0, 0), 1, 0.0, delegated=True)
    (kept,) = AwsBatchExecutor.describe_pools((priced,), options)
    (asked,) = AwsBatchExecutor.describe_pools((unpriced,), options)
    assert kept.price_usd_per_h == 0.034
    assert asked.price_usd_per_h == pytest.approx(0.00001)
    assert prices.cache_path() == tmp_path / "stormproof" / "aws-prices.json"
    assert prices.cache_path().exists()


@pytest.mark.parametrize("asked", [True, False])
def test_plan_and_simulate_cost_a_spot_pool_at_the_price_aws_gives(
    moto: Moto, tmp_path: Path, asked: bool
) -> None:
    config = config_text(checkpoints=False).replace(
        "  prices: false\n", f"  prices: {str(asked).lower()}\n"
    )
    config = config.replace(  # a configured price wins
        "{name: ondemand, market: on_demand,", "{name: ondemand, market: on_demand, price: 0.17,"
    )
    (tmp_path / "stormproof.yaml").write_text(config)
    (tmp_path / "wf.yaml").write_text(
        "name: w\ntasks:\n  - {id: a, command: ['true'], vcpus: 2, memory: 3000,"
        " estimated_runtime: 3600}\n"
    )
    plan = moto_cli(tmp_path, moto, "plan", "wf.yaml", "--json")
    assert plan.returncode == 0, plan.stderr
    report = json.loads(plan.stdout)
    assert report["tasks"]["a"]["pool"] == "spot"
    spot_cost = report["tasks"]["a"]["cost_usd"]
    simulated = moto_cli(
        tmp_path, moto, "simulate", "wf.yaml", "--runs", "5", "--workers", "1", "--json"
    )
    assert simulated.returncode == 0, simulated.stderr
    if asked:  # moto's fixed spot price, for the pool's largest type, cached with its date
        assert 0 < spot_cost <= 0.00001
        assert "us-east-1/spot/c5.xlarge" in json.loads(
            (tmp_path / "cache" / "stormproof" / "aws-prices.json").read_text()
        )
    else:  # prices: false, no price: configured: the pool costs nothing
        assert spot_cost == 0
    saved = json.loads(simulated.stdout)["saved_fraction"]  # against the configured 0.17/h
    assert (saved < 1.0) is asked, saved


def test_plan_and_simulate_with_capacity_aws_price_an_instance_at_its_smallest_type(
    moto: Moto, tmp_path: Path
) -> None:
    from tests.aws.fixtures import ec2_config_text

    pools = (
        "  - {name: spot, market: spot, instance_types: [c5.xlarge, c5.large], count: 2}\n"
        "  - {name: ondemand, market: on_demand, instance_types: [c5.large], price: 0.085}\n"
    )
    config = ec2_config_text(moto, pools).replace("  prices: false\n", "  prices: true\n")
    (tmp_path / "stormproof.yaml").write_text(config)
    (tmp_path / "wf.yaml").write_text(
        "name: w\ntasks:\n  - {id: a, command: ['true'], vcpus: 2, memory: 3000,"
        " estimated_runtime: 3600}\n"
    )
    plan = moto_cli(tmp_path, moto, "plan", "wf.yaml", "--json")
    assert plan.returncode == 0, plan.stderr
    report = json.loads(plan.stdout)
    assert report["tasks"]["a"]["pool"] == "spot"
    assert 0 < report["tasks"]["a"]["cost_usd"] <= 0.00001  # moto's spot price for c5.large
    cached = json.loads((tmp_path / "cache" / "stormproof" / "aws-prices.json").read_text())
    assert "us-east-1/spot/c5.large" in cached and "us-east-1/spot/c5.xlarge" not in cached
    simulated = moto_cli(
        tmp_path, moto, "simulate", "wf.yaml", "--runs", "5", "--workers", "1", "--json"
    )
    assert simulated.returncode == 0, simulated.stderr
    assert json.loads(simulated.stdout)["saved_fraction"] < 1.0  # against the configured 0.085/h
    (tmp_path / "wf.yaml").write_text(
        "name: w\ntasks:\n  - {id: a, command: ['true'], vcpus: 4, estimated_runtime: 60}\n"
    )
    too_big = moto_cli(tmp_path, moto, "plan", "wf.yaml")
    assert too_big.returncode == 2 and "vcpus" in too_big.stdout + too_big.stderr
