"""``capacity: aws``: the core's instances as EC2 instances, launched through EC2 Fleet.

A ``Fleet`` (``capacity/base.py``) for modelled pools on EC2: the core decides
``LaunchInstance(instance_id, pool)`` and ``TerminateInstance``; this carries them out.

* **launch**: one ``CreateFleet`` of type ``instant`` per instance, for one unit of
  capacity over the pool's instance types (with their weights) and subnets (one per
  availability zone), spot or on-demand by the pool's market, ``price-capacity-optimized``
  for spot. Its ``ClientToken`` is derived from the core's instance id, so asking again
  after a crash (the driver re-sends every launch the log never saw answered) answers with
  the same instance, not a second one. The instance is tagged with the project, the run
  and the core's id, so ``adopt`` finds it after a restart and teardown finds it always.
* **health**: ``DescribeInstanceStatus`` for the run's instances at most every
  ``health_every_s``: an instance that is stopped or terminated without the core asking is
  ``InstanceLost``; failed status checks are ``InstanceLost`` too (the work there is gone
  or going). Spot interruption warnings come from ``aws.interruptions``.
* **teardown**: ``close(final=True)`` terminates every instance the run launched.
* **warnings**: EventBridge's (``aws.interruptions``, read from SQS) name EC2 instance ids;
  the sources see the run's instances by those ids, and their notices are given back to the
  core under its own ids.
* **resume**: ``open_fleet`` adopts the run's instances by their tags; one the core thinks
  is up and EC2 no longer has (terminated while nobody watched) is ``InstanceLost``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stormproof.aws import names
from stormproof.aws.clients import explain
from stormproof.aws.settings import AwsOptions
from stormproof.capacity.base import FleetView, InstanceView, InterruptionSource
from stormproof.core.events import (
    Event,
    InstanceLaunchFailed,
    InstanceLost,
    InstanceUp,
    InterruptionNotice,
)

#: Tag naming the core's id of an instance.
INSTANCE_TAG_KEY = "stormproof:instance"
_GONE_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})


@dataclass
class Ec2Fleet:
    ec2: Any
    options: AwsOptions
    run: str
    #: The launch template of each pool (the AMI, the instance profile, user data).
    launch_templates: Mapping[str, str]
    sources: Sequence[InterruptionSource] = ()
    health_every_s: float = 15.0
    #: The core's instance id -> the EC2 instance id, for those that are up.
    ec2_ids: dict[str, str] = field(default_factory=dict)
    _launches: dict[str, str] = field(default_factory=dict)
    _terminated: set[str] = field(default_factory=set)
    _last_health: float = -1e18
    #: After ``adopt``: the first poll reports the core's live instances EC2 no longer has.
    _check_adopted: bool = False

    # ------------------------------------------------------------------ the seam
    def launch(self, instance_id: str, pool: str) -> None:
        self._launches[instance_id] = pool

    def terminate(self, instance_id: str) -> None:
        ec2_id = self.ec2_ids.get(instance_id)
        self._launches.pop(instance_id, None)
        if ec2_id is None:
            return
        self._terminated.add(instance_id)
        self.ec2.terminate_instances(InstanceIds=[ec2_id])

    def poll(self, now: float, fleet: FleetView) -> list[Event]:
        out: list[Event] = []
        for instance_id, pool in list(self._launches.items()):
            out.append(self._launch_one(now, instance_id, pool))
        self._launches.clear()
        if self._check_adopted:
            self._check_adopted = False
            out += self._vanished(now, fleet)
        if now - self._last_health >= self.health_every_s:
            self._last_health = now
            out += self._health(now)
        if self.sources:
            view = _Ec2View(fleet, self.ec2_ids)
            core_of = {e: c for c, e in self.ec2_ids.items()}
            for source in self.sources:
                out += [_as_core(e, core_of) for e in source.poll(now, view)]
        return out

    def adopt(self) -> dict[str, str]:
        """After a restart: the run's instances by the core's id, found by their tags."""
        filters = [
            {"Name": f"tag:{names.RUN_TAG_KEY}", "Values": [self.run]},
            {"Name": f"tag:{names.TAG_KEY}", "Values": [self.options.project]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
        found = self.ec2.describe_instances(Filters=filters)
        for reservation in found.get("Reservations", []):
            for inst in reservation.get("Instances", []):
                tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                if INSTANCE_TAG_KEY in tags:
                    self.ec2_ids[tags[INSTANCE_TAG_KEY]] = inst["InstanceId"]
        self._check_adopted = True
        return dict(self.ec2_ids)

    def close(self, final: bool) -> None:
        """At the run's end: terminate every instance it launched (the recipe's cleanup)."""
        if not final:
            return  # a stopped driver leaves them for resume
        ids = sorted(set(self.ec2_ids.values()))  # lost ones too: an impaired one still runs
        for start in range(0, len(ids), 1000):
            try:
                self.ec2.terminate_instances(InstanceIds=ids[start : start + 1000])
            except Exception as exc:  # said, not raised: the run's own end is already logged
                error = explain(exc, "TerminateInstances", ", ".join(ids[start : start + 1000]))
                print(f"stormproof: {error}; `stormproof aws teardown` removes them", flush=True)
        self._terminated.update(self.ec2_ids)

    # ------------------------------------------------------------------ launching
    def fleet_request(self, instance_id: str, pool: str) -> dict[str, Any]:
        """The ``CreateFleet`` request for one instance of ``pool`` (pure)."""
        side = self.options.pools.get(pool, {})
        spot = side.get("market") == "spot"
        types: dict[str, float] = dict(side.get("instance_types") or {})
        subnets: list[str | None] = [*self.options.pool_subnets(pool)] or [None]
        overrides = [
            {
                k: v
                for k, v in {"InstanceType": t, "WeightedCapacity": w, "SubnetId": s}.items()
                if v is not None
            }
            for t, w in types.items()
            for s in subnets
        ]
        tags = [
            {"Key": names.TAG_KEY, "Value": self.options.project},
            {"Key": names.RUN_TAG_KEY, "Value": self.run},
            {"Key": INSTANCE_TAG_KEY, "Value": instance_id},
        ]
        request: dict[str, Any] = {
            "Type": "instant",
            "ClientToken": names.fleet_token(f"{self.run}/{instance_id}"),
            "LaunchTemplateConfigs": [
                {
                    "LaunchTemplateSpecification": {
                        "LaunchTemplateName": self.launch_templates[pool],
                        "Version": "$Default",
                    },
                    "Overrides": overrides,
                }
            ],
            "TargetCapacitySpecification": {
                "TotalTargetCapacity": 1,
                "DefaultTargetCapacityType": "spot" if spot else "on-demand",
            },
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "fleet", "Tags": tags},
            ],
        }
        if spot:
            request["SpotOptions"] = {"AllocationStrategy": "price-capacity-optimized"}
        else:
            request["OnDemandOptions"] = {"AllocationStrategy": "lowest-price"}
        return request

    def _launch_one(self, now: float, instance_id: str, pool: str) -> Event:
        if instance_id in self.ec2_ids:
            return InstanceUp(now, instance_id)  # asked again after a restart: the same one
        try:
            response = self.ec2.create_fleet(**self.fleet_request(instance_id, pool))
        except Exception as exc:
            error = explain(exc, "CreateFleet", f"{instance_id} in pool {pool}")
            return InstanceLaunchFailed(now, instance_id, str(error))
        launched = [i for group in response.get("Instances", []) for i in group["InstanceIds"]]
        if not launched:
            errors = response.get("Errors", [])
            why = "; ".join(f"{e.get('ErrorCode')}: {e.get('ErrorMessage')}" for e in errors)
            return InstanceLaunchFailed(now, instance_id, why or "EC2 launched nothing")
        self.ec2_ids[instance_id] = launched[0]
        return InstanceUp(now, instance_id)

    # ------------------------------------------------------------------ health
    def _vanished(self, now: float, fleet: FleetView) -> list[Event]:
        """The core's up instances that ``adopt`` did not find: gone while nobody watched."""
        out: list[Event] = []
        for pool in self.options.pools:
            for inst in fleet.live(pool):
                if inst.state != "pending" and inst.id not in self.ec2_ids:
                    why = "not found running when the run resumed (terminated meanwhile)"
                    out.append(InstanceLost(now, inst.id, why))
        return out

    def _health(self, now: float) -> list[Event]:
        watched = {e: c for c, e in self.ec2_ids.items() if c not in self._terminated}
        if not watched:
            return []
        out: list[Event] = []
        ids = sorted(watched)
        for start in range(0, len(ids), 100):
            found = self.ec2.describe_instance_status(
                InstanceIds=ids[start : start + 100], IncludeAllInstances=True
            )
            for status in found.get("InstanceStatuses", []):
                core = watched[status["InstanceId"]]
                state = status.get("InstanceState", {}).get("Name", "")
                checks = (
                    status.get("InstanceStatus", {}).get("Status"),
                    status.get("SystemStatus", {}).get("Status"),
                )
                if state in _GONE_STATES:
                    why = f"EC2 instance {status['InstanceId']} is {state}"
                elif "impaired" in checks:
                    why = f"EC2 instance {status['InstanceId']} failed its status checks"
                else:
                    continue
                self._terminated.add(core)
                out.append(InstanceLost(now, core, why))
        return out


class _Ec2View:
    """The core's live instances as EC2 knows them (by EC2 instance id), for the sources."""

    def __init__(self, core: FleetView, ec2_ids: Mapping[str, str]) -> None:
        self.core = core
        self.ec2_ids = ec2_ids

    def live(self, pool: str) -> list[InstanceView]:
        return [
            dataclasses.replace(i, id=self.ec2_ids[i.id])
            for i in self.core.live(pool)
            if i.id in self.ec2_ids
        ]


def _as_core(event: Event, core_of: Mapping[str, str]) -> Event:
    """A source's event about an EC2 instance, about the core's instance instead."""
    if isinstance(event, (InterruptionNotice, InstanceLost)) and event.instance_id in core_of:
        return dataclasses.replace(event, instance_id=core_of[event.instance_id])
    return event


def open_fleet(run: str, options: Mapping[str, Any], executor: object) -> Ec2Fleet:
    """The fleet of a ``capacity: aws`` run, with the run's instances adopted by their tags.

    EventBridge's warnings come from the project's SQS queue when ``aws.interruption_queue``
    is on; an executor with ``use_instances`` (``executor: ssm``) is given the core's ids
    mapped to EC2's, to send each attempt to the instance the core placed it on.
    """
    from stormproof.aws.clients import Aws
    from stormproof.aws.interruptions import SqsInterruptions

    opts = AwsOptions.from_dict(options)
    aws = Aws(opts.region)
    sources: list[InterruptionSource] = []
    if opts.interruption_queue:
        queue = names.interruption_queue(opts.project)
        every = min(opts.poll_interval_s, 5.0)
        sources.append(SqsInterruptions(aws.client("sqs"), queue, tuple(opts.pools), every))
    templates = {pool: opts.template() for pool in opts.pools}
    fleet = Ec2Fleet(
        aws.client("ec2"), opts, run, templates, sources, health_every_s=opts.poll_interval_s
    )
    try:
        fleet.adopt()
    except Exception as exc:
        raise explain(exc, "DescribeInstances", f"the instances of run {run}") from None
    use = getattr(executor, "use_instances", None)
    if use is not None:
        use(fleet.ec2_ids)
    return fleet
