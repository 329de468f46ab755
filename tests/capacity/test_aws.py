"""``capacity: aws``'s fleet against moto's EC2 (an emulator): the core's launches become
one-instance EC2 Fleets tagged with the core's id, a restart adopts them instead of
launching again, an instance that vanishes is ``InstanceLost``, and the run's end
terminates every instance it launched."""

from __future__ import annotations

import dataclasses
import time

import pytest

from stormproof.aws.settings import AwsOptions
from stormproof.capacity.aws import INSTANCE_TAG_KEY, Ec2Fleet
from stormproof.capacity.base import InstanceView
from stormproof.core.events import InstanceLost, InstanceUp, InterruptionNotice
from tests.aws._moto import Moto, shared_moto

POOLS = {
    "spot": {"market": "spot", "instance_types": {"c5.large": 1.0, "c5.xlarge": 2.0}},
    "od": {"market": "on_demand", "instance_types": {"c5.xlarge": 1.0}},
}


@pytest.fixture
def moto() -> Moto:
    m = shared_moto()
    m.reset()
    return m


class NoFleet:
    def live(self, pool: str) -> list[object]:
        return []


def make_fleet(moto: Moto, run: str = "r") -> Ec2Fleet:
    """A fleet over two of the default VPC's subnets (two availability zones)."""
    ec2 = moto.client("ec2")
    default = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])
    subnets = tuple(sorted(s["SubnetId"] for s in default["Subnets"])[:2])
    options = AwsOptions(project="sptest", subnets=subnets, pools=POOLS)
    return Ec2Fleet(ec2, options, run, {"spot": "sptest-spot", "od": "sptest-od"}, health_every_s=0)


def states(moto: Moto, ids: list[str]) -> list[str]:
    found = moto.client("ec2").describe_instances(InstanceIds=ids)["Reservations"]
    return [i["State"]["Name"] for r in found for i in r["Instances"]]


def test_launch_adopt_health_and_teardown(moto: Moto) -> None:
    ec2 = moto.client("ec2")
    for name in ("sptest-spot", "sptest-od"):
        ec2.create_launch_template(
            LaunchTemplateName=name, LaunchTemplateData={"ImageId": "ami-12c6146b"}
        )
    fleet = make_fleet(moto)
    fleet.launch("spot-0", "spot")
    fleet.launch("spot-1", "spot")
    fleet.launch("od-0", "od")
    events = fleet.poll(100.0, NoFleet())
    assert {(type(e), e.instance_id) for e in events} == {
        (InstanceUp, "spot-0"),
        (InstanceUp, "spot-1"),
        (InstanceUp, "od-0"),
    }
    ids = dict(fleet.ec2_ids)
    tags = ec2.describe_instances(InstanceIds=[ids["spot-0"]])["Reservations"][0]["Instances"][0]
    assert {t["Key"]: t["Value"] for t in tags["Tags"]}[INSTANCE_TAG_KEY] == "spot-0"

    restarted = make_fleet(moto)  # the orchestrator died; the log never saw spot-1's answer
    assert restarted.adopt() == ids
    restarted.launch("spot-1", "spot")
    assert restarted.poll(200.0, NoFleet()) == [InstanceUp(200.0, "spot-1")]
    assert restarted.ec2_ids == ids  # no second instance

    ec2.terminate_instances(InstanceIds=[ids["od-0"]])  # gone without the core asking
    lost = [e for e in restarted.poll(300.0, NoFleet()) if isinstance(e, InstanceLost)]
    assert [e.instance_id for e in lost] == ["od-0"]

    restarted.terminate("spot-0")  # the core's own decision: no InstanceLost for it
    assert not restarted.poll(400.0, NoFleet())
    restarted.close(final=False)  # a stopped driver: resume adopts what still runs
    assert states(moto, [ids["spot-1"]]) == ["running"]
    restarted.close(final=True)
    assert states(moto, list(ids.values())) == ["terminated"] * 3


def test_the_fleet_request_spreads_over_types_and_zones_with_the_core_id_as_token(
    moto: Moto,
) -> None:
    request = make_fleet(moto).fleet_request("spot-3", "spot")
    overrides = request["LaunchTemplateConfigs"][0]["Overrides"]
    assert len(overrides) == 4  # 2 types x 2 subnets
    assert {o["WeightedCapacity"] for o in overrides} == {1.0, 2.0}
    assert request["ClientToken"] == "stormproof-r/spot-3"
    assert request["TargetCapacitySpecification"]["DefaultTargetCapacityType"] == "spot"
    assert request["SpotOptions"]["AllocationStrategy"] == "price-capacity-optimized"
    assert (
        make_fleet(moto).fleet_request("od-0", "od")["TargetCapacitySpecification"][
            "DefaultTargetCapacityType"
        ]
        == "on-demand"
    )


def test_a_refused_launch_is_launch_failed_with_the_reason(moto: Moto) -> None:
    # no launch template: EC2 refuses
    fleet = make_fleet(moto)
    fleet.launch("spot-9", "spot")
    (event,) = fleet.poll(1.0, NoFleet())
    assert event.kind == "InstanceLaunchFailed" and "CreateFleet on spot-9 in pool spot" in (
        event.reason  # type: ignore[attr-defined]
    )


class CoreFleet:
    """The core's view: its own ids, in a state."""

    def __init__(self, live: dict[str, list[tuple[str, str]]]) -> None:
        self.by_pool = live

    def live(self, pool: str) -> list[InstanceView]:
        return [InstanceView(i, pool, state) for i, state in self.by_pool.get(pool, [])]


def test_an_eventbridge_warning_about_an_ec2_instance_is_a_notice_for_the_core_s_instance(
    moto: Moto,
) -> None:
    from stormproof.aws.interruptions import SqsInterruptions
    from tests.aws.test_interruptions import recorded

    ec2 = moto.client("ec2")
    ec2.create_launch_template(
        LaunchTemplateName="sptest-spot", LaunchTemplateData={"ImageId": "ami-12c6146b"}
    )
    sqs = moto.client("sqs")
    url = sqs.create_queue(QueueName="sptest-interruptions")["QueueUrl"]
    fleet = make_fleet(moto)
    fleet.sources = [SqsInterruptions(sqs, "sptest-interruptions", ("spot",), every_s=0)]
    fleet.launch("spot-0", "spot")
    fleet.poll(1.0, NoFleet())
    ec2_id = fleet.ec2_ids["spot-0"]
    sqs.send_message(QueueUrl=url, MessageBody=recorded("spot-warning.json", ec2_id, time.time()))
    events = fleet.poll(time.time(), CoreFleet({"spot": [("spot-0", "up")]}))
    notices = [e for e in events if isinstance(e, InterruptionNotice)]
    assert [(n.instance_id, n.source) for n in notices] == [("spot-0", "eventbridge:spot-warning")]


def test_after_a_restart_an_up_instance_ec2_no_longer_has_is_lost_once(moto: Moto) -> None:
    ec2 = moto.client("ec2")
    ec2.create_launch_template(
        LaunchTemplateName="sptest-spot", LaunchTemplateData={"ImageId": "ami-12c6146b"}
    )
    fleet = make_fleet(moto)
    fleet.launch("spot-0", "spot")
    fleet.launch("spot-1", "spot")
    fleet.poll(1.0, NoFleet())
    ec2.terminate_instances(InstanceIds=[fleet.ec2_ids["spot-1"]])  # while nobody watched
    restarted = make_fleet(moto)
    restarted.health_every_s = 1e9  # the adoption alone must tell
    assert set(restarted.adopt()) == {"spot-0"}
    core = CoreFleet({"spot": [("spot-0", "up"), ("spot-1", "up"), ("spot-2", "pending")]})
    lost = [e for e in restarted.poll(2.0, core) if isinstance(e, InstanceLost)]
    assert [e.instance_id for e in lost] == ["spot-1"]  # spot-2's launch is asked again, not lost
    assert not [e for e in restarted.poll(3.0, core) if isinstance(e, InstanceLost)]


def test_a_pool_s_own_subnets_win_over_aws_subnets(moto: Moto) -> None:
    fleet = make_fleet(moto)
    pools = {**POOLS, "od": {**POOLS["od"], "subnets": ["subnet-own"]}}
    fleet.options = dataclasses.replace(fleet.options, pools=pools)
    overrides = fleet.fleet_request("od-1", "od")["LaunchTemplateConfigs"][0]["Overrides"]
    assert [o["SubnetId"] for o in overrides] == ["subnet-own"]
