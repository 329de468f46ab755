"""``stormproof report NAME -o report.html``: one self-contained HTML file of a run.

Like Nextflow's ``-with-report`` and ``-with-timeline`` in one: the dashboard's run page,
with its stylesheet, Chart.js and its script inlined and the run's data embedded as JSON,
so the file opens offline, anywhere, years later. It shows the summary figures, the
timeline, cost over time, the stages, the pools, every task with its attempts (reason,
pool, market, checkpoint, cost, CPU and peak memory) and the log tails of the attempts
that did not succeed.

A Content-Security-Policy in the file lets only its own three scripts run (by hash): even
a string that escaped escaping could not run, nor could the file reach the network.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any, Final

from stormproof.monitor import shapes
from stormproof.monitor.views import RunViews
from stormproof.monitor.web.app import STATIC
from stormproof.runtime.home import Home
from stormproof.runtime.view import RunView
from stormproof.store.base import EventLog, RunInfo

#: Log tails kept: of attempts that did not succeed, the latest ones, this many bytes each.
LOG_ATTEMPTS: Final = 100
LOG_BYTES: Final = 16 * 1024
#: Every attempt on the timeline up to this many.
TIMELINE_ATTEMPTS: Final = 20_000


def report_data(store: EventLog, home: Home, name: str) -> dict[str, Any]:
    """What the report shows, in the API's shapes."""
    info, view = RunViews(store).get(name)
    now = time.time()
    return {
        "run": view.to_json(now),
        "timeline": shapes.timeline_json(view, now, TIMELINE_ATTEMPTS),
        "stages": shapes.stages_json(view),
        "logs": _failed_logs(home, info, view),
        "made_at": now,
    }


def _failed_logs(home: Home, info: RunInfo, view: RunView) -> dict[str, str]:
    failed = [
        (tid, a.number)
        for tid, t in view.tasks.items()
        for a in t.attempts
        if a.ended is not None and a.state != "succeeded"
    ][-LOG_ATTEMPTS:]
    logs: dict[str, str] = {}
    for tid, number in failed:
        for stream in ("stdout", "stderr"):
            try:
                tail = shapes.log_tail(home, info, view, tid, number, stream)
            except shapes.NotFound:
                continue
            except shapes.LogUnreadable:  # S3 would answer the same for every other one
                return logs
            logs[f"{tid}/{number}/{stream}"] = tail[-LOG_BYTES:].decode(errors="replace")
    return logs


def script_json(data: Any) -> str:
    """JSON that is safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` as such."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _inline_script(source: str) -> str:
    return source.replace("</script", "<\\/script")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def render_report(data: dict[str, Any]) -> str:
    page = (STATIC / "run.html").read_text()
    css = (STATIC / "style.css").read_text()
    chart = _inline_script((STATIC / "chart.umd.min.js").read_text())
    app = _inline_script((STATIC / "dashboard.js").read_text())
    policy = (
        f"default-src 'none'; script-src {_sha256(chart)} {_sha256(app)}; "
        f"style-src {_sha256(css)}; img-src data:; base-uri 'none'; form-action 'none'"
    )
    head = f'<meta http-equiv="Content-Security-Policy" content="{policy}">\n<style>{css}</style>'
    page = page.replace('<link rel="stylesheet" href="/static/style.css">', head)
    page = page.replace(
        '<a class="brand" href="/">stormproof</a>', '<span class="brand">stormproof</span>'
    )
    page = page.replace('<span class="where">run</span>', '<span class="where">report</span>')
    page = page.replace(
        '<script src="/static/chart.umd.min.js"></script>',
        f'<script id="stormproof-data" type="application/json">{script_json(data)}</script>\n'
        f"<script>{chart}</script>",
    )
    return page.replace('<script src="/static/dashboard.js"></script>', f"<script>{app}</script>")
