"""``aws doctor``'s vCPU quota check. moto has no EC2 quotas in Service Quotas, so a recorded
``GetServiceQuota`` answer stands in (botocore's ``Stubber``): what a real account says."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from stormproof.aws.clients import Aws
from stormproof.aws.doctor import ON_DEMAND_VCPU_QUOTA, SPOT_VCPU_QUOTA, _quotas
from stormproof.aws.settings import AwsOptions


def _answer(code: str, value: float) -> dict[str, object]:
    return {"Quota": {"ServiceCode": "ec2", "QuotaCode": code, "Value": value}}


def test_quotas_below_the_pools_max_vcpus_are_missing_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}.items():
        monkeypatch.setenv(key, value)
    aws = Aws("us-east-1")
    quotas = boto3.client("service-quotas", region_name="us-east-1")
    aws._clients["service-quotas"] = quotas
    opts = AwsOptions(
        pools={
            "spot": {"market": "spot", "max_vcpus": 16},
            "more": {"market": "spot", "max_vcpus": 16},
            "ondemand": {"market": "on_demand", "max_vcpus": 16},
        }
    )
    with Stubber(quotas) as stub:
        for code, value in ((SPOT_VCPU_QUOTA, 24.0), (ON_DEMAND_VCPU_QUOTA, 640.0)):
            stub.add_response(
                "get_service_quota", _answer(code, value), {"ServiceCode": "ec2", "QuotaCode": code}
            )
        spot, on_demand = _quotas(aws, opts)
    assert spot.ok is False and "32 vCPUs configured, quota 24" in spot.detail
    assert "lower the pools' max_vcpus or ask for more" in spot.detail
    assert SPOT_VCPU_QUOTA in spot.detail
    assert on_demand.ok is True and on_demand.detail == "16 vCPUs configured, quota 640"


def test_a_quota_aws_will_not_tell_is_unknown_not_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}.items():
        monkeypatch.setenv(key, value)
    aws = Aws("us-east-1")
    quotas = boto3.client("service-quotas", region_name="us-east-1")
    aws._clients["service-quotas"] = quotas
    opts = AwsOptions(pools={"spot": {"market": "spot", "max_vcpus": 16}})
    with Stubber(quotas) as stub:
        stub.add_client_error("get_service_quota", "NoSuchResourceException", "no such quota")
        (spot,) = _quotas(aws, opts)
    assert spot.ok is None and "could not be checked" in spot.detail
