"""Commands wrapped in a container runtime (``runtime.containers``): the command lines, the
driver's attempts, and a real podman run where this machine can run one."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stormproof.config import local_pool
from stormproof.executors.fake import FakeExecutor
from stormproof.runtime.containers import apptainer_image, host_notes, wrap
from stormproof.runtime.driver import Driver
from stormproof.runtime.home import Home
from stormproof.runtime.runs import new_context
from stormproof.spec.model import WorkflowSpec
from stormproof.store.sqlite import SQLiteEventLog

IDS = f"{os.getuid()}:{os.getgid()}"


def test_podman_and_docker_mount_the_attempt_data_and_workflow_dirs_and_pass_env_by_name(
    tmp_path: Path,
) -> None:
    line = wrap(
        "echo $X > out",
        runtime="podman",
        image="img:1",
        network="none",
        name="stormproof-r-t-2",
        env_names=["X", "STORMPROOF_TASK"],
        workdir=tmp_path / "att" / "work",
        binds=[tmp_path / "att", tmp_path / "data"],
        read_only=[tmp_path / "wf"],
        gpus=1,
        memory_mib=2048,
        options=["--ulimit", "nofile=1024:1024"],
    )
    assert line == [
        "podman", "run", "--rm", "--init", "--name", "stormproof-r-t-2",
        "--user", IDS, "--network", "none", "--workdir", f"{tmp_path}/att/work",
        "--volume", f"{tmp_path}/att:{tmp_path}/att",
        "--volume", f"{tmp_path}/data:{tmp_path}/data",
        "--volume", f"{tmp_path}/wf:{tmp_path}/wf:ro",
        "--env", "STORMPROOF_TASK", "--env", "X",
        "--device", "nvidia.com/gpu=all", "--memory", "2048m",
        "--ulimit", "nofile=1024:1024",
        "img:1", "sh", "-c", "echo $X > out",
    ]  # fmt: skip
    docker = wrap(
        ["python", "run.py"],
        runtime="docker",
        image="img:1",
        network="host",
        name="n",
        env_names=[],
        workdir=tmp_path,
        binds=[],
        gpus=2,
    )
    assert docker[:2] == ["docker", "run"] and docker[-3:] == ["img:1", "python", "run.py"]
    assert "--gpus" in docker and "--memory" not in docker


def test_apptainer_binds_with_its_own_flags_and_names_registry_images_as_docker_uris(
    tmp_path: Path,
) -> None:
    line = wrap(
        ["a", "b"],
        runtime="apptainer",
        image="ubuntu:22.04",
        network="host",
        name="n",
        env_names=["X"],
        workdir=tmp_path / "w",
        binds=[tmp_path / "a"],
        read_only=[tmp_path / "wf"],
        gpus=1,
    )
    assert line == [
        "apptainer", "exec", "--pwd", f"{tmp_path}/w",
        "--bind", f"{tmp_path}/a:{tmp_path}/a,{tmp_path}/wf:{tmp_path}/wf:ro",
        "--nv", "docker://ubuntu:22.04", "a", "b",
    ]  # fmt: skip
    assert apptainer_image("sim.sif", tmp_path) == f"{tmp_path}/sim.sif"
    assert apptainer_image("oras://x/y:1", tmp_path) == "oras://x/y:1"
    closed = wrap(
        "x", runtime="apptainer", image="i", network="none", name="n", env_names=[],
        workdir=tmp_path, binds=[],
    )  # fmt: skip
    assert closed[closed.index("--net") : closed.index("--net") + 3] == [
        "--net",
        "--network",
        "none",
    ]


SPEC = {
    "name": "boxed",
    "tasks": [
        {"id": "in", "command": "echo hi", "container_image": "img:1", "memory": 512},
        {"id": "out", "command": ["true"], "depends_on": ["in"]},
    ],
}


def driver(tmp_path: Path, runtime: str | None) -> Driver:
    home = Home(tmp_path / ".stormproof")
    home.root.mkdir(parents=True, exist_ok=True)
    store = SQLiteEventLog(home.db_path)
    ctx = new_context(
        "r",
        WorkflowSpec.model_validate(SPEC),
        (local_pool(),),
        tmp_path / "wf.yaml",
        "fake",
        seed=1,
        container={"runtime": runtime, "network": "host", "options": ["--pull=never"]},
    )
    return Driver(home, store, ctx, FakeExecutor())


def test_the_driver_runs_a_task_with_an_image_in_the_runtime_and_the_others_on_the_host(
    tmp_path: Path,
) -> None:
    d = driver(tmp_path, "podman")
    boxed, bare = d.jobs.job(0, 3, ("local-0",)), d.jobs.job(1, 1, ("local-0",))
    assert isinstance(boxed.command, list)
    assert boxed.command[:4] == ["podman", "run", "--rm", "--init"]
    assert boxed.command[-5:] == ["--pull=never", "img:1", "sh", "-c", "echo hi"]
    assert "stormproof-r-in-3" in boxed.command
    attempt = tmp_path / ".stormproof" / "runs" / "r" / "tasks" / "in" / "attempt-3"
    assert f"{attempt}:{attempt}" in boxed.command
    assert "--memory" in boxed.command  # declared memory: the runtime holds the task to it
    for name in ("STORMPROOF_DATA_DIR", "STORMPROOF_CHECKPOINT_DIR", "STORMPROOF_ATTEMPT"):
        if name in boxed.env:
            assert boxed.command[boxed.command.index(name) - 1] == "--env"
    assert bare.command == ["true"]
    d.store.close()
    plain = driver(tmp_path / "plain", None)
    assert plain.jobs.job(0, 1, ("local-0",)).command == "echo hi"
    plain.store.close()


def test_plan_and_run_say_once_where_commands_run() -> None:
    spec = WorkflowSpec.model_validate(SPEC)
    (no_runtime,) = host_notes(spec, None)
    assert "no container runtime is configured: commands run directly on the host" in no_runtime
    (mixed,) = host_notes(spec, "docker")
    assert mixed.startswith("1 task without container_image run directly on the host")
    bare = spec.model_copy(update={"tasks": [spec.tasks[1]]})
    assert "no task has a container_image" in host_notes(bare, "podman")[0]
    assert host_notes(bare, None) == []


# ---------------------------------------------------------------------- a real runtime
#: What podman needs in this VM: its sandbox refuses to raise rlimits, and podman (runc)
#: sets nofile and nproc by default; lower ones are allowed (docs/containers.md).
PODMAN_OPTIONS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"]


@pytest.fixture(scope="module")
def podman_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A one-binary busybox image, imported from a tarball: no registry needed."""
    why = _podman_missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"podman cannot run containers here: {why} (.ci/apt-packages has it)")
        pytest.skip(f"podman cannot run containers here: {why}")
    root = tmp_path_factory.mktemp("rootfs")
    (root / "bin").mkdir()
    busybox = shutil.which("busybox") or "/bin/busybox"
    shutil.copy(busybox, root / "bin" / "busybox")
    for tool in ("sh", "echo", "cat", "id", "pwd", "sleep"):
        (root / "bin" / tool).symlink_to("busybox")
    tar = root.parent / "rootfs.tar"
    subprocess.run(["tar", "-C", str(root), "-cf", str(tar), "."], check=True)
    image = "localhost/stormproof-test-busybox:1"
    subprocess.run(["podman", "import", str(tar), image], check=True, capture_output=True)
    probe = subprocess.run(
        ["podman", "run", "--rm", *PODMAN_OPTIONS, image, "echo", "ok"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if probe.stdout.strip() != "ok":
        message = f"podman run failed: {probe.stderr.strip()[-300:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return image


def _podman_missing() -> str:
    if shutil.which("podman") is None:
        return "no podman (apt-get install podman runc busybox-static)"
    if shutil.which("busybox") is None and not Path("/bin/busybox").exists():
        return "no busybox to build a test image from (apt-get install busybox-static)"
    return ""


@pytest.mark.slow
def test_a_real_podman_runs_the_task_in_its_image_with_the_run_s_folders(
    tmp_path: Path, podman_image: str
) -> None:
    (tmp_path / "params.txt").write_text("dt=1\n")
    (tmp_path / "wf.yaml").write_text(
        f"""
name: boxed
tasks:
  - id: inside
    container_image: {podman_image}
    environment: {{GREETING: hello}}
    command: 'echo "$GREETING $(pwd) $(id -u)" > "$STORMPROOF_DATA_DIR/inside.txt";
              cat "$STORMPROOF_WORKFLOW_DIR/params.txt" >> "$STORMPROOF_DATA_DIR/inside.txt";
              test ! -e /etc/debian_version'
  - {{id: outside, command: 'test -e /etc/debian_version', depends_on: [inside]}}
"""
    )
    options = ", ".join(PODMAN_OPTIONS)
    (tmp_path / "stormproof.yaml").write_text(
        f"container: podman\ncontainer_options: [{options}]\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "STORMPROOF_HOME"}
    proc = subprocess.run(
        [sys.executable, "-m", "stormproof", "run", "wf.yaml", "--name", "c1", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 task without container_image run directly on the host" in proc.stderr
    written = (tmp_path / ".stormproof" / "runs" / "c1" / "data" / "inside.txt").read_text()
    work = tmp_path / ".stormproof" / "runs" / "c1" / "tasks" / "inside" / "attempt-1" / "work"
    assert written == f"hello {work} {os.getuid()}\ndt=1\n"


def test_a_context_records_its_container_settings_for_resume(tmp_path: Path) -> None:
    ctx = new_context(
        "r",
        WorkflowSpec.model_validate(SPEC),
        (local_pool(),),
        tmp_path / "wf.yaml",
        "local",
        container={"runtime": "docker", "network": "none", "options": []},
    )
    again = type(ctx).from_meta("r", ctx.to_meta())
    assert dataclasses.replace(again, written_by=ctx.written_by) == ctx
