"""An attempt's batch script, and the status files it leaves on the shared filesystem.

Slurm says where a job is; only the job itself can say what its command returned, and only
once. So every attempt runs through a small POSIX ``sh`` script written beside its logs
(``job.sh``) that, on the node:

1. **claims** the attempt: it creates ``<status>/<name>.claim`` (its job id) exclusively
   (``set -C``: ``O_EXCL``, atomic also on NFS, Lustre and GPFS; a shell builtin, no process
   to start). A job that finds the claim taken does not run the command: that is a second job for
   the same attempt (a duplicate left by an orchestrator killed while ``sbatch`` was in
   flight) or the same job started again by Slurm (after slurmctld lost its state, see
   ``docs/slurm.md``). Slurm never runs an attempt twice: the core decides every retry;
2. writes ``<name>.S`` (job id and node list): the attempt started, and where;
3. runs the command. On a spot pool (a preemptible partition) and on several nodes it runs as
   an ``srun`` step, so that Slurm's own signals reach it at once: a preemption's SIGTERM at
   the start of the grace time (the batch script itself gets it only at the end),
   ``scancel --signal`` for a kill's grace or a checkpoint request. Inside the step, a
   one-line ``sh`` around the command writes ``<name>.X`` (its exit code) once the command has
   ended. The step writes it, not the batch script after ``srun``, because ``srun`` is no
   witness: when a node fails it prints "Node failure" and returns 0 (Slurm 22.05). That
   ``sh`` catches the signals Slurm sends the whole step (TERM, USR1, ...) so that it outlives
   the command and reports how it ended (143 after a SIGTERM it did not handle); the command
   keeps the default handlers. On several nodes each rank writes ``<name>.r<rank>`` and the
   batch script turns them into ``<name>.X``: the first non-zero code, or 0 once every rank
   has said 0.

   On an on-demand pool a single-node command runs in the batch script itself: a step costs
   a controller call and 0.1–0.2 s per job, and buys nothing where nobody preempts. There the
   script catches the same signals as the step's ``sh`` (stormproof sends them to the whole
   job with ``scancel --full --signal``, so they reach the command directly), waits for the
   command and writes ``<name>.X``;
4. if the command is killed outright (SIGKILL at the end of a grace, a node gone), nothing is
   written, and Slurm's state tells what happened.

Each file is one line, written by one ``echo``; a reader takes a file without its final
newline for one not written yet (a rename per file would cost a process per job).
``<name>`` is the attempt id with ``/`` as ``@`` (task ids never contain ``@``).

The status directory is the executor's fast path: one directory listing per poll tells which
attempts started and ended, without asking slurmctld anything. Slurm's own view (``squeue``)
is needed for what the job could not write: preemption, a lost node, a cancellation by
someone else, a time limit.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from stormproof.executors.base import AttemptJob

SCRIPT_NAME = "job.sh"
STARTED = ".S"
EXITED = ".X"
CLAIM = ".claim"
#: The status file's path, for the ``sh`` around the command inside the step.
STATUS_ENV = "STORMPROOF_SLURM_STATUS"
#: Signals Slurm may send a step that must not end the ``sh`` before its command.
_CAUGHT = "HUP INT QUIT USR1 USR2 TERM ALRM"


def _in_step(nodes: int) -> str:
    """The ``sh`` inside the step: run the command, write its code (module docstring, 4)."""
    target = '"$' + STATUS_ENV + ('.X"' if nodes == 1 else '.r$SLURM_PROCID"')
    return f'trap : {_CAUGHT}; "$@"; c=$?; f={target}; echo "$c" >"$f"; exit "$c"'


def status_name(attempt_id: str) -> str:
    """``task/3`` → ``task@3``: the attempt's file name in the status directory."""
    return attempt_id.replace("/", "@")


def attempt_of(file_name: str) -> tuple[str, str] | None:
    """``task@3.X`` → ``("task/3", ".X")``; ``None`` for anything else (claims, ranks)."""
    stem, dot, kind = file_name.rpartition(".")
    if not dot or "@" not in stem or f".{kind}" not in (STARTED, EXITED):
        return None
    task, _, number = stem.rpartition("@")
    return f"{task}/{number}", f".{kind}"


def script_text(
    job: AttemptJob,
    status_dir: Path,
    srun_args: Sequence[str] = (),
    cpus_per_task: int = 1,
) -> str:
    """The batch script of ``job``; see the module docstring for what it does and why."""
    status = shlex.quote(str(status_dir / status_name(job.attempt_id)))
    aid = job.attempt_id
    lines = [
        "#!/bin/sh",
        f"# stormproof: attempt {aid} of run {job.run} (written by the Slurm executor; "
        "see docs/slurm.md)",
        f"s={status}",
        "set -C",
        'if ! { echo "$SLURM_JOB_ID" >"$s.claim"; } 2>/dev/null; then',
        f'  echo "stormproof: attempt {aid} was started before (by job $(cat "$s.claim" '
        '2>/dev/null)); job $SLURM_JOB_ID does not run it again" >&2',
        "  exit 0",
        "fi",
        "set +C",
        'echo "$SLURM_JOB_ID $SLURM_JOB_NODELIST" >"$s.S"',
    ]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in sorted(job.env.items())]
    lines.append(f'export {STATUS_ENV}="$s"')
    command = _command(job.command)
    if not runs_as_step(job):
        lines += _direct(" ".join(command))
        return "\n".join(lines) + "\n"
    lines.append(" ".join([*_srun(job, srun_args, cpus_per_task), *command]))
    lines.append("code=$?")
    nodes = max(1, job.nodes)
    if nodes > 1:
        lines += _gather_ranks(nodes)
    lines.append('exit "$code"')
    return "\n".join(lines) + "\n"


def runs_as_step(job: AttemptJob) -> bool:
    """A step where Slurm may preempt (a spot pool) or a job spans nodes; else directly."""
    return job.nodes > 1 or job.market == "spot"


def _direct(command: str) -> list[str]:
    """Batch script lines running ``command`` and writing its code (module docstring, 3)."""
    return [f"trap : {_CAUGHT}", command, "code=$?", 'echo "$code" >"$s.X"', 'exit "$code"']


def _gather_ranks(nodes: int) -> list[str]:
    """Batch script lines: every rank's code into ``.X`` (if none is missing, or one failed)."""
    return [
        "x=",
        "all=1",
        f"for r in $(seq 0 {nodes - 1}); do",
        '  if [ -f "$s.r$r" ]; then',
        '    c=$(cat "$s.r$r")',
        '    if [ -z "$x" ] && [ "$c" != 0 ]; then x=$c; fi',
        "  else all=0; fi",
        "done",
        'if [ -z "$x" ] && [ "$all" = 1 ]; then x=0; fi',
        'if [ -n "$x" ]; then echo "$x" >"$s.X"; fi',
    ]


def _srun(job: AttemptJob, srun_args: Sequence[str], cpus_per_task: int) -> list[str]:
    """One task per node, with the job's CPUs (22.05's srun does not inherit them)."""
    nodes = max(1, job.nodes)
    args = [
        "srun",
        "--quiet",
        f"--nodes={nodes}",
        f"--ntasks={nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={cpus_per_task}",
    ]
    if nodes > 1:
        args.append("--kill-on-bad-exit=1")
    args += [shlex.quote(a) for a in srun_args]
    return [*args, "--", "/bin/sh", "-c", shlex.quote(_in_step(nodes)), "stormproof-step"]


def _command(command: Sequence[str] | str) -> list[str]:
    """A list runs as it is; a string under ``sh -c``, as on the local executor."""
    if isinstance(command, str):
        return ["/bin/sh", "-c", shlex.quote(command)]
    return [shlex.quote(str(part)) for part in command]


def cpus_per_task(vcpus: float) -> int:
    """Slurm counts whole CPUs: a task asking 0.5 vCPU gets one."""
    return max(1, math.ceil(vcpus - 1e-9))


def write_script(job: AttemptJob, text: str) -> str:
    """Write the script beside the attempt's logs; return its path."""
    path = os.path.join(os.path.abspath(job.attempt_dir), SCRIPT_NAME)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o755)
    return path


# ---------------------------------------------------------------------- reading status files


def read_started(path: Path) -> tuple[str, str, float] | None:
    """``(job id, node list, when)`` from a ``.S`` file, or ``None`` if it is not there."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
            when = os.fstat(fh.fileno()).st_mtime
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not text.endswith("\n"):
        return None  # being written
    job_id, _, nodes = text.strip().partition(" ")
    return job_id, nodes.strip(), when


def read_exited(path: Path) -> tuple[int, float] | None:
    """``(exit code, when)`` from a ``.X`` file, or ``None`` if it is not there (or torn)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
            when = os.fstat(fh.fileno()).st_mtime
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not text.endswith("\n"):
        return None  # being written
    try:
        return int(text.strip()), when
    except ValueError:
        return None


# ---------------------------------------------------------------------- host lists


def expand_hostlist(text: str) -> tuple[str, ...]:
    """Slurm's compressed node list to names: ``n[1-3,5],gpu01`` → n1 n2 n3 n5 gpu01.

    Ranges keep their zero padding (``a[08-10]`` → a08 a09 a10) and several bracket groups in
    one name multiply out (``r[1-2]n[1-2]``), as ``scontrol show hostnames`` does.
    """
    names: list[str] = []
    for item in _split_top(text.strip()):
        names += _expand_one(item)
    return tuple(names)


def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return [x for x in out if x]


def _expand_one(item: str) -> list[str]:
    open_at = item.find("[")
    close_at = item.find("]", open_at)
    if open_at < 0 or close_at < 0:
        return [item]
    head, body, tail = item[:open_at], item[open_at + 1 : close_at], item[close_at + 1 :]
    out = []
    for part in body.split(","):
        low, dash, high = part.partition("-")
        if not dash:
            values = [low]
        elif low.isdigit() and high.isdigit():
            width = len(low) if low.startswith("0") else 0
            values = [str(n).zfill(width) for n in range(int(low), int(high) + 1)]
        else:
            values = [part]
        for value in values:
            out += [head + value + rest for rest in _expand_one(tail)]
    return out
