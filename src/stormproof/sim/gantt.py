"""One simulated run as a timeline: instances as rows, attempts as bars coloured by outcome.

``.html`` and ``.svg`` are a self-contained SVG written here: no plotting
library to install, opens in any browser, and a hover shows what each bar
was. ``.png`` is drawn by matplotlib (the ``plot`` extra), because a raster
image with text is what a plotting library is for.
"""

from __future__ import annotations

import random
from html import escape
from pathlib import Path

from stormproof.errors import StormproofError
from stormproof.sim.engine import AttemptRecord, Simulation

COLOURS = {
    "succeeded": "#2e7d32",
    "interrupted": "#f9a825",
    "lost": "#e65100",
    "failed": "#c62828",
    "timed_out": "#6a1b9a",
    "cancelled": "#757575",
}
ROW_H = 18
LEFT = 140
WIDTH = 1000


def svg(records: list[AttemptRecord], title: str) -> str:
    rows = sorted({iid for r in records for iid in r.instances})
    end = max((r.end for r in records), default=1.0) or 1.0
    height = (len(rows) + 3) * ROW_H
    scale = (WIDTH - LEFT - 10) / end
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="4" y="14" font-weight="bold">{escape(title)}</text>',
    ]
    y_of = {iid: (k + 1) * ROW_H + 4 for k, iid in enumerate(rows)}
    for iid, y in y_of.items():
        parts.append(f'<text x="4" y="{y + 12}">{escape(iid)}</text>')
    for r in records:
        colour = COLOURS.get(r.state, "#1565c0")
        x = LEFT + r.start * scale
        w = max(1.0, (r.end - r.start) * scale)
        tip = f"{r.attempt_id} on {','.join(r.instances)} ({r.market}): {r.state}, "
        tip += f"{r.start / 3600:.2f}h to {r.end / 3600:.2f}h"
        for iid in r.instances:
            parts.append(
                f'<rect x="{x:.1f}" y="{y_of[iid]}" width="{w:.1f}" height="{ROW_H - 4}" '
                f'fill="{colour}"><title>{escape(tip)}</title></rect>'
            )
    axis_y = (len(rows) + 2) * ROW_H
    parts.append(f'<text x="{LEFT}" y="{axis_y}">0 h</text>')
    parts.append(f'<text x="{WIDTH - 60}" y="{axis_y}">{end / 3600:.2f} h</text>')
    legend_x = LEFT + 80
    for state, colour in COLOURS.items():
        parts.append(
            f'<rect x="{legend_x}" y="{axis_y - 10}" width="10" height="10" fill="{colour}"/>'
        )
        parts.append(f'<text x="{legend_x + 14}" y="{axis_y}">{state}</text>')
        legend_x += 95
    parts.append("</svg>")
    return "\n".join(parts)


def write_gantt(sim: Simulation, seed: int, path: Path, name: str) -> None:
    """Simulate run 0 of ``seed`` again, recording its attempts, and draw it."""
    suffix = path.suffix.lower()
    if suffix not in (".html", ".svg", ".png"):
        raise StormproofError(f"--gantt {str(path)!r}: give a .html, .svg or .png file")
    result = sim.run(random.Random(f"{seed}:0"), record=True)
    title = f"{name}: run 0, {result.makespan_s / 3600:.2f} h, ${result.cost.spent:.4f}"
    if suffix == ".png":
        png(result.records, title, path)
        return
    body = svg(result.records, title)
    if suffix == ".html":
        body = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"</head><body>{body}</body></html>\n"
        )
    try:
        path.write_text(body)
    except OSError as e:
        raise StormproofError(f"--gantt {str(path)!r}: cannot write it ({e.strerror})") from None


def png(records: list[AttemptRecord], title: str, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
        from matplotlib.patches import Rectangle
    except ImportError:
        raise StormproofError(
            f"--gantt {str(path)!r}: PNG needs matplotlib: pip install 'stormproof[plot]' "
            "(or give a .html or .svg file, which needs nothing)"
        ) from None
    rows = sorted({iid for r in records for iid in r.instances})
    y_of = {iid: k for k, iid in enumerate(rows)}
    fig, ax = plt.subplots(figsize=(12, 1 + 0.3 * len(rows)))
    for r in records:
        for iid in r.instances:
            ax.barh(
                y_of[iid],
                (r.end - r.start) / 3600,
                left=r.start / 3600,
                color=COLOURS.get(r.state, "#1565c0"),
                edgecolor="white",
                linewidth=0.3,
            )
    ax.set_yticks(range(len(rows)), rows)
    ax.invert_yaxis()
    ax.set_xlabel("hours")
    ax.set_title(title)
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    ax.legend(handles, list(COLOURS), loc="lower right", fontsize="small")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise StormproofError(f"--gantt {str(path)!r}: cannot write it ({e.strerror})") from None
    finally:
        plt.close(fig)
