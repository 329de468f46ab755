"""The Slurm executor's options, as a run records them (from ``stormproof.yaml``'s ``slurm:``).

A run keeps its executor options in its metadata, so ``resume`` submits the same way even if
``stormproof.yaml`` changed. ``config.SlurmConfig`` validates what a user writes; this is the
executor's typed view of the dict that was recorded.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stormproof.executors.base import AttemptJob
from stormproof.executors.slurm.script import cpus_per_task

DEFAULT_POLL_INTERVAL_S = 2.0
DEFAULT_MAX_POLL_INTERVAL_S = 30.0
DEFAULT_SUBMIT_PARALLEL = 8
DEFAULT_TIME_MARGIN_S = 60.0


@dataclass(frozen=True)
class SlurmOptions:
    #: pool name → partition (a pool without an entry submits to the partition of its name).
    partitions: Mapping[str, str] = field(default_factory=dict)
    account: str | None = None
    qos: str | None = None
    #: Added to every ``sbatch`` (``--constraint=...``, ``--reservation=...``).
    sbatch_args: tuple[str, ...] = ()
    #: Added to the ``srun`` that runs the command (``--mpi=pmix``, ``--ntasks-per-node=4``).
    srun_args: tuple[str, ...] = ()
    #: First and longest pause between two ``squeue`` calls (it grows while nothing happens).
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    max_poll_interval_s: float = DEFAULT_MAX_POLL_INTERVAL_S
    #: ``sbatch`` calls in flight at once.
    submit_parallel: int = DEFAULT_SUBMIT_PARALLEL
    #: Slurm's time limit is the task's timeout plus this (or 10 % of it if more): a backstop
    #: behind the core's own timer, which kills first and gives the task its grace.
    time_margin_s: float = DEFAULT_TIME_MARGIN_S
    #: ``SLURM_CONF`` for every Slurm command (default: the environment's, or Slurm's default).
    slurm_conf: str | None = None

    @classmethod
    def from_dict(cls, options: Mapping[str, Any] | None) -> SlurmOptions:
        opts = dict(options or {})
        return cls(
            partitions={str(k): str(v) for k, v in (opts.get("partitions") or {}).items()},
            account=opts.get("account") or None,
            qos=opts.get("qos") or None,
            sbatch_args=tuple(str(a) for a in opts.get("sbatch_args") or ()),
            srun_args=tuple(str(a) for a in opts.get("srun_args") or ()),
            poll_interval_s=float(opts.get("poll_interval_s", DEFAULT_POLL_INTERVAL_S)),
            max_poll_interval_s=float(opts.get("max_poll_interval_s", DEFAULT_MAX_POLL_INTERVAL_S)),
            submit_parallel=max(1, int(opts.get("submit_parallel", DEFAULT_SUBMIT_PARALLEL))),
            time_margin_s=float(opts.get("time_margin_s", DEFAULT_TIME_MARGIN_S)),
            slurm_conf=opts.get("slurm_conf") or None,
        )

    def partition(self, pool: str) -> str:
        return self.partitions.get(pool, pool)

    def sbatch_args_for(self, job: AttemptJob, comment: str) -> list[str]:
        """Everything ``sbatch`` is told about one attempt, but its script."""
        nodes = max(1, job.nodes)
        attempt_dir = Path(job.attempt_dir).resolve()
        args = [
            f"--job-name={job.attempt_id}",
            f"--comment={comment}",
            f"--nodes={nodes}",
            "--ntasks-per-node=1",
            f"--cpus-per-task={cpus_per_task(job.vcpus)}",
            f"--mem={max(1, job.memory_mib)}M",
            "--no-requeue",
            "--open-mode=append",
            f"--output={attempt_dir / 'stdout.log'}",
            f"--error={attempt_dir / 'stderr.log'}",
            f"--chdir={attempt_dir / 'work'}",
        ]
        if job.pool:
            args.append(f"--partition={self.partition(job.pool)}")
        if job.gpus:
            args.append(f"--gres=gpu:{job.gpus}")
        if job.timeout_s is not None:
            args.append(f"--time={time_limit(job.timeout_s, self.time_margin_s)}")
        if self.account:
            args.append(f"--account={self.account}")
        if self.qos:
            args.append(f"--qos={self.qos}")
        return [*args, *self.sbatch_args]


def time_limit(timeout_s: float, margin_s: float) -> str:
    """``--time`` for a task's timeout: ``D-HH:MM:SS``, the margin added (Slurm rounds it up
    to minutes, and enforces it up to a minute late)."""
    total = math.ceil(timeout_s + max(margin_s, 0.1 * timeout_s))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{seconds:02d}"


def run_comment(run_dir: Path) -> str:
    """The ``--comment`` every job of one run carries, and how ``squeue`` output is filtered:
    the run's name and a digest of its directory (two homes may hold runs of one name)."""
    digest = hashlib.sha1(str(run_dir).encode()).hexdigest()[:10]
    return f"stormproof:{run_dir.name}:{digest}"
