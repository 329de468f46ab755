"""Bad configuration for ``executor: dask``: one clear line (file:line: place: problem, and the
fix), exit 2, and no run is created. Real clusters where the problem is the cluster's: a port
nothing listens on, a scheduler of another Dask version, a worker without stormproof, pools
whose workers cannot hold a task."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import Cli
from tests.executors.dask._cluster import DaskCluster, _env
from tests.executors.dask.conftest import require_dask

#: A release of Dask older than the test extra's, for a scheduler that does not match.
OLD_DASK = "2025.12.0"
WORKFLOW = """\
name: wf
tasks:
  - {id: a, command: ["true"], vcpus: 1, memory: 256}
"""


def refused(cli: Cli, *args: str, lines: int = 1) -> str:
    """Run ``stormproof``; it must exit 2 with ``lines`` lines on stderr and create no run."""
    done = cli(*args, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    said = done.stderr.strip().splitlines()
    assert len(said) == lines, done.stderr
    assert "Traceback" not in done.stderr
    assert not (cli.cwd / ".stormproof" / "runs").exists() or not any(
        (cli.cwd / ".stormproof" / "runs").iterdir()
    )
    return "\n".join(said)


def setup(cli: Cli, config: str, workflow: str = WORKFLOW) -> None:
    cli.write("stormproof.yaml", config)
    cli.write("wf.yaml", workflow)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_scheduler_nobody_answers_at(cli: Cli) -> None:
    require_dask()
    address = f"tcp://127.0.0.1:{free_port()}"
    setup(cli, f"executor: dask\ndask:\n  connect_timeout: 1s\n  scheduler: {address}\n")
    for command in ("run", "plan"):
        line = refused(cli, command, "wf.yaml")
        assert line.startswith("error: stormproof.yaml:4: dask.scheduler: cannot reach"), line
        assert address in line and "dask scheduler" in line


def test_a_task_no_worker_can_hold(cli: Cli, dask_cluster: DaskCluster) -> None:
    setup(
        cli,
        f"executor: dask\ndask: {{scheduler: {dask_cluster.address}}}\n"
        "pools: [{name: spot, market: spot}]\n",
        'name: wf\ntasks:\n  - {id: big, command: ["true"], vcpus: 4, memory: 256}\n',
    )
    said = refused(cli, "run", "wf.yaml", lines=2)  # the core's list of such tasks
    assert said.startswith("error: some tasks cannot run on this capacity:")
    assert "big needs 4 vCPUs" in said and "pool 'spot' has 1 instance of 2 vCPUs" in said


def test_a_task_that_fits_the_pools_shape_but_no_single_worker(
    cli: Cli, dask_cluster: DaskCluster
) -> None:
    dask_cluster.start_worker("wide", {"vcpus": 4, "memory": 1024, "pool-mixed": 1})
    dask_cluster.start_worker("tall", {"vcpus": 1, "memory": 8192, "pool-mixed": 1})
    setup(
        cli,
        f"executor: dask\ndask: {{scheduler: {dask_cluster.address}}}\n"
        "pools: [{name: mixed, market: on_demand}]\n",
        'name: wf\ntasks:\n  - {id: both, command: ["true"], vcpus: 2, memory: 4096}\n',
    )
    done = cli("run", "wf.yaml", timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "tasks[0] (both): no single worker of pool 'mixed'" in done.stderr
    assert "wide" in done.stderr and "tall" in done.stderr


def test_a_pool_whose_marker_no_worker_carries(cli: Cli, dask_cluster: DaskCluster) -> None:
    setup(
        cli,
        f"executor: dask\ndask: {{scheduler: {dask_cluster.address}}}\n"
        "pools:\n  - {name: spot, market: spot}\n  - {name: gpu, market: on_demand}\n",
    )
    line = refused(cli, "run", "wf.yaml")
    assert line.startswith("error: stormproof.yaml:5: pools[1]: pool 'gpu'"), line
    assert "'pool-gpu'" in line and "pool-ondemand" in line and "pool-spot" in line


def test_a_worker_that_cannot_import_stormproof(cli: Cli, dask_cluster: DaskCluster) -> None:
    hide = (
        "import sys; sys.modules['stormproof'] = None; "
        "from distributed.cli.dask_worker import main; main()"
    )
    bare = [sys.executable, "-c", hide]
    dask_cluster.start_worker("bare", {"vcpus": 1, "memory": 512}, argv=bare)
    setup(cli, f"executor: dask\ndask: {{scheduler: {dask_cluster.address}}}\n")
    line = refused(cli, "run", "wf.yaml")
    assert "cannot run stormproof's wrapper" in line and "install stormproof on the workers" in line


@pytest.fixture(scope="module")
def old_dask(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dask and distributed of another release, installed aside (pip, from PyPI)."""
    require_dask()
    target = tmp_path_factory.mktemp("old-dask")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
         str(target), f"dask=={OLD_DASK}", f"distributed=={OLD_DASK}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        why = f"cannot install dask {OLD_DASK} from PyPI: {done.stderr.strip()[-300:]}"
        if _ci():
            pytest.fail(why)
        pytest.skip(why)
    return target


@pytest.fixture
def old_scheduler(tmp_path: Path, old_dask: Path) -> Iterator[DaskCluster]:
    cluster = DaskCluster(tmp_path / "old")
    cluster.root.mkdir()
    env = _env()
    env["PYTHONPATH"] = str(old_dask)
    try:
        cluster.start_scheduler(env=env)
        yield cluster
    finally:
        cluster.stop()


def test_a_scheduler_of_another_dask_version(cli: Cli, old_scheduler: DaskCluster) -> None:
    setup(cli, f"executor: dask\ndask:\n  scheduler: {old_scheduler.address}\n")
    line = refused(cli, "run", "wf.yaml")
    assert line.startswith("error: stormproof.yaml:3: dask.scheduler: the Dask scheduler at")
    assert f"distributed {OLD_DASK} there" in line
    assert f"pip install 'dask=={OLD_DASK}' 'distributed=={OLD_DASK}'" in line


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            "executor: dask\ndask:\n  scheduler: tcp://h:8786\n  local: {workers: 2}\n",
            "stormproof.yaml:2: dask: give only one of scheduler",
        ),
        ("executor: dask\ndask: {connect_timeout: 5s}\n", "dask: give one of scheduler"),
        ("executor: dask\n", "stormproof.yaml:1: executor: executor: dask needs a dask section"),
        (
            "executor: local\ndask: {local: {workers: 2}}\n",
            "stormproof.yaml:2: dask: only used with executor: dask",
        ),
        (
            "executor: dask\ndask: {scheduler: 'http://h:8786/x'}\n",
            "dask.scheduler: 'http://h:8786/x' is not a Dask scheduler address",
        ),
        (
            "executor: dask\ndask:\n  local: {workers: 2}\n  pools: {spott: {resource: x}}\n"
            "pools: [{name: spot, market: spot}]\n",
            "dask.pools.spott: no pool is named 'spott' (did you mean 'spot'?)",
        ),
        (
            "executor: dask\ndask:\n  local: {wrkers: 2}\n",
            "stormproof.yaml:3: dask.local.wrkers: unknown field (did you mean 'workers'?)",
        ),
    ],
)
def test_a_dask_section_that_says_nothing_or_too_much(cli: Cli, config: str, expected: str) -> None:
    setup(cli, config)
    line = refused(cli, "run", "wf.yaml")
    assert expected in line, line


def test_without_the_dask_extra_the_error_names_it(cli: Cli) -> None:
    setup(cli, "executor: dask\ndask:\n  local: {workers: 1}\n")
    no_dask = (
        "import sys; sys.modules['distributed'] = None; sys.argv = ['stormproof', 'run', "
        "'wf.yaml']; from stormproof.cli.main import main; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", no_dask], cwd=cli.cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "error: executor 'dask' needs dask.distributed, which is not installed here: "
        "pip install 'stormproof[dask]'"
    )


def _ci() -> bool:
    import os

    return os.environ.get("CI") == "true"
