"""Running a task's command in its ``container_image``, with the configured runtime.

``stormproof.yaml``'s ``container: apptainer | docker | podman`` makes every task that has a
``container_image`` run in that image; tasks without one, and every task when no runtime is
configured, run on the host (``plan`` and ``run`` say so once). The wrapping is done where an
attempt's command line is built (``Driver.job``), so it is the same on every executor: the
executor runs the runtime's client, which runs the command in the container.

What the container sees:

* the attempt's folder (its cwd ``work/``, its logs, its checkpoint dir), the run's data dir
  and the workflow's folder (read-only), each mounted at the same path as on the host, so
  ``STORMPROOF_*`` paths mean the same inside;
* the attempt's environment: the task's ``environment`` and ``STORMPROOF_*`` (docker and
  podman are given each name with ``--env NAME``, which takes the value from the client's
  environment, never from the command line; apptainer passes the host's environment in);
* the host's user (docker and podman: ``--user UID:GID``), so files in the data dir stay the
  user's; the network in ``container_network`` (default ``host``);
* GPUs when the task asks for ``gpus`` (``--gpus all``, podman's CDI device, apptainer's
  ``--nv``), and docker's and podman's own memory limit when the task declares ``memory``.

docker and podman run with ``--init``, so the signals the runtime sends the client (SIGTERM,
the checkpoint signal) reach the command, and ``--rm``; the container is named
``stormproof-<run>-<task>-<attempt>``. A client killed with SIGKILL leaves its container
running under the daemon: ``docker kill`` it by that name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from stormproof.spec.model import WorkflowSpec

RUNTIMES = ("apptainer", "docker", "podman")


def wrap(
    command: Sequence[str] | str,
    *,
    runtime: str,
    image: str,
    network: str,
    name: str,
    env_names: Iterable[str],
    workdir: Path,
    binds: Sequence[Path],
    read_only: Sequence[Path] = (),
    gpus: int = 0,
    memory_mib: int | None = None,
    image_dir: Path | None = None,
    options: Sequence[str] = (),
) -> list[str]:
    """The command line that runs ``command`` in ``image`` under ``runtime``; ``options``
    (``container_options``) go last before the image."""
    argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
    if runtime == "apptainer":
        line = _apptainer(network, workdir, binds, read_only, gpus)
        return [*line, *options, apptainer_image(image, image_dir), *argv]
    if runtime not in ("docker", "podman"):
        raise ValueError(f"unknown container runtime {runtime!r}")
    line = [runtime, "run", "--rm", "--init", "--name", name]
    line += ["--user", f"{os.getuid()}:{os.getgid()}", "--network", network]
    line += ["--workdir", str(workdir)]
    for path in binds:
        line += ["--volume", f"{path}:{path}"]
    for path in read_only:
        line += ["--volume", f"{path}:{path}:ro"]
    for var in sorted(env_names):
        line += ["--env", var]
    if gpus:
        line += ["--gpus", "all"] if runtime == "docker" else ["--device", "nvidia.com/gpu=all"]
    if memory_mib:
        line += ["--memory", f"{memory_mib}m"]
    return [*line, *options, image, *argv]


def _apptainer(
    network: str, workdir: Path, binds: Sequence[Path], read_only: Sequence[Path], gpus: int
) -> list[str]:
    mounts = [f"{p}:{p}" for p in binds] + [f"{p}:{p}:ro" for p in read_only]
    line = ["apptainer", "exec", "--pwd", str(workdir), "--bind", ",".join(mounts)]
    if gpus:
        line.append("--nv")
    if network != "host":
        line += ["--net", "--network", network]
    return line


def apptainer_image(image: str, image_dir: Path | None) -> str:
    """A SIF file or a folder as given (relative to the workflow's folder), any URI as given
    (``docker://``, ``oras://``, ``library://``), and a registry name as ``docker://name``."""
    if "://" in image:
        return image
    if image.endswith(".sif") or image.startswith(("/", "./", "../")):
        return str((image_dir or Path.cwd()) / image)
    return "docker://" + image


def host_notes(
    spec: WorkflowSpec, runtime: str | None, executor_runs_images: bool = False
) -> list[str]:
    """What ``plan`` and ``run`` say, once, about where commands run (nothing when the
    executor runs every attempt in a container itself, as AWS Batch does)."""
    if executor_runs_images:
        return []
    images = sum(1 for task in spec.tasks if task.container_image)
    if runtime is None:
        if not images:
            return []
        s = "s" if images != 1 else ""
        return [
            f"container_image is set on {images:,} task{s} but no container runtime is "
            "configured: commands run directly on the host (set `container:` in "
            "stormproof.yaml to apptainer, docker or podman)"
        ]
    bare = len(spec.tasks) - images
    if not images:
        return [
            f"container: {runtime} is set but no task has a container_image: every command "
            "runs directly on the host"
        ]
    if bare:
        return [
            f"{bare:,} task{'s' if bare != 1 else ''} without container_image run directly on "
            f"the host; the other {images:,} run in their image with {runtime}"
        ]
    return []
