"""What every command needs: the home, the configuration, the store, an executor.

Backends are looked up by entry point (``stormproof.executors``,
``stormproof.stores``) so a third party adds one by packaging it, without
touching stormproof; a missing name is a ``ConfigError`` that lists the
names that exist.
"""

from __future__ import annotations

import difflib
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from stormproof.config import Config, load_config
from stormproof.errors import ConfigError, StormproofError
from stormproof.executors.base import Executor, delegates_placement, describe_pools
from stormproof.runtime.home import Home, HomeUnusable
from stormproof.store.base import EventLog, LeaseHolder

F = TypeVar("F", bound=Callable[..., Any])
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

if TYPE_CHECKING:
    from stormproof.capacity.base import Fleet
    from stormproof.checkpoints.fsspec_store import FsspecStore
    from stormproof.checkpoints.tiers import TieredStore
    from stormproof.runtime.runs import RunContext
    from stormproof.spec.model import WorkflowSpec

_BUILTIN_EXECUTORS = {"local": "stormproof.executors.local:LocalExecutor"}
_BUILTIN_STORES = {
    "sqlite": "stormproof.store.sqlite:SQLiteEventLog",
    "postgresql": "stormproof.store.postgres:PostgresEventLog",
    "postgres": "stormproof.store.postgres:PostgresEventLog",  # libpq takes both schemes
}
#: What to install for a built-in backend whose optional dependency is missing.
_EXTRAS = {"postgresql": "stormproof[postgres]", "postgres": "stormproof[postgres]"}


def _load(group: str, name: str, builtin: dict[str, str], what: str) -> Any:
    if name in builtin:  # ours are registered too; reading every entry point costs ~10 ms
        module, _, attr = builtin[name].partition(":")
        return getattr(__import__(module, fromlist=[attr]), attr)
    found = {ep.name: ep for ep in entry_points(group=group)}
    if name in found:
        return found[name].load()
    names = sorted(set(found) | set(builtin))
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        f"{what} {name!r} is not installed{hint}; available: {', '.join(names)}. "
        f"Set `{what}:` in stormproof.yaml or STORMPROOF_{what.upper()}."
    )


def _load_store(kind: str) -> Any:
    try:
        return _load("stormproof.stores", kind, _BUILTIN_STORES, "store")
    except ModuleNotFoundError as exc:
        package = _EXTRAS.get(kind, exc.name or "its dependencies")
        raise ConfigError(
            f"store {kind!r} needs the Python package {exc.name!r}, which is not installed: "
            f"pip install '{package}'"
        ) from None


@dataclass
class Session:
    cwd: Path
    config: Config
    home: Home
    #: A command that only reads (``status``, ``history``, ``logs``): the home is not
    #: created, and one that cannot be written is read as it is.
    read_only: bool = False
    _store: EventLog | None = None
    _writable: bool = True

    @classmethod
    def open(cls, home: str | None, config_path: str | None, read_only: bool = False) -> Session:
        cwd = Path.cwd()
        config = load_config(Path(config_path) if config_path else None, cwd, os.environ)
        root = Path(home) if home else config.home_dir(cwd)
        if "\0" in str(root):
            raise HomeUnusable(f"stormproof home {str(root)!r}: a path cannot hold a NUL byte")
        return cls(cwd, config, Home(root.resolve()), read_only)

    @property
    def store(self) -> EventLog:
        if self._store is None:
            kind = self.config.store
            if "://" in kind:
                kind = kind.split("://", 1)[0].split("+", 1)[0]
            cls = _load_store(kind)
            if kind == "sqlite":
                self._writable = self.home.check(write=not self.read_only)
                self._store = cls(self.home.db_path, read_only=not self._writable)
            else:
                if not self.read_only:
                    self.home.check(write=True)
                if self.config.lease is not None:
                    self._store = cls(self.config.store, lease_s=self.config.lease)
                else:
                    self._store = cls(self.config.store)
        return self._store

    def executor_class(self, name: str) -> type:
        """The executor registered as ``name`` (``ConfigError`` listing those that are)."""
        cls: type = _load("stormproof.executors", name, _BUILTIN_EXECUTORS, "executor")
        return cls

    def executor_options(self, config: Config | None = None) -> dict[str, Any]:
        """What the configured executor is built with (a run records it): its own section
        of stormproof.yaml, for executors that have one (``slurm:``, ``aws:``); the local
        executor has none."""
        return (config if config is not None else self.config).executor_options()

    def placing_config(self, config: Config | None = None) -> Config:
        """``config`` (default: the session's) with its pools as its executor sees them:
        all delegated when the executor's batch system places (``describe_pools`` may fill
        their node shape and count); config that does nothing there is an error now."""
        config = config if config is not None else self.config
        cls = self.executor_class(config.executor)
        options = self.executor_options(config)
        return config.for_executor(
            config.executor,
            delegates_placement(cls),
            lambda pools: describe_pools(cls, pools, options),
        )

    def workflow_for_executor(
        self, spec: WorkflowSpec, config: Config | None = None
    ) -> tuple[WorkflowSpec, list[str]]:
        """The workflow as the executor can run it, and what it changed (for ``plan``): an
        executor's optional ``adapt_workflow`` (AWS Batch runs multi-node jobs on on-demand
        only). Without the hook, the workflow as it is."""
        cls = self.executor_class((config if config is not None else self.config).executor)
        hook = getattr(cls, "adapt_workflow", None)
        if hook is None:
            return spec, []
        adapted, notes = hook(spec)
        return adapted, list(notes)

    @property
    def writable(self) -> bool:
        """Whether the store was opened for writing (a read-only home is read as it is)."""
        _ = self.store
        return self._writable

    @property
    def store_place(self) -> str:
        """Where the runs are, for messages: the home, or a shared store's server (no secrets)."""
        return str(getattr(self.store, "server", self.home.root))

    def executor(self, name: str, run: str, options: dict[str, Any]) -> Executor:
        cls = self.executor_class(name)
        self.home.check(write=True)
        run_dir = self.home.make_run_dir(run)
        executor: Executor = cls(run_dir, options)
        return executor

    def fleet(self, ctx: RunContext, executor: Executor) -> Fleet | None:
        """The run's fleet when it launches its own instances (``capacity: aws``: EC2, found
        again by their tags on resume); None: the driver's local fleet."""
        if ctx.capacity != "aws":
            return None
        from stormproof.capacity.aws import open_fleet

        return open_fleet(ctx.name, ctx.executor_options, executor)

    def check_workflow(self, spec: WorkflowSpec, config: Config) -> None:
        """What only the executor's system can refuse in a workflow before a run starts (a
        task past every Slurm partition's time limit): its optional ``check_workflow``."""
        cls = self.executor_class(config.executor)
        check = getattr(cls, "check_workflow", None)
        if check is not None:
            check(spec, config.pool_defs(), self.executor_options(config))

    def checkpoint_settings(self) -> dict[str, Any]:
        """The checkpoint tiers as a run records them: absolute paths, so resume finds them."""
        tiers = self.config.checkpoint_tiers

        def where(value: str | None) -> str | None:
            if not value:
                return None
            if "://" in value and not value.startswith("file://"):
                return value
            return str((self.cwd / Path(value.removeprefix("file://")).expanduser()).resolve())

        return {
            "warm": where(self.config.checkpoints) or str(self.home.root / "checkpoints"),
            "hot": where(tiers.hot),
            "cold": where(tiers.cold),
            "cold_after_s": tiers.cold_after,
        }

    def pool_sources(self) -> list[dict[str, Any]]:
        """What interrupts each pool, as a run records it; a bad trace file is an error now.

        Nothing, when a batch system places (its pools' ``interruption_rate`` and ``trace``
        tell ``plan`` and ``simulate`` what to expect; a real run gets the real thing).
        """
        from stormproof.capacity.local import PoolSource
        from stormproof.traces import find_trace, load_trace

        if self.config.capacity == "aws":
            return []  # EC2 itself interrupts (its warnings: capacity.aws, aws.interruptions)
        if delegates_placement(self.executor_class(self.config.executor)):
            return []
        base = self.config.source.parent if self.config.source is not None else self.cwd
        out = []
        for i, pool in enumerate(self.config.pools):
            trace = None
            if pool.trace:
                path = find_trace(pool.trace, base, f"pools[{i}].trace")
                load_trace(path)  # malformed: a clear error before anything starts
                trace = str(path)
            if trace or pool.interruption_rate:
                source = PoolSource(
                    pool.name,
                    pool.notice,
                    pool.interruption_rate,
                    trace,
                    pool.time_scale,
                    pool.trace_offset,
                )
                out.append(source.to_dict())
        return out

    def checkpoint_store(self, settings: dict[str, Any]) -> FsspecStore | TieredStore:
        """The run's checkpoint store (tiered when hot or cold are set); no I/O until used."""
        from stormproof.checkpoints.open import open_checkpoint_store
        from stormproof.checkpoints.tiers import TieredStore

        warm = open_checkpoint_store(settings["warm"], self.home.root)
        if not settings.get("hot") and not settings.get("cold"):
            return warm
        cold = (
            open_checkpoint_store(settings["cold"], self.home.root, tier="cold")
            if settings.get("cold")
            else None
        )
        hot = Path(settings["hot"]) if settings.get("hot") else None
        return TieredStore(hot, warm, cold, settings.get("cold_after_s"))

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


class FilePath(click.Path):
    """``click.Path`` that refuses a NUL byte as bad usage (click's own lets a ``ValueError``
    out of ``os.stat``; found by the fuzz test)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and "\0" in value:
            self.fail(f"{value!r}: a path cannot hold a NUL byte", param, ctx)
        return super().convert(value, param, ctx)


def common(fn: F) -> F:
    fn = click.option(
        "--home",
        envvar="STORMPROOF_HOME",
        metavar="DIR",
        help="Where runs live (default ./.stormproof, or STORMPROOF_HOME).",
    )(fn)
    fn = click.option(
        "--config",
        "config_path",
        metavar="FILE",
        help="Configuration file (default ./stormproof.yaml if present).",
    )(fn)
    return fn


@contextmanager
def session(
    home: str | None, config_path: str | None, read_only: bool = False
) -> Iterator[Session]:
    """Open what a command needs; turn every user error into one message and exit 2."""
    s: Session | None = None
    try:
        s = Session.open(home, config_path, read_only)
        yield s
    except StormproofError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", markup=True, highlight=False)
        sys.exit(e.exit_code)
    finally:
        if s is not None:
            s.close()


def say_lease_wait(run: str) -> Callable[[LeaseHolder], None]:
    """What an orchestrator that waits for a run's lease prints, each time the holder changes."""

    def say(holder: LeaseHolder) -> None:
        who = holder.describe(socket.gethostname())
        err.print(
            f"run {run} is being driven by {who} ({holder.lapse()}); "
            "waiting to take it over (Ctrl-C to leave)…",
            markup=False,
        )

    return say
