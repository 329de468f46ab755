"""Fixtures: a real Dask cluster per test (``_cluster``), skipped with a reason when Dask is
not installed, except under ``CI=true``, where a missing Dask fails instead."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import Cli, _kill_leftovers
from tests.executors.dask._cluster import ONDEMAND, SPOT, DaskCluster, running_cluster


def require_dask() -> None:
    if importlib.util.find_spec("distributed") is not None:
        return
    why = "dask.distributed is not installed (pip install -e '.[test]'): the Dask tests need it"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[DaskCluster]:
    """A scheduler, one spot worker and one on-demand worker (2 vCPUs, 2 GiB each)."""
    require_dask()
    with running_cluster(tmp_path / "cluster", {"spot-1": SPOT, "ondemand-1": ONDEMAND}) as c:
        yield c


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    """The real ``stormproof`` command in a scratch directory (``tests/cli``'s helper)."""
    c = Cli(tmp_path / "work", [])
    c.cwd.mkdir()
    yield c
    for p in c.procs:
        if p.poll() is None:
            p.kill()
        p.communicate()
    _kill_leftovers(c.cwd)
