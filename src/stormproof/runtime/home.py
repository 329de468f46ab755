"""Where a run's files live under the stormproof home (``./.stormproof`` by default).

::

    .stormproof/
      stormproof.db                      the event log of every run (SQLite, WAL)
      runs/<run>/
        data/                            shared by all tasks of the run (STORMPROOF_DATA_DIR)
        orchestrator.log                 output of a detached driver
        tasks/<task>/attempt-<n>/
          work/                          the attempt's cwd, fresh for every attempt
          stdout.log  stderr.log  exit_status

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

    def attempt_dir(self, run: str, task_id: str, number: int) -> Path:
        return self.run_dir(run) / "tasks" / task_id / f"attempt-{number}"
