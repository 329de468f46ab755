"""Pools are partitions: their size from the cluster, and every check a run makes first.

Before a Slurm run submits anything, ``describe_pools`` asks the cluster (one ``sinfo``, one
``sbatch --test-only`` per partition when an account or QOS is set) and refuses, with one
line naming the place and the fix (exit 2), what would otherwise fail job by job:

* Slurm's commands are not on PATH; slurmctld does not answer;
* a pool's partition does not exist (with the close name, and the partitions that do);
* the account or QOS is refused in a partition;
* a task that no partition it may use can hold: more CPUs, memory or GPUs per node than the
  partition's largest node, more nodes than it has, or a timeout past its ``MaxTime``.

A pool's shape (``vcpus``, ``memory``, ``gpus`` per node) and ``count`` (nodes) default to the
partition's largest node and node count; what ``stormproof.yaml`` sets explicitly wins.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from stormproof.config import SettingError
from stormproof.core.defs import Market, PoolDef, Resources
from stormproof.errors import CapacityError, ConfigError
from stormproof.executors.slurm.commands import Slurm, SlurmError, SlurmRefused
from stormproof.executors.slurm.options import SlurmOptions, time_limit
from stormproof.spec.model import TaskSpec, WorkflowSpec

#: ``sinfo`` fields: partition, CPUs/node, MiB/node, GRES, nodes, time limit.
_SINFO_FORMAT = "%R|%c|%m|%G|%D|%l"


@dataclass(frozen=True)
class Partition:
    """A partition as ``sinfo`` shows it: its largest node, its node count, its time limit."""

    name: str
    nodes: int
    cpus: int
    memory_mib: int
    gpus: int
    max_time_s: float | None

    def describe(self) -> str:
        gpus = f" / {self.gpus} GPUs" if self.gpus else ""
        limit = "no time limit" if self.max_time_s is None else f"MaxTime {_hms(self.max_time_s)}"
        nodes = f"{self.nodes} node{'s' if self.nodes != 1 else ''}"
        return f"{self.name}: {nodes} of {self.cpus} CPUs / {self.memory_mib} MiB{gpus}, {limit}"


def read_partitions(slurm: Slurm) -> dict[str, Partition]:
    """Every partition of the cluster, from one ``sinfo`` call."""
    out = slurm.call("sinfo", "--noheader", "--format", _SINFO_FORMAT)
    found: dict[str, Partition] = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 6:
            continue
        name = parts[0].rstrip("*")
        row = Partition(
            name=name,
            nodes=_int(parts[4]),
            cpus=_int(parts[1]),
            memory_mib=_int(parts[2]),
            gpus=gres_gpus(parts[3]),
            max_time_s=parse_time(parts[5]),
        )
        seen = found.get(name)
        if seen is not None:  # nodes of several shapes: the largest, all of them counted
            row = Partition(
                name,
                seen.nodes + row.nodes,
                max(seen.cpus, row.cpus),
                max(seen.memory_mib, row.memory_mib),
                max(seen.gpus, row.gpus),
                row.max_time_s,
            )
        found[name] = row
    return found


def describe_pools(pools: tuple[PoolDef, ...], options: Mapping[str, Any]) -> tuple[PoolDef, ...]:
    """The run's pools sized from their partitions (``executors.base.describe_pools``), after
    the checks the module docstring lists; a problem is one ``ConfigError`` (a
    ``SettingError`` names the setting, and the configuration its line)."""
    opts = SlurmOptions.from_dict(options)
    slurm = Slurm.from_environment(opts.slurm_conf)
    found = _cluster_partitions(slurm, opts.slurm_conf)
    if not opts.partitions:  # no pools configured: the core made up one for this machine
        names = ", ".join(sorted(found)) or "none"
        raise SettingError(
            ("pools",),
            "executor: slurm needs pools, one per partition to use, like `pools: [{name: "
            f"batch, market: on_demand, partition: batch}}]` (the cluster's partitions: {names})",
        )
    out = []
    for i, pool in enumerate(pools):
        partition = opts.partition(pool.name)
        info = found.get(partition)
        if info is None:
            raise SettingError(("pools", i, "partition"), _unknown(partition, found))
        out.append(_sized(pool, info))
    _check_access(slurm, opts, sorted({opts.partition(p.name) for p in pools}))
    return tuple(out)


def check_workflow(
    spec: WorkflowSpec, pools: Sequence[PoolDef], options: Mapping[str, Any]
) -> None:
    """Refuse a workflow with a task no partition it may use can hold (``CapacityError``)."""
    opts = SlurmOptions.from_dict(options)
    found = _SEEN.get(opts.slurm_conf) or _cluster_partitions(
        Slurm.from_environment(opts.slurm_conf), opts.slurm_conf
    )
    partitions = {
        p.name: found[opts.partition(p.name)] for p in pools if opts.partition(p.name) in found
    }
    problems = unplaceable(spec, [p for p in pools if p.name in partitions], partitions, opts)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise CapacityError(f"some tasks cannot run on this cluster:\n{lines}")


#: Partitions read by this process, by ``slurm_conf``: a command asks ``sinfo`` once.
_SEEN: dict[str | None, dict[str, Partition]] = {}


def _cluster_partitions(slurm: Slurm, slurm_conf: str | None = None) -> dict[str, Partition]:
    try:
        slurm.check_installed()
        slurm.ping()
        found = _SEEN[slurm_conf] = read_partitions(slurm)
    except SlurmError as err:
        raise ConfigError(f"executor: slurm: {err}") from None
    return found


def _sized(pool: PoolDef, info: Partition) -> PoolDef:
    """The pool with what the configuration left out (0) taken from its partition."""
    cap = pool.capacity
    filled = Resources(
        vcpus=cap.vcpus or float(info.cpus),
        memory_mib=cap.memory_mib or info.memory_mib,
        gpus=cap.gpus or info.gpus,
    )
    instance = pool.instance_type if pool.instance_type != "local" else f"slurm:{info.name}"
    return replace(pool, capacity=filled, count=pool.count or info.nodes, instance_type=instance)


def _check_access(slurm: Slurm, options: SlurmOptions, partitions: Sequence[str]) -> None:
    """``sbatch --test-only`` once per partition: the account and QOS are allowed there."""
    if options.account is None and options.qos is None:
        return
    for partition in partitions:
        args = ["sbatch", "--test-only", f"--partition={partition}", "--wrap=true"]
        args += [f"--account={options.account}"] if options.account else []
        args += [f"--qos={options.qos}"] if options.qos else []
        try:
            slurm.call(*args)
        except SlurmRefused as err:
            text = str(err)
            key = "qos" if "qos" in text.lower() and "account" not in text.lower() else "account"
            value = options.qos if key == "qos" else options.account
            raise SettingError(
                ("slurm", key),
                f"Slurm refuses {key} {value!r} in partition {partition}: {text} "
                "(`sacctmgr show associations user=$USER` lists yours)",
            ) from None
        except SlurmError as err:
            raise ConfigError(f"executor: slurm: {err}") from None


def unplaceable(
    spec: WorkflowSpec,
    pools: Sequence[PoolDef],
    partitions: dict[str, Partition],
    options: SlurmOptions,
) -> list[str]:
    """One line per kind of task that no partition it may use can hold, naming them all."""
    problems: dict[tuple[object, ...], list[str]] = {}
    for task in spec.tasks:
        usable = [p for p in pools if task.spot_enabled or p.market is Market.ON_DEMAND]
        key = (task.vcpus, task.memory, task.gpus, task.nodes, task.timeout, len(usable))
        if key in problems:
            problems[key].append(task.id)
        elif not any(_fits(task_need(task), p, partitions[p.name], options) for p in usable):
            problems[key] = [task.id]
    out = []
    for ids in problems.values():
        task = next(t for t in spec.tasks if t.id == ids[0])
        usable = [p for p in pools if task.spot_enabled or p.market is Market.ON_DEMAND]
        limits = "; ".join(partitions[p.name].describe() for p in usable) or "none"
        who = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
        out.append(
            f"task {who} needs {_need_text(task_need(task), options)}, which no partition it "
            f"may use can hold ({limits}); lower what it asks, or add a pool on a larger "
            "partition in stormproof.yaml"
        )
    return out


@dataclass(frozen=True)
class _Need:
    vcpus: float
    memory_mib: int
    gpus: int
    nodes: int
    timeout_s: float | None


def task_need(task: TaskSpec) -> _Need:
    return _Need(task.vcpus, task.memory, task.gpus, task.nodes, task.timeout)


def _fits(need: _Need, pool: PoolDef, info: Partition, options: SlurmOptions) -> bool:
    cap = pool.capacity
    if need.vcpus > cap.vcpus + 1e-9 or need.memory_mib > cap.memory_mib or need.gpus > cap.gpus:
        return False
    if need.nodes > pool.count:
        return False
    if need.timeout_s is not None and info.max_time_s is not None:
        asked = parse_time(time_limit(need.timeout_s, options.time_margin_s)) or 0.0
        return math.ceil(asked / 60) * 60 <= info.max_time_s  # Slurm counts whole minutes
    return True


def _need_text(need: _Need, options: SlurmOptions) -> str:
    text = f"{need.vcpus:g} CPUs / {need.memory_mib} MiB"
    if need.gpus:
        text += f" / {need.gpus} GPUs"
    text = f"{need.nodes} nodes x {text}" if need.nodes > 1 else f"{text} on one node"
    if need.timeout_s is not None:
        text += f" for up to {time_limit(need.timeout_s, options.time_margin_s)} (its timeout "
        text += "and the margin)"
    return text


def _unknown(partition: str, found: dict[str, Partition]) -> str:
    close = difflib.get_close_matches(partition, list(found), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    names = ", ".join(sorted(found)) or "none"
    return (
        f"Slurm has no partition {partition!r}{hint}; the cluster's partitions: {names} "
        "(a pool without `partition:` submits to the one of its name)"
    )


# ---------------------------------------------------------------------- Slurm's formats


def gres_gpus(gres: str) -> int:
    """GPUs per node from a GRES string: ``gpu:2``, ``gpu:a100:4(S:0-1)``, ``gpu:1,mps:100``."""
    total = 0
    for item in gres.split(","):
        item = item.split("(", 1)[0].strip()
        if not item.startswith("gpu"):
            continue
        count = item.rsplit(":", 1)[-1]
        total += int(count) if count.isdigit() else 0
    return total


def parse_time(text: str) -> float | None:
    """Slurm's ``[days-]hours:minutes:seconds`` (and its shorter forms) in seconds;
    ``None`` for ``infinite``/``UNLIMITED``."""
    text = text.strip()
    if not text or text.lower() in ("infinite", "unlimited", "n/a", "none"):
        return None
    days = 0
    if "-" in text:
        head, text = text.split("-", 1)
        days = int(head)
        parts = [int(p) for p in text.split(":")] + [0, 0]
        hours, minutes, seconds = parts[:3]
    else:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, minutes, seconds = 0, parts[0], parts[1]
        else:
            hours, minutes, seconds = parts[:3]
    return float(days * 86400 + hours * 3600 + minutes * 60 + seconds)


def _hms(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{days}-" if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"


def _int(text: str) -> int:
    digits = text.strip().rstrip("+")
    return int(digits) if digits.isdigit() else 0
