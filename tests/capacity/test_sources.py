"""Interruption sources of the local fleet, driven on a fake clock and a fake fleet view."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from stormproof.capacity.base import InstanceView
from stormproof.capacity.local import LocalFleet, PoolSource, build_sources
from stormproof.capacity.sources import RateSource, TraceSource
from stormproof.core.events import InstanceLaunchFailed, InstanceUp, InterruptionNotice
from stormproof.traces import Trace


@dataclass
class FakeFleet:
    instances: dict[str, list[InstanceView]] = field(default_factory=dict)

    def live(self, pool: str) -> Sequence[InstanceView]:
        return self.instances.get(pool, [])


def up(pool: str, *ids: str) -> list[InstanceView]:
    return [InstanceView(i, pool, "up") for i in ids]


def notices(
    source: RateSource | TraceSource, fleet: FakeFleet, times: list[float]
) -> list[tuple[float, str]]:
    out = []
    for t in times:
        for e in source.poll(t, fleet):
            assert isinstance(e, InterruptionNotice)
            out.append((t, e.instance_id))
    return out


def test_rate_source_is_seeded_per_instance_and_notices_each_instance_once() -> None:
    fleet = FakeFleet({"spot": up("spot", "spot-0", "spot-1")})
    times = [i * 0.5 for i in range(2000)]
    a = notices(RateSource("spot", 3600.0, 30, 0.0, time_scale=1.0, seed=7), fleet, times)
    b = notices(RateSource("spot", 3600.0, 30, 0.0, time_scale=1.0, seed=7), fleet, times)
    c = notices(RateSource("spot", 3600.0, 30, 0.0, time_scale=1.0, seed=8), fleet, times)
    assert a == b, "same seed, same interruptions"
    assert a != c
    assert sorted(i for _, i in a) == ["spot-0", "spot-1"]


def test_rate_source_mean_time_matches_the_rate_and_the_time_scale() -> None:
    # 1 interruption per instance-hour of pool time, replayed 3600x: mean 1 s of real time
    ids = [f"spot-{i}" for i in range(400)]
    fleet = FakeFleet({"spot": up("spot", *ids)})
    source = RateSource("spot", 1.0, 30, 0.0, time_scale=3600.0, seed=1)
    source.poll(0.0, fleet)  # schedules every instance at t=0
    mean = sum(source._due.values()) / len(ids)
    assert 0.85 < mean < 1.15


def test_trace_source_reclaims_the_newest_when_capacity_drops_and_refuses_launches() -> None:
    trace = Trace(10.0, (2, 2, 1, 0, 2), "t")
    source = TraceSource("spot", trace, 5.0, origin=100.0, time_scale=1.0)
    fleet = FakeFleet({"spot": up("spot", "spot-0", "spot-1")})
    assert source.poll(105, fleet) == []
    (e,) = source.poll(121, fleet)
    assert isinstance(e, InterruptionNotice) and e.instance_id == "spot-1" and e.notice_s == 5
    assert source.poll(122, fleet) == [], "one notice per instance"
    fleet.instances["spot"] = up("spot", "spot-0")
    assert source.can_launch(125, "spot", fleet) is not None
    assert source.can_launch(141, "spot", FakeFleet()) is None, "the trace is back to 2"


def test_trace_source_grants_no_more_launches_at_once_than_the_trace_allows() -> None:
    source = TraceSource("spot", Trace(10.0, (2,), "t"), 5.0, origin=0.0)
    fleet = LocalFleet([source])
    for i in range(3):
        fleet.launch(f"spot-{i}", "spot")
    events = fleet.poll(1.0, FakeFleet())
    assert [type(e) for e in events] == [InstanceUp, InstanceUp, InstanceLaunchFailed]


def test_time_scale_and_offset_pick_the_point_of_the_trace() -> None:
    trace = Trace(600.0, (1, 1, 0, 1), "t")
    source = TraceSource("spot", trace, 120, origin=0.0, time_scale=600.0, offset_s=600.0)
    assert source.available(0.5) == 1 and source.available(1.0) == 0 and source.available(2.0) == 1


def test_build_sources_reads_what_a_run_recorded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "t.json"
    path.write_text('{"metadata": {"gap_seconds": 60}, "data": [1, 0]}')
    specs = [
        PoolSource("a", 30.0, 0.5),
        PoolSource("b", 120.0, None, str(path), 10.0, 60.0),
        PoolSource.from_dict({"pool": "c", "unknown_future_key": 1}),
    ]
    sources = build_sources(specs, origin=0.0, seed=3)
    assert [type(s).__name__ for s in sources] == ["RateSource", "TraceSource"]
    assert PoolSource.from_dict(specs[1].to_dict()) == specs[1]


def test_the_local_fleet_answers_every_launch_at_the_next_poll_and_a_repeated_ask_once() -> None:
    fleet = LocalFleet()
    fleet.launch("spot-0", "spot")
    fleet.launch("spot-1", "spot")
    fleet.launch("spot-0", "spot")  # a resumed driver asking again for an unanswered launch
    events = fleet.poll(5.0, FakeFleet())
    assert [(type(e), e.at) for e in events] == [(InstanceUp, 5.0), (InstanceUp, 5.0)]
    assert [e.instance_id for e in events if isinstance(e, InstanceUp)] == ["spot-0", "spot-1"]
    assert fleet.poll(6.0, FakeFleet()) == []
