"""Slurm's command-line clients, called the way a polite user would, their output parsed.

Slurm has no stable library API for its clients; its commands are the interface every
workflow tool uses (Snakemake, Nextflow, dask-jobqueue), and what sites' documentation and
rate limits are written for. Every call here goes to slurmctld (or the accounting database),
so the executor makes as few as it can: one ``squeue`` per poll cycle for all of a run's
jobs, one ``scancel`` per batch of kills, ``sacct`` only for jobs ``squeue`` has forgotten.

Failures are translated here: ``SlurmMissing`` (a client is not installed),
``SlurmUnreachable`` (slurmctld does not answer), ``SlurmRefused`` (it answered no, with its
message). Nothing else leaves this module.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stormproof.executors.slurm.states import JobRecord, normal_state

#: ``squeue -O`` fields, ``|``-separated; name and comment last (they may contain anything).
_SQUEUE_FIELDS = (
    "JobID",
    "State",
    "Partition",
    "PreemptTime",
    "RestartCnt",
    "NodeList",
    "Comment",
    "Name",
)
_SQUEUE_FORMAT = ",".join(f"{f}:|" for f in _SQUEUE_FIELDS[:-1]) + f",{_SQUEUE_FIELDS[-1]}:"
#: The clients the executor runs.
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo")
#: What slurmctld's clients print when they cannot reach it.
_UNREACHABLE = (
    "unable to contact slurm controller",
    "slurm_receive_msg",
    "socket timed out",
    "connection refused",
    "communication connection failure",
    "zero bytes were transmitted or received",
    "unable to establish controller machine",
    "could not establish a configuration source",
)


class SlurmError(Exception):
    """A Slurm client failed; ``str`` is a sentence for the user."""


class SlurmMissing(SlurmError):
    """A Slurm client is not on PATH."""


class SlurmUnreachable(SlurmError):
    """slurmctld did not answer (down, wrong SLURM_CONF, network)."""


class SlurmRefused(SlurmError):
    """slurmctld answered, and refused (an unknown partition or account, a job too big)."""


@dataclass
class Slurm:
    """Runs Slurm clients with one environment (``SLURM_CONF`` honoured)."""

    env: Mapping[str, str]
    timeout_s: float = 120.0

    @classmethod
    def from_environment(cls, slurm_conf: str | None = None) -> Slurm:
        env = dict(os.environ)
        if slurm_conf:
            env["SLURM_CONF"] = slurm_conf
        return cls(env)

    def call(self, *args: str) -> str:
        """Run one client; its stdout, or a ``SlurmError`` that says what went wrong."""
        try:
            proc = subprocess.run(
                list(args),
                env=dict(self.env),
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise SlurmMissing(
                f"`{args[0]}` is not on PATH: the Slurm executor needs Slurm's client commands "
                "(sbatch, squeue, scancel, sacct, sinfo); run stormproof on a login node, or "
                "install slurm-client"
            ) from None
        except subprocess.TimeoutExpired:
            raise SlurmUnreachable(
                f"`{args[0]}` did not answer within {self.timeout_s:.0f} s: slurmctld is "
                f"unreachable or overloaded{self._conf_hint()}"
            ) from None
        except OSError as err:
            raise SlurmMissing(f"cannot run `{args[0]}`: {err}") from None
        if proc.returncode != 0:
            raise self._error(args[0], proc.stderr or proc.stdout)
        return proc.stdout

    def _error(self, program: str, stderr: str) -> SlurmError:
        message = " ".join(stderr.split()) or "(no message)"
        if any(marker in message.lower() for marker in _UNREACHABLE):
            return SlurmUnreachable(
                f"`{program}` cannot reach slurmctld: {message}{self._conf_hint()}"
            )
        return SlurmRefused(message)

    def _conf_hint(self) -> str:
        conf = self.env.get("SLURM_CONF")
        where = f"SLURM_CONF={conf}" if conf else "the default /etc/slurm/slurm.conf"
        return f" (configuration: {where}; is slurmctld running? `scontrol ping` tells)"

    # ------------------------------------------------------------------ the calls
    def sbatch(self, args: Sequence[str], script: str) -> str:
        """Submit; the new job's id."""
        out = self.call("sbatch", "--parsable", *args, script)
        return out.strip().split(";", 1)[0]

    def squeue_mine(self) -> list[JobRecord]:
        """Every job of this user that slurmctld still knows, finished ones included."""
        out = self.call("squeue", "--me", "--noheader", "--states=all", "-O", _SQUEUE_FORMAT)
        return [r for r in map(_squeue_record, out.splitlines()) if r is not None]

    def scancel(
        self, job_ids: Sequence[str], signal: str | None = None, full: bool = False
    ) -> None:
        """Cancel these jobs, or with ``signal`` signal their steps (``full``: every process
        of the job, the batch script's included), in one call. Jobs that ended meanwhile make
        ``scancel`` complain; that is not an error here.
        """
        if not job_ids:
            return
        args = ["scancel", "--quiet"]
        if signal is not None:
            args.append(f"--signal={signal}")
            if full:
                args.append("--full")
        # "already completing or completed", "invalid job id": nothing left to do
        with contextlib.suppress(SlurmRefused):
            self.call(*args, *job_ids)

    def sacct(self, job_ids: Sequence[str], completion_log: bool) -> list[JobRecord]:
        """Final states of jobs ``squeue`` forgot: from accounting, or with
        ``completion_log`` from the jobcomp file (``sacct -c``: clusters without a database)."""
        if not job_ids:
            return []
        fields = "JobIDRaw,State,ExitCode,NodeList,Partition,JobName"
        args = ["sacct", "--noheader", "--parsable2", "--allocations"]
        if completion_log:
            args = ["sacct", "-c", "--noheader", "--parsable2"]
            fields = "JobID,State,ExitCode,NodeList,Partition,JobName"
        out = self.call(*args, f"--format={fields}", f"--jobs={','.join(job_ids)}")
        return [r for r in map(_sacct_record, out.splitlines()) if r is not None]

    def check_installed(self) -> None:
        """Every client the executor calls is on PATH (``sacct`` is only needed, and only
        missed, when a job has left the queue; its absence is not an error)."""
        path = self.env.get("PATH", "")
        missing = [c for c in CLIENTS if shutil.which(c, path=path) is None]
        if missing:
            what = f"`{missing[0]}` is" if len(missing) == 1 else f"{', '.join(missing)} are"
            raise SlurmMissing(
                f"{what} not on PATH: the Slurm executor calls Slurm's client commands "
                f"({', '.join(CLIENTS)}); run stormproof where they are (a login node), or "
                "install them (Debian: slurm-client)"
            )

    def ping(self) -> None:
        """Is a slurmctld answering? ``scontrol ping`` says at once, where other clients retry
        for seconds; a missing ``SLURM_CONF`` file is said before anything is run."""
        conf = self.env.get("SLURM_CONF")
        if conf and not os.path.isfile(conf):
            raise SlurmUnreachable(
                f"SLURM_CONF={conf}: no such file; point it at the cluster's slurm.conf "
                "(or unset it to use Slurm's default)"
            )
        try:
            out = self.call("scontrol", "ping")
        except SlurmRefused as err:  # exits 1 when every controller is down
            out = str(err)
        if " is UP" not in out:
            said = "; ".join(re.findall(r"Slurmctld\(\w+\) at \S+ is \w+", out)) or out.strip()
            conf = self.env.get("SLURM_CONF")
            where = f"SLURM_CONF={conf}" if conf else "the default /etc/slurm/slurm.conf"
            raise SlurmUnreachable(
                f"slurmctld does not answer (`scontrol ping`: {said}); is it running, and is "
                f"{where} the cluster's configuration?"
            )


def _squeue_record(line: str) -> JobRecord | None:
    parts = line.split("|", len(_SQUEUE_FIELDS) - 2)
    if len(parts) != len(_SQUEUE_FIELDS) - 1:
        return None
    job_id, state, partition, preempt, restarts, nodes, rest = (p.strip() for p in parts)
    comment, _, name = rest.partition("|")
    return JobRecord(
        job_id=job_id,
        state=normal_state(state),
        name=name.strip(),
        comment=comment.strip(),
        partition=partition,
        nodes=nodes,
        preempted=preempt not in ("", "N/A", "None", "Unknown", "0"),
        restarts=int(restarts) if restarts.isdigit() else 0,
    )


def _sacct_record(line: str) -> JobRecord | None:
    parts = line.split("|")
    if len(parts) < 6 or "." in parts[0]:
        return None  # a step, not the job
    job_id, state, exit_code, nodes, partition = (p.strip() for p in parts[:5])
    code, _, _signal = exit_code.partition(":")
    return JobRecord(
        job_id=job_id,
        state=normal_state(state),
        name="|".join(parts[5:]).strip(),
        partition=partition,
        nodes=nodes if nodes not in ("None assigned", "(null)") else "",
        exit_code=int(code) if code.isdigit() else None,
    )
