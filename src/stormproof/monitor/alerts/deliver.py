"""Delivering alerts through apprise, in a background thread, retried with backoff.

The driver's loop only puts alerts in (``send``) and takes outcomes out (``take``); both
are a lock-free deque operation, so a slow or dead receiver never holds the run up, and
no apprise error can reach the driver: every try ends as an ``Outcome`` that the driver
appends to the run's log (``AlertDelivered`` / ``AlertDeliveryFailed``).

One target (one URL of a rule's ``notify``) is one delivery: a rule that notifies Slack
and email retries only the one that failed.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from stormproof.monitor.alerts.rules import Alert

#: Tries per target and the wait before the second (doubling after that): 1 s, 2 s, 4 s.
MAX_TRIES: Final = 4
FIRST_RETRY_S: Final = 1.0
#: Seconds a driver that is leaving waits for deliveries still under way.
DRAIN_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class Job:
    alert: Alert
    target: int
    url: str
    tries: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    alert: Alert
    target: int
    shown_url: str  # the URL with its secrets masked (apprise's privacy mode)
    tries: int
    ok: bool
    at: float  # wall-clock time the try ended
    error: str = ""
    retry_in_s: float | None = None  # None when delivered or given up

    @property
    def final(self) -> bool:
        return self.ok or self.retry_in_s is None

    def to_data(self) -> dict[str, object]:
        data: dict[str, object] = {
            "alert_id": self.alert.id,
            "target": self.target,
            "url": self.shown_url,
            "try": self.tries,
        }
        if not self.ok:
            data.update(error=self.error, retry_in_s=self.retry_in_s, final=self.final)
        return data


Sender = Callable[[str, Alert], tuple[bool, str, str]]


def apprise_send(url: str, alert: Alert) -> tuple[bool, str, str]:
    """Send one alert to one apprise URL: (delivered, error, the URL with secrets masked)."""
    import apprise

    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        return False, f"apprise cannot use the URL {_scheme(url)}://… (unknown or malformed)", url
    shown = str(plugin.url(privacy=True)).split("?", 1)[0]  # type: ignore[no-untyped-call]
    messages: list[str] = []
    notifier = apprise.Apprise()
    notifier.add(plugin)
    try:
        result = notifier.notify(
            body=alert.body,
            title=alert.title,
            notify_type=alert.severity,
            log_callback=lambda entry, _plugin: messages.append(str(entry.message)),
        )
    except Exception as exc:  # a plugin's own bug must not end delivery, nor the run
        return False, f"{type(exc).__name__}: {exc}", shown
    if bool(result):
        return True, "", shown
    warnings = [m for m in messages if m] or ["apprise reported a failure"]
    return False, warnings[-1], shown


def _scheme(url: str) -> str:
    return url.split("://", 1)[0]


class Deliverer:
    """A daemon thread that sends jobs when they are due; outcomes wait in ``take``."""

    def __init__(
        self,
        sender: Sender = apprise_send,
        *,
        max_tries: int = MAX_TRIES,
        first_retry_s: float = FIRST_RETRY_S,
    ) -> None:
        self.sender = sender
        self.max_tries = max_tries
        self.first_retry_s = first_retry_s
        self._due: list[tuple[float, int, Job]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._outcomes: deque[Outcome] = deque()
        self._busy = 0  # jobs queued or being sent
        self._closed = False
        self._thread: threading.Thread | None = None

    def send(self, alert: Alert, target: int, url: str) -> None:
        with self._wake:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="stormproof-alerts", daemon=True
                )
                self._thread.start()
            self._busy += 1
            job = Job(alert, target, url)
            heapq.heappush(self._due, (time.monotonic(), next(self._order), job))
            self._wake.notify()

    def take(self) -> list[Outcome]:
        """Outcomes since the last call (never blocks)."""
        out = []
        while self._outcomes:
            out.append(self._outcomes.popleft())
        return out

    @property
    def idle(self) -> bool:
        return self._busy == 0

    def close(self, wait_s: float) -> list[Job]:
        """Wait up to ``wait_s`` for what is under way; return the jobs left unsent."""
        deadline = time.monotonic() + wait_s
        with self._wake:
            while self._busy and time.monotonic() < deadline:
                self._wake.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            self._closed = True
            left = [job for _, _, job in self._due]
            self._due.clear()
            self._wake.notify_all()
        return left

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._closed and (not self._due or self._due[0][0] > time.monotonic()):
                    timeout = self._due[0][0] - time.monotonic() if self._due else None
                    self._wake.wait(timeout)
                if self._closed:
                    return
                _, _, job = heapq.heappop(self._due)
            outcome = self._try(job)
            with self._wake:
                self._outcomes.append(outcome)
                if outcome.retry_in_s is not None and not self._closed:
                    again = Job(job.alert, job.target, job.url, outcome.tries)
                    due = time.monotonic() + outcome.retry_in_s
                    heapq.heappush(self._due, (due, next(self._order), again))
                else:
                    self._busy -= 1
                self._wake.notify_all()

    def _try(self, job: Job) -> Outcome:
        tries = job.tries + 1
        try:
            ok, error, shown = self.sender(job.url, job.alert)
        except Exception as exc:  # never let the thread die: the run would lose its alerts
            ok, error, shown = False, f"{type(exc).__name__}: {exc}", _scheme(job.url) + "://…"
        now = time.time()
        if ok:
            return Outcome(job.alert, job.target, shown, tries, True, now)
        retry = self.first_retry_s * 2 ** (tries - 1) if tries < self.max_tries else None
        return Outcome(job.alert, job.target, shown, tries, False, now, error, retry)
