"""EventBridge's interruption warnings, read from SQS (moto's, an emulator), become the
``InterruptionNotice`` that ``stormproof interrupt`` makes. The events are AWS's documented
examples (``events/``), re-addressed to the instance and time of each test."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from stormproof.aws.interruptions import SPOT_NOTICE_S, SqsInterruptions, parse
from stormproof.capacity.base import InstanceView
from stormproof.core.events import InterruptionNotice
from tests.aws._moto import Moto

EVENTS = Path(__file__).parent / "events"


def recorded(name: str, instance_id: str, at: float) -> str:
    """A recorded event, for ``instance_id``, sent at ``at``."""
    event = json.loads((EVENTS / name).read_text())
    event["detail"]["instance-id"] = instance_id
    event["resources"] = [f"arn:aws:ec2:us-east-1a:instance/{instance_id}"]
    event["time"] = datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps(event)


class Fleet:
    def __init__(self, ids: list[str]) -> None:
        self.ids = ids

    def live(self, pool: str) -> list[InstanceView]:
        return [InstanceView(i, pool, "up") for i in self.ids] if pool == "spot" else []


def test_the_recorded_events_parse_as_their_kind() -> None:
    spot = parse(recorded("spot-warning.json", "i-0abc", 1000.0))
    rebalance = parse(recorded("rebalance.json", "i-0def", 1000.0))
    assert (spot.instance_id, spot.kind, spot.at) == ("i-0abc", "spot", 1000.0)  # type: ignore[union-attr]
    assert (rebalance.instance_id, rebalance.kind) == ("i-0def", "rebalance")  # type: ignore[union-attr]
    assert parse("not json") is None and parse('{"source": "aws.s3"}') is None


def test_warnings_for_this_run_become_notices_and_others_stay_in_the_queue(moto: Moto) -> None:
    sqs = moto.client("sqs")
    url = sqs.create_queue(QueueName="p-interruptions")["QueueUrl"]
    now = time.time()
    sent_at = now - 30  # the warning was sent 30 s ago: 90 s of the notice are left
    sqs.send_message(QueueUrl=url, MessageBody=recorded("spot-warning.json", "i-ours1", sent_at))
    sqs.send_message(QueueUrl=url, MessageBody=recorded("rebalance.json", "i-ours2", sent_at))
    sqs.send_message(QueueUrl=url, MessageBody=recorded("spot-warning.json", "i-theirs", now))
    sqs.send_message(QueueUrl=url, MessageBody="garbage")
    calls: list[str] = []
    source = SqsInterruptions(
        sqs, "p-interruptions", ("spot", "ondemand"), every_s=0, count=calls.append
    )
    events: list[Any] = []
    for _ in range(3):
        events += source.poll(now, Fleet(["i-ours1", "i-ours2"]))
    by_instance = {e.instance_id: e for e in events}
    assert set(by_instance) == {"i-ours1", "i-ours2"} and len(events) == 2
    spot = by_instance["i-ours1"]
    assert isinstance(spot, InterruptionNotice) and spot.source == "eventbridge:spot-warning"
    assert abs(spot.notice_s - (SPOT_NOTICE_S - 30)) < 1.5
    assert by_instance["i-ours2"].notice_s == SPOT_NOTICE_S
    time.sleep(6)  # past the visibility timeout: only the other run's warning is left
    left = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [parse(m["Body"]).instance_id for m in left] == ["i-theirs"]  # type: ignore[union-attr]
    assert "DeleteMessageBatch" in calls
