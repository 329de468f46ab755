"""EC2's interruption warnings, from EventBridge through SQS, as ``InterruptionNotice``.

``stormproof aws setup`` subscribes the project's SQS queue to two EventBridge rules:
"EC2 Spot Instance Interruption Warning" (the instance goes two minutes after the event's
time) and "EC2 Instance Rebalance Recommendation" (an elevated risk: stormproof moves the
work off early, with the same two minutes to checkpoint). Each becomes the
``InterruptionNotice`` that ``stormproof interrupt`` makes, for instances of this run.

The queue is the project's, and several runs may share it: a message about an instance
this run does not know is left for the others (it comes back to the queue after a short
visibility timeout, and SQS drops it after an hour); only this run's are deleted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stormproof.capacity.base import FleetView
from stormproof.core.events import Event, InterruptionNotice

SPOT_WARNING = "EC2 Spot Instance Interruption Warning"
REBALANCE = "EC2 Instance Rebalance Recommendation"
#: How long before a spot instance is reclaimed the warning comes.
SPOT_NOTICE_S = 120.0
#: A message this run does not want becomes visible to the others again after this.
_OTHERS_VISIBILITY_S = 5


@dataclass(frozen=True)
class Warning:
    instance_id: str
    kind: str  # "spot" | "rebalance"
    at: float  # the event's time (epoch seconds)


def parse(body: str) -> Warning | None:
    """An EventBridge event (as SQS delivers it) → a warning, or None if it is not one."""
    try:
        event = json.loads(body)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("source") != "aws.ec2":
        return None
    detail = event.get("detail") or {}
    instance = detail.get("instance-id") if isinstance(detail, dict) else None
    kind = {SPOT_WARNING: "spot", REBALANCE: "rebalance"}.get(str(event.get("detail-type")))
    if not instance or kind is None:
        return None
    try:
        at = datetime.fromisoformat(str(event.get("time", "")).replace("Z", "+00:00")).timestamp()
    except ValueError:
        at = 0.0
    return Warning(str(instance), kind, at)


@dataclass
class SqsInterruptions:
    """An ``InterruptionSource`` reading the project's interruption queue (``poll`` at most
    every ``every_s``); ``pools`` are the pools whose instances it may name."""

    sqs: Any
    queue_name: str
    pools: tuple[str, ...]
    every_s: float = 2.0
    #: API calls made, by operation.
    count: Callable[[str], None] = lambda operation: None
    _url: str | None = None
    _last: float = -1e18
    _noticed: set[str] = field(default_factory=set)

    def poll(self, now: float, fleet: FleetView) -> list[Event]:
        if now - self._last < self.every_s:
            return []
        self._last = now
        ours = {i.id for pool in self.pools for i in fleet.live(pool)}
        out: list[Event] = []
        for _ in range(10):  # at most 100 messages a poll: a backlog drains over polls
            messages = self._receive()
            if not messages:
                break
            mine, others = [], []
            for message in messages:
                warning = parse(message.get("Body", ""))
                if warning is not None and warning.instance_id in ours:
                    mine.append(message)
                    if warning.instance_id not in self._noticed:
                        self._noticed.add(warning.instance_id)
                        out.append(_notice(now, warning))
                elif warning is None:
                    mine.append(message)  # not a warning at all: nobody wants it
                else:
                    others.append(message)
            self._delete(mine)
            if others:
                break  # the rest of the queue is (for now) other runs' business
        return out

    def can_launch(self, now: float, pool: str, fleet: FleetView) -> str | None:
        return None

    def _queue_url(self) -> str:
        if self._url is None:
            self._url = str(self.sqs.get_queue_url(QueueName=self.queue_name)["QueueUrl"])
            self.count("GetQueueUrl")
        return self._url

    def _receive(self) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=self._queue_url(),
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=_OTHERS_VISIBILITY_S,
        )
        self.count("ReceiveMessage")
        return list(response.get("Messages", []))

    def _delete(self, messages: Iterable[dict[str, Any]]) -> None:
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        if entries:
            self.sqs.delete_message_batch(QueueUrl=self._queue_url(), Entries=entries)
            self.count("DeleteMessageBatch")


def _notice(now: float, warning: Warning) -> InterruptionNotice:
    if warning.kind == "spot" and warning.at:
        left = max(0.0, warning.at + SPOT_NOTICE_S - now)
        return InterruptionNotice(now, warning.instance_id, left, "eventbridge:spot-warning")
    return InterruptionNotice(now, warning.instance_id, SPOT_NOTICE_S, "eventbridge:rebalance")
