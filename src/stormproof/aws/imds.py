"""EC2's instance metadata service (IMDSv2): the interruption notices an instance gets.

IMDSv2 wants a session token first (``PUT /latest/api/token``), then sends it with every
``GET``. The endpoint is ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` when set (the variable
boto uses; the tests point it at a stand-in on 127.0.0.1), else the link-local address.

* ``spot/instance-action``: 404 until EC2 decides to reclaim the spot instance, then
  ``{"action": "terminate"|"stop"|"hibernate", "time": "2026-…Z"}``, two minutes ahead.
* ``events/recommendations/rebalance``: 404 until EC2 sees an elevated risk of
  interruption, then ``{"noticeTime": "…"}``: earlier than a notice, and not one.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_TTL_S = 21600
#: Renew the token this long before it expires.
_RENEW_MARGIN_S = 60.0


@dataclass
class Imds:
    endpoint: str = ""
    timeout_s: float = 1.0
    _token: str | None = None
    _token_until: float = 0.0

    def __post_init__(self) -> None:
        if not self.endpoint:
            self.endpoint = os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", DEFAULT_ENDPOINT)
        self.endpoint = self.endpoint.rstrip("/")

    def token(self) -> str:
        now = time.monotonic()
        if self._token is None or now > self._token_until - _RENEW_MARGIN_S:
            request = urllib.request.Request(
                f"{self.endpoint}/latest/api/token",
                method="PUT",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)},
            )
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                self._token = response.read().decode().strip()
            self._token_until = now + TOKEN_TTL_S
        return self._token

    def get(self, path: str) -> str | None:
        """The text at ``/latest/meta-data/<path>``, or None for 404 (nothing there)."""
        for renewed in (False, True):
            request = urllib.request.Request(
                f"{self.endpoint}/latest/meta-data/{path}",
                headers={"X-aws-ec2-metadata-token": self.token()},
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return str(response.read().decode())
            except urllib.error.HTTPError as err:
                if err.code == 404:
                    return None
                if err.code == 401 and not renewed:  # the token expired early: a new one
                    self._token = None
                    continue
                raise
        return None

    def instance_action(self) -> dict[str, Any] | None:
        text = self.get("spot/instance-action")
        return _json_object(text)

    def rebalance(self) -> dict[str, Any] | None:
        text = self.get("events/recommendations/rebalance")
        return _json_object(text)

    def instance_id(self) -> str | None:
        return self.get("instance-id")


def _json_object(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return {"raw": text[:200]}
    return data if isinstance(data, dict) else {"raw": text[:200]}


def seconds_until(iso_time: str | None, now: float) -> float | None:
    """Seconds from ``now`` (epoch) to an IMDS time like ``2026-12-06T22:35:00Z``."""
    if not iso_time:
        return None
    try:
        when = datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return when - now
