"""A stand-in for EC2's instance metadata service (IMDSv2) on 127.0.0.1, for the agent.

Nothing real can serve ``169.254.169.254`` here, so this tiny HTTP server answers the
endpoints ``stormproof exec`` reads, one path prefix per emulated instance
(``http://127.0.0.1:PORT/<instance-id>`` is that instance's metadata endpoint):

* ``PUT /latest/api/token`` → a session token (IMDSv2); a GET without it gets 401;
* ``GET /latest/meta-data/instance-id``;
* ``GET /latest/meta-data/spot/instance-action`` → 404 until ``notice()``;
* ``GET /latest/meta-data/events/recommendations/rebalance`` → 404 until ``rebalance()``.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ImdsStandIn:
    def __init__(self) -> None:
        self.tokens: set[str] = set()
        self.actions: dict[str, dict[str, Any]] = {}
        self.rebalances: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_PUT(self) -> None:
                stand_in.requests.append(("PUT", self.path))
                if self.path.endswith("/latest/api/token") and self.headers.get(
                    "X-aws-ec2-metadata-token-ttl-seconds"
                ):
                    token = secrets.token_hex(16)
                    stand_in.tokens.add(token)
                    self._answer(200, token)
                else:
                    self._answer(400, "bad token request")

            def do_GET(self) -> None:
                stand_in.requests.append(("GET", self.path))
                if self.headers.get("X-aws-ec2-metadata-token") not in stand_in.tokens:
                    self._answer(401, "IMDSv2 token required")
                    return
                instance, _, rest = self.path.lstrip("/").partition("/latest/meta-data/")
                if rest == "instance-id":
                    self._answer(200, instance)
                elif rest == "spot/instance-action" and instance in stand_in.actions:
                    self._answer(200, json.dumps(stand_in.actions[instance]))
                elif rest == "events/recommendations/rebalance" and instance in stand_in.rebalances:
                    self._answer(200, json.dumps(stand_in.rebalances[instance]))
                else:
                    self._answer(404, "Not Found")

            def _answer(self, code: int, body: str) -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def endpoint(self, instance_id: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/{instance_id}"

    def notice(self, instance_id: str, in_s: float = 120.0, action: str = "terminate") -> None:
        when = datetime.fromtimestamp(time.time() + in_s, timezone.utc)
        self.actions[instance_id] = {
            "action": action,
            "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def rebalance(self, instance_id: str) -> None:
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.rebalances[instance_id] = {"noticeTime": now}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
