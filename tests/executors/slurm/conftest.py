"""Fixtures: one real Slurm cluster for the whole session (``_cluster``), clean between tests.

Starting a cluster takes about a second, but every test leaves it as it found it instead:
no job left in the queue, every node up. The cluster is missing only when Debian's packages
are (``.ci/apt-packages``): then these tests skip with the reason on a developer's machine,
and fail under ``CI=true``, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.executors.slurm import _cluster
from tests.executors.slurm._cluster import Cluster
from tests.executors.slurm.helpers import CONFIG, Cli


def _require_slurm() -> None:
    missing = _cluster.missing_programs()
    if not missing:
        return
    why = (
        f"Slurm is not installed ({', '.join(missing)} missing): "
        f"apt-get install --no-install-recommends {' '.join(_cluster.PACKAGES)}"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {why}", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="session")
def slurm_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The session's cluster: two nodes, partitions ``spot`` and ``ondemand``."""
    _require_slurm()
    cluster = _cluster.start(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def slurm(slurm_session: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """The cluster, with ``SLURM_CONF`` set for the test, and reset after it."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_session.conf))
    try:
        yield slurm_session
    finally:
        slurm_session.reset()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "home" / "runs" / "r1"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def cli(slurm: Cluster, tmp_path: Path) -> Iterator[Cli]:
    """The ``stormproof`` command in a scratch directory with the test cluster's config."""
    runner = Cli(tmp_path, [], cluster=slurm)
    runner.write("stormproof.yaml", CONFIG)
    try:
        yield runner
    finally:
        runner.close()
