"""What the AWS executors share: news gathered by their looks, and the agents' statuses in S3.

``executor: aws_batch`` and ``executor: ssm`` both run each attempt under the agent,
``stormproof exec``, which writes the attempt's status (its exit code, a notice, the
checkpoints it uploaded) to S3; both look at their service's state at an adaptive interval
and hand what they learned to the driver through ``poll``. ``AgentNews`` is that common
part, mixed into each executor: the inbox the looks and the submitting threads fill and
``poll`` drains, the count of API calls (``bench/`` reads it), the warnings said once, and
the reading of an agent's status.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from stormproof.aws.clients import Aws, error_code, explain
from stormproof.aws.settings import AwsOptions
from stormproof.core.events import CheckpointCommitted, Event


class AgentNews:
    """The inbox, the counts and the agents' statuses; the executor provides the rest."""

    options: AwsOptions
    #: API calls made, by operation (``bench/aws_batch.py`` and ``bench/ec2_ssm.py`` read it).
    calls: Counter[str]
    _lock: threading.Lock
    _news: list[Event]
    _wake: threading.Event
    _warned: set[str]
    _next_look: float

    def _init_news(self, options: Mapping[str, Any] | None) -> None:
        """The shared part of an executor's ``__init__``: its options, an empty inbox, no
        calls counted, nothing said, the first look due at once."""
        self.options = AwsOptions.from_dict(options or {})
        self.calls = Counter()
        self._lock = threading.Lock()
        self._news = []
        self._wake = threading.Event()
        self._warned = set()
        self._next_look = 0.0

    @property
    def aws(self) -> Aws:
        """The AWS clients (made on the executor's first use)."""
        raise NotImplementedError

    def _look_due(self) -> bool:
        raise NotImplementedError

    def _look(self) -> None:
        """Look at the service once and ``_push`` what changed."""
        raise NotImplementedError

    def _wait_for_news(self, timeout_s: float) -> list[Event]:
        """What is in the inbox; if nothing, wait for news or the next look, up to ``timeout_s``."""
        news = self._take()
        if news:
            return news
        wait = max(0.0, min(timeout_s, self._next_look - time.monotonic()))
        if self._wake.wait(wait):
            self._wake.clear()
        if self._look_due():
            self._look()
        return self._take()

    def _agent_status(self, run: str, attempt_id: str) -> dict[str, Any] | None:
        """The status the attempt's agent wrote to S3, or ``None`` (none yet, or unreadable:
        said once, since the service's own answer is then all there is)."""
        where = self.options.status_location(run, attempt_id)
        if where is None:
            return None
        self._count("GetObject")  # a status not written yet (NoSuchKey) is a call too
        try:
            body = self.aws.client("s3").get_object(Bucket=where[0], Key=where[1])["Body"].read()
            data = json.loads(body)
        except Exception as exc:
            if error_code(exc) not in ("NoSuchKey", "404"):
                self._warn_once(f"status {where[1]}", str(explain(exc, "GetObject", where[1])))
            return None
        return data if isinstance(data, dict) else None

    def _push(self, events: list[Event]) -> None:
        if events:
            with self._lock:
                self._news.extend(events)
            self._wake.set()

    def _take(self) -> list[Event]:
        with self._lock:
            news, self._news = self._news, []
        return news

    def _count(self, operation: str) -> None:
        self.calls[operation] += 1

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            print(f"stormproof: {message}", file=sys.stderr)


def agent_commits(
    reported: set[int], attempt_id: str, agent: Mapping[str, Any] | None, now: float
) -> list[Event]:
    """A ``CheckpointCommitted`` for each checkpoint the agent's status names that was not
    reported yet (``reported`` is updated)."""
    out: list[Event] = []
    for ckpt in (agent or {}).get("checkpoints", []):
        seq = int(ckpt.get("seq", 0))
        if seq and seq not in reported:
            reported.add(seq)
            files, size = int(ckpt.get("files", 0)), int(ckpt.get("bytes", 0))
            save_s = _seconds(ckpt.get("save_s"))
            out.append(CheckpointCommitted(now, attempt_id, seq, files, size, save_s))
    return out


def _seconds(value: object) -> float:
    """A duration the agent reported; 0 (unknown) when it is missing (an older agent) or
    not a number of seconds >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    seconds = float(value)
    return seconds if math.isfinite(seconds) and seconds >= 0 else 0.0
