"""``stormproof checkpoints``: look at stored checkpoints, verify them, prune them.

Reading commands never change the store. ``prune`` is the recipe's
``cleanup_old_checkpoints`` done for real: ``--older-than 7d`` over one run or
all of them, or ``--keep-last K`` per task of a run; ``--dry-run`` says what
would go. Manifests are deleted before files, so an interrupted prune leaves
"incomplete" checkpoints, never ones that look valid with files missing.

The store is the configured ``checkpoints:`` (default ``<home>/checkpoints``)
with the tiers of ``checkpoint_tiers:``; ``--hot DIR`` and ``--cold URL``
name other tiers to show and prune. Exit codes: 0 done, 1 ``show`` found the
checkpoint does not verify, 2 bad input (unknown run, bad duration, unreachable
store …).

The group is registered on the main CLI by ``cli/main.py``
(``cli.add_command(checkpoints)``).
"""

from __future__ import annotations

import difflib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.table import Table

from stormproof.errors import RunNotFound, StormproofError

from .session import F, Session, out, session
from .session import common as home_and_config

if TYPE_CHECKING:  # only the types: the CLI must not import fsspec at startup
    from stormproof.checkpoints.base import CheckpointInfo, Verification
    from stormproof.checkpoints.fsspec_store import FsspecStore
    from stormproof.checkpoints.tiers import TieredStore


def common(fn: F) -> F:
    """``--home``/``--config`` exactly as every other command has them, plus the tiers."""
    fn = click.option(
        "--cold", "cold_url", metavar="URL", help="Also the cold tier at URL (any store URL)."
    )(fn)
    fn = click.option(
        "--hot", "hot_dir", metavar="DIR", help="Also the hot tier in DIR (node-local disk)."
    )(fn)
    return home_and_config(fn)


@contextmanager
def opened(
    home: str | None,
    config_path: str | None,
    hot_dir: str | None,
    cold_url: str | None,
    run: str | None = None,
) -> Iterator[tuple[Session, FsspecStore | TieredStore]]:
    """The session and the checkpoint store; every user error is one message and exit 2.

    A run's own recorded settings win over today's stormproof.yaml (that is what it saved
    to); ``--hot``/``--cold`` add tiers on top.
    """
    with session(home, config_path) as s:
        settings = _recorded_settings(s, run) or s.checkpoint_settings()
        if hot_dir:
            settings["hot"] = hot_dir
        if cold_url:
            settings["cold"] = cold_url
        yield s, s.checkpoint_store(settings)


def _recorded_settings(s: Session, run: str | None) -> dict[str, Any] | None:
    if run is None or (s.config.store == "sqlite" and not s.home.db_path.exists()):
        return None  # no runs recorded here yet: do not make a database just to find none
    try:
        recorded = s.store.get_run(run).meta.get("checkpoints")
    except RunNotFound:
        return None  # checkpoints may outlive their run's record: look where the config says
    return dict(recorded) if recorded else None


@click.group(name="checkpoints")
def checkpoints() -> None:
    """Stored checkpoints: list, show (and verify), prune."""


# ---------------------------------------------------------------------- list
@checkpoints.command(name="list")
@click.argument("name")
@click.argument("task", required=False)
@click.option("--verify", is_flag=True, help="Hash every file (reads all the data).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable list.")
@common
def list_cmd(
    name: str,
    task: str | None,
    verify: bool,
    as_json: bool,
    home: str | None,
    config_path: str | None,
    hot_dir: str | None,
    cold_url: str | None,
) -> None:
    """Checkpoints of run NAME (or of one TASK), newest first per task, one row per copy."""
    with opened(home, config_path, hot_dir, cold_url, name) as (s, store):
        infos = store.list(name, task)
        if not infos:
            _no_checkpoints(s, store, name, task)
        checks = {_key(i): _verify_copy(store, i) for i in infos} if verify else {}
        if as_json:
            rows = [_info_json(i, checks.get(_key(i))) for i in infos]
            click.echo(json.dumps(rows, indent=2))
            return
        if not infos:
            out.print(f"no checkpoints for run {escape(name)} in {escape(store.url)}")
            return
        table = Table(title=f"checkpoints of {escape(name)} in {escape(store.url)}")
        for col in ("task", "seq", "attempt", "created", "size", "files", "tier", "verified"):
            right = col in ("seq", "size", "files")
            wrap = col in ("task", "verified")
            table.add_column(
                col,
                justify="right" if right else "left",
                no_wrap=not wrap,
                min_width=14 if col == "verified" else None,
            )
        for i in infos:
            m = i.manifest
            table.add_row(
                escape(i.task),
                str(i.seq),
                str(m.attempt) if m else "-",
                _when(i.created_at, seconds=False),
                _size(m.total_bytes if m else i.stored_bytes),
                str(len(m.files) if m else i.stored_files),
                i.tier,
                _verdict(i, checks.get(_key(i)), verify),
            )
        out.print(table)


def _key(i: CheckpointInfo) -> tuple[str, int, str]:
    return (i.task, i.seq, i.tier)


def _verify_copy(store: FsspecStore | TieredStore, info: CheckpointInfo) -> Verification:
    from stormproof.checkpoints.tiers import TieredStore

    if isinstance(store, TieredStore):
        tier = next(t for t in store.tiers if t.tier == info.tier)
        return tier.verify(info.run, info.task, info.seq)
    return store.verify(info.run, info.task, info.seq)


def _verdict(i: CheckpointInfo, check: Verification | None, hashed: bool) -> str:
    if i.state != "ok":
        return f"[red]no[/]: {escape(i.problem or i.state)}"
    if check is None:
        return "sizes ok" if not hashed else "?"
    return "[green]yes[/]" if check.ok else f"[red]no[/]: {escape(check.problem or '')}"


def _info_json(i: CheckpointInfo, check: Verification | None) -> dict[str, Any]:
    m = i.manifest
    return {
        "run": i.run,
        "task": i.task,
        "seq": i.seq,
        "tier": i.tier,
        "state": i.state,
        "problem": i.problem if check is None or check.ok else check.problem,
        "attempt": m.attempt if m else None,
        "created_at": i.created_at,
        "total_bytes": m.total_bytes if m else i.stored_bytes,
        "files": len(m.files) if m else i.stored_files,
        "verified": None if check is None else (check.ok and i.state == "ok"),
    }


def _no_checkpoints(
    s: Session, store: FsspecStore | TieredStore, name: str, task: str | None
) -> None:
    """Nothing stored: fine for a run that exists; a name nobody knows is an error (exit 2)."""
    if task is not None:
        tasks = sorted({i.task for i in store.list(name)})
        if tasks:
            close = difflib.get_close_matches(task, tasks, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise StormproofError(
                f"no checkpoints of task {task!r} in run {name!r} in {store.url}{hint}; "
                f"tasks with checkpoints: {', '.join(tasks)}"
            )
    try:
        s.store.get_run(name)
    except RunNotFound as e:
        raise RunNotFound(
            f"no checkpoints for run {name!r} in {store.url}, and {str(e)[0].lower()}{str(e)[1:]}"
        ) from None


# ---------------------------------------------------------------------- show
@checkpoints.command()
@click.argument("name")
@click.argument("task")
@click.argument("seq", type=click.IntRange(min=0), required=False)
@click.option("--json", "as_json", is_flag=True, help="Manifest and verification as JSON.")
@common
def show(
    name: str,
    task: str,
    seq: int | None,
    as_json: bool,
    home: str | None,
    config_path: str | None,
    hot_dir: str | None,
    cold_url: str | None,
) -> None:
    """One checkpoint (default: the newest) of TASK: manifest, files, and whether each verifies."""
    from stormproof.checkpoints.tiers import TieredStore

    with opened(home, config_path, hot_dir, cold_url, name) as (s, store):
        infos = store.list(name, task)
        if not infos:
            _no_checkpoints(s, store, name, task)
            raise StormproofError(
                f"no checkpoints of task {task!r} in run {name!r} in {store.url}; "
                f"`stormproof checkpoints list {name}` shows what there is"
            )
        if seq is None:
            seq = infos[0].seq
        elif seq not in {i.seq for i in infos}:
            have = ", ".join(str(q) for q in sorted({i.seq for i in infos}, reverse=True))
            raise StormproofError(
                f"task {task!r} of run {name!r} has no checkpoint {seq} (it has: {have})"
            )
        checks = (
            store.verify_all(name, task, seq)
            if isinstance(store, TieredStore)
            else [store.verify(name, task, seq)]
        )
        checks = [c for c in checks if c.problem != "checkpoint not found"] or checks
        if as_json:
            click.echo(json.dumps([_verification_json(c) for c in checks], indent=2))
        else:
            for c in checks:
                _print_verification(c, store.url)
            good = next((c for c in checks if c.ok), None)
            if good is not None and not all(c.ok for c in checks):
                out.print(f"  a restore uses the {good.tier} copy, which verifies")
        if not all(c.ok for c in checks):
            sys.exit(1)  # a damaged copy is news, even where another one verifies


def _verification_json(c: Verification) -> dict[str, Any]:
    return {
        "run": c.run,
        "task": c.task,
        "seq": c.seq,
        "tier": c.tier,
        "ok": c.ok,
        "problems": list(c.problems),
        "manifest": c.manifest.to_json() if c.manifest else None,
        "files": [
            {"path": f.path, "size": f.size, "sha256": f.sha256, "ok": f.problem is None}
            | ({"problem": f.problem} if f.problem else {})
            for f in c.files
        ],
    }


def _print_verification(c: Verification, url: str) -> None:
    where = f"{c.run}/{c.task}/{c.seq}" + (f" ({c.tier})" if c.tier else "")
    out.print(f"[bold]checkpoint {escape(where)}[/] in {escape(url)}")
    m = c.manifest
    if m is not None:
        out.print(f"  attempt {m.attempt} · created {_when(m.created_at)} · ", end="")
        out.print(f"{len(m.files)} file(s), {_size(m.total_bytes)}")
        table = Table(show_edge=False, box=None, pad_edge=False)
        for col in ("file", "size", "sha256", "check"):
            table.add_column(col, justify="right" if col == "size" else "left")
        for f in c.files:
            verdict = "[green]ok[/]" if f.problem is None else f"[red]{escape(f.problem)}[/]"
            table.add_row(escape(f.path), _size(f.size), f.sha256[:16] + "…", verdict)
        out.print(table)
    if c.ok:
        out.print("  [green]verified[/]: every file matches its size and sha256")
    else:
        out.print(f"  [red]does not verify[/]: {escape(c.problem or '')}")


# ---------------------------------------------------------------------- prune
@checkpoints.command()
@click.argument("name", required=False)
@click.option("--task", help="Only this task's checkpoints.")
@click.option("--older-than", "older", metavar="DURATION", help="Remove those older, like 7d.")
@click.option("--keep-last", type=click.IntRange(min=0), help="Keep the newest K per task.")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="What was removed, as JSON.")
@common
def prune(
    name: str | None,
    task: str | None,
    older: str | None,
    keep_last: int | None,
    dry_run: bool,
    as_json: bool,
    home: str | None,
    config_path: str | None,
    hot_dir: str | None,
    cold_url: str | None,
) -> None:
    """Remove old checkpoints: of run NAME (all runs with --older-than and no NAME)."""
    if (older is None) == (keep_last is None):
        raise click.UsageError("give exactly one of --older-than DURATION or --keep-last K")
    if keep_last is not None and name is None:
        raise click.UsageError("--keep-last needs the run NAME")
    if task is not None and name is None:
        raise click.UsageError("--task needs the run NAME")
    age_s = _duration(older) if older is not None else None
    with opened(home, config_path, hot_dir, cold_url, name) as (s, store):
        if name is not None:
            infos = store.list(name, task)
            if not infos:
                _no_checkpoints(s, store, name, task)
        else:
            infos = store.list_all()
        if age_s is not None:
            doomed = _older(infos, time.time() - age_s)
        else:
            doomed = _beyond_last(infos, keep_last or 0)
        if not dry_run:
            doomed = _remove(store, doomed, name, task, age_s, keep_last)
        _say_pruned(doomed, dry_run, as_json, store.url)


def _duration(text: str) -> float:
    from stormproof.spec.model import parse_duration

    try:
        return parse_duration(text)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--older-than") from None


def _older(infos: Sequence[CheckpointInfo], cutoff: float) -> list[tuple[str, str, int]]:
    from stormproof.checkpoints.base import older_than

    return sorted({(i.run, i.task, i.seq) for i in older_than(infos, cutoff)})


def _beyond_last(infos: Sequence[CheckpointInfo], keep: int) -> list[tuple[str, str, int]]:
    from stormproof.checkpoints.base import seqs_to_prune

    doomed: set[tuple[str, str, int]] = set()
    for run, task in sorted({(i.run, i.task) for i in infos}):
        mine = [i for i in infos if i.run == run and i.task == task]
        doomed.update((run, task, seq) for seq in seqs_to_prune(mine, keep))
    return sorted(doomed)


def _remove(
    store: FsspecStore | TieredStore,
    planned: list[tuple[str, str, int]],
    name: str | None,
    task: str | None,
    age_s: float | None,
    keep_last: int | None,
) -> list[tuple[str, str, int]]:
    """Do it through the store's own rules (they re-read the store: what it removed counts)."""
    if age_s is not None and task is None:
        return store.prune_older_than(age_s, time.time(), name)
    if age_s is not None:  # one task only: prune_older_than works on whole runs
        return [(run, t, seq) for run, t, seq in planned if store.delete(run, t, seq)]
    assert name is not None and keep_last is not None
    tasks = sorted({t for _, t, _ in planned}) if task is None else [task]
    return [(name, t, seq) for t in tasks for seq in store.prune(name, t, keep_last)]


def _say_pruned(
    doomed: Sequence[tuple[str, str, int]], dry_run: bool, as_json: bool, url: str
) -> None:
    if as_json:
        rows = [{"run": r, "task": t, "seq": q} for r, t, q in doomed]
        click.echo(json.dumps({"dry_run": dry_run, "removed": rows}, indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    out.print(f"{verb} {len(doomed)} checkpoint(s) from {escape(url)}")
    for run, task, seq in doomed:
        out.print(f"  {escape(run)}/{escape(task)}/{seq}")


# ---------------------------------------------------------------------- formatting
def _when(ts: float | None, seconds: bool = True) -> str:
    shape = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return datetime.fromtimestamp(ts).strftime(shape) if ts else "-"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns
