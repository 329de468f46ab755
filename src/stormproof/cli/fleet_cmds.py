"""``stormproof fleet`` and ``stormproof interrupt``: look at a run's instances, change them.

Both talk to the run's orchestrator through the store's request inbox, the
way ``cancel`` does: the orchestrator is the only writer of the run's log, so
a scale or an interruption becomes an event there, in order, and is replayed
on resume like everything else. They check the request against the run
first, so a typo is an error here and never a silent no-op there.
"""

from __future__ import annotations

import difflib
import json
import time

import click
from rich.markup import escape
from rich.table import Table

from stormproof.errors import StormproofError
from stormproof.runtime.home import check_run_name
from stormproof.runtime.runs import load_context
from stormproof.spec.model import parse_duration

from .render import jobs_line, run_view
from .session import Session, common, out, session


def _hint(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _require_driven(s: Session, name: str, what: str) -> None:
    if not s.store.is_driven(name):
        raise StormproofError(
            f"run {name!r} has no orchestrator running, so there is nothing to {what}; "
            f"start it with `stormproof resume {name}` (or `--detach` a new run) first"
        )


def _scale_arg(text: str) -> tuple[str, int]:
    pool, sep, count = text.partition("=")
    if not sep or not pool or not count.strip().isdigit():
        raise StormproofError(
            f"--scale {text!r}: expected POOL=N with a whole number N >= 0, like spot-c5=4"
        )
    return pool.strip(), int(count)


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Instances as JSON.")
@click.option(
    "--scale", "scales", multiple=True, metavar="POOL=N", help="Ask for N instances in POOL."
)
@common
def fleet(
    name: str, as_json: bool, scales: tuple[str, ...], home: str | None, config_path: str | None
) -> None:
    """Show the run's instances (pool, market, state, what runs where), or scale a pool."""
    with session(home, config_path) as s:
        check_run_name(name)
        if scales:
            ctx = load_context(s.store, name)
            pools = [p.name for p in ctx.pools]
            wanted = [_scale_arg(text) for text in scales]
            delegated = {p.name for p in ctx.pools if p.delegated}
            for pool, _count in wanted:
                if pool not in pools:
                    raise StormproofError(
                        f"--scale {pool}=…: run {name!r} has no pool {pool!r}"
                        f"{_hint(pool, pools)}; its pools: {', '.join(pools)}"
                    )
                if pool in delegated:
                    raise StormproofError(
                        f"--scale {pool}=…: pool {pool!r} of run {name!r} is placed by the "
                        f"{ctx.executor} batch system, whose nodes stormproof does not launch; "
                        "size it there (or bound the run's jobs in it with pools[].max_jobs)"
                    )
            _require_driven(s, name, "scale")
            for pool, count in wanted:
                payload = json.dumps({"pool": pool, "count": count})
                s.store.post_request(name, f"scale:{payload}", time.time())
                out.print(f"asked {escape(name)} for {count} instance(s) in {escape(pool)}")
            return
        view = run_view(s, name)
        instances = list(view.instances.values())
        if as_json:
            data = [
                {
                    "id": i.id,
                    "pool": i.pool,
                    "market": i.market,
                    "state": i.state,
                    "attempts": i.attempts,
                }
                for i in instances
            ]
            click.echo(json.dumps(data, indent=2))
            return
        table = Table(title=f"fleet of {escape(name)}", title_justify="left")
        for col in ("instance", "pool", "market", "state", "attempts", "why"):
            table.add_column(col, overflow="fold")
        for i in instances:
            table.add_row(
                escape(i.id),
                escape(i.pool),
                i.market,
                i.state,
                escape(", ".join(i.attempts)) or "-",
                escape(i.reason),
            )
        out.print(table)
        for pool, b in sorted(view.breakers.items()):
            out.print(f"breaker {escape(pool)}: {b['state']} — {escape(b['reason'])}")
        line = jobs_line(view)
        if line:
            out.print(line)


@click.command()
@click.argument("name")
@click.option("--instance", "instance_id", required=True, help="The instance to take away.")
@click.option(
    "--notice",
    default="120s",
    show_default=True,
    help="Warning before it goes (AWS gives 2 min, GCP and Azure 30 s).",
)
@click.option("--lost", is_flag=True, help="No notice at all: the instance just vanishes.")
@common
def interrupt(
    name: str,
    instance_id: str,
    notice: str,
    lost: bool,
    home: str | None,
    config_path: str | None,
) -> None:
    """Simulate a spot interruption of one instance of a running run (the recipe's drill).

    The attempts there get SIGTERM, the notice to commit a checkpoint, then
    SIGKILL; the instance is removed and the tasks resume elsewhere.
    """
    with session(home, config_path) as s:
        check_run_name(name)
        try:
            notice_s = parse_duration(notice)
        except ValueError as e:
            raise StormproofError(f"--notice {notice!r}: {e}") from None
        view = run_view(s, name)
        usable = [i.id for i in view.instances.values() if i.state in ("up", "draining")]
        inst = view.instances.get(instance_id)
        if inst is None or inst.id not in usable:
            state = f" is {inst.state}" if inst is not None else " does not exist"
            known = ", ".join(usable) or "none"
            raise StormproofError(
                f"--instance {instance_id!r}{state} in run {name!r}"
                f"{_hint(instance_id, usable)}; instances that can be interrupted: {known} "
                f"(see `stormproof fleet {name}`)"
            )
        _require_driven(s, name, "interrupt")
        if lost:
            s.store.post_request(name, "lose:" + json.dumps({"instance": inst.id}), time.time())
            out.print(f"{escape(inst.id)} of {escape(name)} will vanish now (Node.Lost)")
            return
        payload = json.dumps({"instance": inst.id, "notice_s": notice_s})
        s.store.post_request(name, f"interrupt:{payload}", time.time())
        out.print(
            f"{escape(inst.id)} of {escape(name)} gets an interruption notice: "
            f"reclaimed in {notice_s:g}s"
        )
