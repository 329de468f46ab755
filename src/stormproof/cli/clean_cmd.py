"""``stormproof clean``: delete old runs — their files, checkpoints and history — never a live one.

A run is *live* while an orchestrator drives it, or while attempts it launched still run
in the background after it stopped (``resume`` would adopt them): deleting its folders
would pull the ground from under them. Everything else may go, chosen by name or by
``--older-than`` (no activity for that long) and ``--keep-last`` (the newest N runs stay).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import click
from rich.markup import escape

from stormproof.errors import StormproofError
from stormproof.runtime.redrive import fold_past
from stormproof.runtime.runs import RunContext
from stormproof.spec.model import parse_duration
from stormproof.store.base import RunInfo

from .session import Session, common, out, session


@dataclass(frozen=True, slots=True)
class _Run:
    info: RunInfo
    state: str
    last_at: float
    live: str  # why it must stay ("" if it may go)


@click.command()
@click.argument("names", nargs=-1)
@click.option("--older-than", "older_than", metavar="AGE", help="Runs idle for longer, like 7d.")
@click.option(
    "--keep-last", "keep_last", type=click.IntRange(min=0), help="Keep the newest N runs."
)
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@common
def clean(
    names: tuple[str, ...],
    older_than: str | None,
    keep_last: int | None,
    dry_run: bool,
    home: str | None,
    config_path: str | None,
) -> None:
    """Delete runs: NAMES, or those --older-than AGE and beyond --keep-last N.

    A run's folders (data, attempts' logs), its checkpoints and its history go; a running run,
    or a stopped one whose attempts still run, is never deleted.
    """
    if not names and older_than is None and keep_last is None:
        raise click.UsageError("say which runs: NAMES, --older-than AGE or --keep-last N")
    if names and (older_than is not None or keep_last is not None):
        raise click.UsageError("give NAMES, or --older-than/--keep-last, not both")
    try:
        age_s = None if older_than is None else parse_duration(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    with session(home, config_path) as s:
        chosen = _choose(s, names, age_s, keep_last)
        _delete(s, chosen, dry_run)


def _choose(
    s: Session, names: tuple[str, ...], age_s: float | None, keep_last: int | None
) -> list[_Run]:
    if names:
        runs = [_describe(s, s.store.get_run(name)) for name in names]
        live = [r for r in runs if r.live]
        if live:
            why = "; ".join(f"{r.info.name}: {r.live}" for r in live)
            raise StormproofError(f"not deleting anything: {why}")
        return runs
    runs = [_describe(s, info) for info in s.store.list_runs()]  # newest first
    chosen = runs[keep_last:] if keep_last is not None else runs
    if age_s is not None:
        cutoff = time.time() - age_s
        chosen = [r for r in chosen if r.last_at < cutoff]
    for r in chosen:
        if r.live:
            out.print(f"keeping {escape(r.info.name)}: {r.live}")
    return [r for r in chosen if not r.live]


def _describe(s: Session, info: RunInfo) -> _Run:
    rows = list(s.store.read(info.name))
    past, final = fold_past(rows)
    last_at = max((r.at for r in rows), default=info.created_at)
    live = ""
    if s.store.is_driven(info.name):
        live = "it is running"
    elif any(p.live for p in past.values()):
        n = sum(len(p.live) for p in past.values())
        live = f"{n} of its attempts still run (resume or cancel it first)"
    return _Run(info, final, last_at, live)


def _delete(s: Session, runs: list[_Run], dry_run: bool) -> None:
    if not runs:
        out.print("nothing to delete")
        return
    total = 0
    for r in runs:
        name = r.info.name
        folder = s.home.run_dir(name)
        size = _size(folder)
        total += size
        idle = _age(time.time() - r.last_at)
        verb = "would delete" if dry_run else "deleted"
        if not dry_run:
            _delete_run(s, r.info, folder)
        out.print(f"{verb} {escape(name)} ({r.state}, idle {idle}, {_human(size)})")
    verb = "would free" if dry_run else "freed"
    out.print(f"{len(runs)} run(s); {verb} {_human(total)} under {escape(str(s.home.root))}")


def _delete_run(s: Session, info: RunInfo, folder: Path) -> None:
    """Checkpoints, then files, then the history: a crash part-way leaves the run listed, so
    `clean` can finish the job; holding its lease, so that nothing drives it meanwhile."""
    ctx = RunContext.from_meta(info.name, info.meta)
    with s.store.driver_lease(info.name):
        if ctx.checkpoints and any(t.checkpoint_enabled for t in ctx.spec.tasks):
            s.checkpoint_store(ctx.checkpoints).delete(info.name)
        shutil.rmtree(folder, ignore_errors=True)
        s.store.delete_run(info.name)


def _size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - the loop returns


def _age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
