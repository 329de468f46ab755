"""A real Slurm cluster on this one machine, for the tests and the benchmark (Debian's 22.05).

``start(root)`` writes a configuration under ``root`` and starts ``slurmctld`` and one
``slurmd`` per node in the foreground, as our own children; ``Cluster.stop()`` cancels what is
left, then stops the slurmds before slurmctld (a slurmd hangs on shutdown when a job ends after
slurmctld is gone), each by its pid. Everything lives under ``root``: config, state, spool,
logs, the jobcomp file. Nothing goes to /etc and no system service is touched.

Why the configuration looks like this (``/work/shared/notes/slurm.md`` has the measurements):

* no munge, no cgroups, no database: ``auth/none``, ``proctrack/linuxproc``,
  ``accounting_storage/none``; finished jobs stay in ``squeue -t all`` for ``MinJobAge``
  and are written to a ``jobcomp/filetxt`` file (``sacct -c``) for good;
* free ports (``SlurmctldPort``, one ``Port`` per node) and a unique ``ClusterName``, so
  another test session on this machine runs its own cluster at the same time;
* two nodes, ``n1`` and ``n2``, both this machine: Debian builds Slurm with
  ``MULTIPLE_SLURMD`` (``scontrol show config``), so one ``slurmd -N NAME`` per node name runs
  here, and a task asking for 2 nodes really spans two slurmds;
* ``CPUs=4`` per node declared on a 2-core machine (``SlurmdParameters=config_overrides``) and a
  2-second scheduler interval: the scheduler, not the machine, sets the pace of short jobs;
* two partitions on both nodes: ``spot`` (``PriorityTier=1``, preempted by requeue, with a
  10 s ``GraceTime``) and ``ondemand`` (``PriorityTier=10``, never preempted): a job submitted
  to ``ondemand`` preempts ``spot`` jobs when the nodes are full, the spot market's analogue;
* two fake GPUs per node (empty files as devices), so ``--gres=gpu:N`` is scheduled and counted;
* accounts enforced by a ``job_submit.lua`` (only ``ACCOUNTS`` and no account pass): there is
  no slurmdbd here, and a site that enforces accounts (``AccountingStorageEnforce``) refuses
  others with the very message this script returns, ``Invalid account or account/partition
  combination specified``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.checkpoints._seaweed import free_ports

#: What the fixture needs from Debian (``.ci/apt-packages`` lists them).
PACKAGES = ("slurmctld", "slurmd", "slurm-client")
PROGRAMS = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sacct", "srun")
NODES = ("n1", "n2")
NODE_CPUS = 4
NODE_MEMORY_MIB = 4000
NODE_GPUS = 2
GRACE_S = 10
ACCOUNTS = ("physics", "chemistry")
_SBIN = os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
_LIVE = ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "REQUEUED", "RESIZING")
_UP = ("idle", "mixed", "allocated", "completing")


def missing_programs() -> list[str]:
    """The Slurm programs not found (the daemons live in sbin, often not on a user's PATH)."""
    path = os.environ.get("PATH", "") + _SBIN
    return [p for p in PROGRAMS if shutil.which(p, path=path) is None]


def _program(name: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + _SBIN)
    if found is None:
        raise RuntimeError(f"{name} is not installed")
    return found


@dataclass
class Cluster:
    root: Path
    name: str
    ports: dict[str, int]
    daemons: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    # ------------------------------------------------------------------ where things are
    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def jobcomp(self) -> Path:
        return self.root / "log" / "jobcomp.txt"

    def env(self, **extra: str) -> dict[str, str]:
        """Our environment with ``SLURM_CONF`` naming this cluster (what every client needs)."""
        return dict(os.environ, SLURM_CONF=str(self.conf), **extra)

    # ------------------------------------------------------------------ commands
    def run(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        """Run a Slurm client command against this cluster; its stdout."""
        proc = subprocess.run(
            list(args),
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc.stdout

    def jobs(self, states: str = "all") -> list[dict[str, str]]:
        """Every job squeue knows (finished ones for ``MinJobAge``)."""
        fields = "JobID:|,State:|,Partition:|,NodeList:|,PreemptTime:|,Name:|,Comment:"
        out = self.run("squeue", "-h", "-t", states, "-O", fields)
        keys = ("id", "state", "partition", "nodes", "preempt_time", "name", "comment")
        return [
            dict(zip(keys, (v.strip() for v in line.split("|")), strict=False))
            for line in out.splitlines()
        ]

    def live_jobs(self) -> list[dict[str, str]]:
        return [j for j in self.jobs() if j["state"] in _LIVE]

    def completions(self) -> list[dict[str, str]]:
        """The jobcomp file's records: one per job that ended, ``key=value`` fields."""
        try:
            text = self.jobcomp.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            record: dict[str, str] = {}
            for part in line.split():
                key, sep, value = part.partition("=")
                if sep:
                    record[key] = value
            out.append(record)
        return out

    def node_states(self) -> dict[str, str]:
        out = self.run("sinfo", "-h", "-N", "-o", "%N %T")
        return dict(line.split()[:2] for line in out.splitlines() if line.strip())

    def set_node(self, node: str, state: str, reason: str = "test") -> None:
        args = ["scontrol", "update", f"nodename={node}", f"state={state}"]
        if state.lower() in ("down", "drain"):
            args.append(f"reason={reason}")
        self.run(*args)

    def wait_up(self, timeout_s: float = 60) -> None:
        """Until every node takes jobs (after a DOWN, or at start)."""
        deadline = time.monotonic() + timeout_s
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            for name, proc in self.daemons.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited {proc.returncode}: {self.tail(name)}")
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired, ValueError):
                states = self.node_states()
                if set(states) == set(NODES) and all(s in _UP for s in states.values()):
                    return
            time.sleep(0.05)
        raise RuntimeError(
            f"the test cluster's nodes are {states}, not up, after {timeout_s}s: "
            f"{self.tail('slurmctld')}"
        )

    def cancel_all(self, timeout_s: float = 60) -> None:
        """Cancel every job and wait until none is pending, running or completing."""
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.run("scancel", "--quiet", f"--user={os.getuid()}", check=False)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                if not self.live_jobs():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"jobs still live after scancel: {self.live_jobs()}")

    def reset(self) -> None:
        """Between tests: no job left, every node up."""
        self.cancel_all()
        for node, state in self.node_states().items():
            if state not in _UP:
                self.set_node(node, "resume")
        self.wait_up()

    def tail(self, daemon: str) -> str:
        try:
            return (self.root / "log" / f"{daemon}.log").read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Cancel jobs, stop the slurmds, then slurmctld, each by pid; then any step left."""
        ctld = self.daemons.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.cancel_all(timeout_s=20)
        for name in [*(f"slurmd-{n}" for n in NODES), "slurmctld"]:
            proc = self.daemons.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        kill_marked(str(self.root))


def kill_marked(mark: str) -> None:
    """SIGKILL every process whose environment names this cluster (slurmstepd, job steps):
    the daemons run with ``SLURM_CONF`` under the cluster's root, and so do their children."""
    needle = mark.encode()
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        try:
            environ = (pid_dir / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_dir.name), signal.SIGKILL)


def config_text(root: Path, name: str, ports: dict[str, int]) -> str:
    host = socket.gethostname().split(".")[0]
    nodes = ",".join(NODES)
    lines = [
        f"ClusterName={name}",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={ports['slurmctld']}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/none",
        "CredType=cred/none",
        "AuthInfo=cred_expire=10",
        "MpiDefault=none",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={root / 'log' / 'jobcomp.txt'}",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}/%n",
        f"SlurmctldPidFile={root / 'run' / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'run'}/slurmd-%n.pid",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log'}/slurmd-%n.log",
        "MailProg=/bin/true",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU_Memory",
        "DefMemPerCPU=100",
        "SchedulerParameters=sched_interval=2,bf_interval=1",
        "KillWait=5",
        "ReturnToService=1",
        "SlurmdTimeout=10",
        "MinJobAge=600",
        "SlurmdParameters=config_overrides",
        "PreemptType=preempt/partition_prio",
        "PreemptMode=REQUEUE",
        "GresTypes=gpu",
        "JobSubmitPlugins=lua",
        *(
            f"NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 Port={ports[node]} "
            f"CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MIB} Gres=gpu:{NODE_GPUS} State=UNKNOWN"
            for node in NODES
        ),
        f"PartitionName=spot Nodes={nodes} Default=YES MaxTime=INFINITE State=UP "
        f"PriorityTier=1 PreemptMode=REQUEUE GraceTime={GRACE_S}",
        f"PartitionName=ondemand Nodes={nodes} MaxTime=INFINITE State=UP "
        "PriorityTier=10 PreemptMode=OFF",
    ]
    return "\n".join(lines) + "\n"


def _gres_text(root: Path) -> str:
    lines = ["AutoDetect=off"]
    for node in NODES:
        devices = root / "run" / f"{node}-gpu"
        for i in range(NODE_GPUS):
            (root / "run" / f"{node}-gpu{i}").touch()
        lines.append(f"NodeName={node} Name=gpu File={devices}[0-{NODE_GPUS - 1}]")
    return "\n".join(lines) + "\n"


def _job_submit_lua() -> str:
    known = ", ".join(f'["{a}"] = true' for a in ACCOUNTS)
    return (
        f"local known = {{ {known} }}\n"
        "function slurm_job_submit(job_desc, part_list, submit_uid)\n"
        "  if job_desc.account ~= nil and not known[job_desc.account] then\n"
        "    return slurm.ESLURM_INVALID_ACCOUNT\n"
        "  end\n"
        "  return slurm.SUCCESS\n"
        "end\n"
        "function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)\n"
        "  return slurm.SUCCESS\n"
        "end\n"
        "return slurm.SUCCESS\n"
    )


def start(root: Path, timeout_s: float = 60.0, extra: Sequence[str] = ()) -> Cluster:
    """Write the configuration under ``root`` and start the daemons; return once every node
    takes jobs. ``extra`` lines are appended to slurm.conf."""
    for sub in ("etc", "state", "spool", "log", "run"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names = ("slurmctld", *NODES)
    cluster = Cluster(
        root, "sp" + secrets.token_hex(4), dict(zip(names, free_ports(3), strict=True))
    )
    text = config_text(root, cluster.name, cluster.ports) + "".join(f"{x}\n" for x in extra)
    cluster.conf.write_text(text)
    (root / "etc" / "gres.conf").write_text(_gres_text(root))
    (root / "etc" / "job_submit.lua").write_text(_job_submit_lua())
    try:
        _spawn(cluster, "slurmctld", [_program("slurmctld"), "-D", "-f", str(cluster.conf)])
        for node in NODES:
            (root / "spool" / node).mkdir(exist_ok=True)
            cmd = [_program("slurmd"), "-D", "-f", str(cluster.conf), "-N", node]
            _spawn(cluster, f"slurmd-{node}", cmd)
        cluster.wait_up(timeout_s)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _spawn(cluster: Cluster, name: str, cmd: list[str]) -> None:
    with open(cluster.root / "log" / f"{name}.out", "ab") as out:
        cluster.daemons[name] = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=cluster.env(),
            start_new_session=True,  # Ctrl-C on the tests reaches the fixture, not the daemons
        )
