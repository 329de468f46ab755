"""Where a run's files live under the stormproof home (``./.stormproof`` by default).

::

    .stormproof/
      stormproof.db                      the event log of every run (SQLite, WAL)
      runs/<run>/
        data/                            shared by all tasks of the run (STORMPROOF_DATA_DIR)
        orchestrator.log                 output of a detached driver
        tasks/<task>/attempt-<n>/
          work/                          the attempt's cwd, fresh for every attempt
          stdout.log  stderr.log
        local-executor/                  the local executor's shim: its journal (launches
                                         and exit statuses), lock, socket and log

Run and task names are restricted to a safe alphabet before they get here,
so nothing a workflow says can escape these directories.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from stormproof.errors import StormproofError

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_run_name(name: str) -> str:
    if not RUN_NAME.match(name):
        raise StormproofError(
            f"run name {name!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def default_run_name(workflow_name: str, now: float | None = None) -> str:
    """``<workflow-name-as-slug>-YYYYmmdd-HHMMSS``, like the recipe's execution names."""
    slug = re.sub(r"[^a-z0-9]+", "-", workflow_name.lower()).strip("-")[:60] or "run"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{slug}-{stamp}"


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / "stormproof.db"

    def run_dir(self, run: str) -> Path:
        return self.root / "runs" / check_run_name(run)

    def data_dir(self, run: str) -> Path:
        return self.run_dir(run) / "data"

    def tasks_dir(self, run: str) -> Path:
        return self.run_dir(run) / "tasks"

    def attempt_dir(self, run: str, task_id: str, number: int) -> Path:
        return attempt_dir(self.tasks_dir(run), task_id, number)

    def attempt_numbers(self, run: str, task_id: str) -> list[int]:
        """The attempts of a task that have a directory, in order."""
        folder = self.tasks_dir(run) / task_id
        if not folder.is_dir():
            return []
        names = (p.name for p in folder.iterdir() if p.is_dir())
        return sorted(int(n[8:]) for n in names if n.startswith("attempt-") and n[8:].isdigit())


def attempt_dir(tasks_dir: Path, task_id: str, number: int) -> Path:
    """The one place that says how an attempt's directory is named (the driver's hot path
    calls it with a precomputed ``tasks_dir``)."""
    return tasks_dir / task_id / f"attempt-{number}"
