"""Fixtures for real-process tests of the local executor (see ``_harness``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.executors._harness import Harness, set_subreaper


@pytest.fixture(autouse=True)
def _reap_orphans() -> Iterator[None]:
    set_subreaper(True)
    try:
        yield
    finally:
        set_subreaper(False)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path / "run")
    try:
        yield h
    finally:
        h.cleanup()
