from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stormproof.store.sqlite import SQLiteEventLog

from .helpers import Child


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "stormproof.db"


@pytest.fixture
def log(db_path: Path) -> Iterator[SQLiteEventLog]:
    with SQLiteEventLog(db_path) as store:
        yield store


@pytest.fixture
def child(db_path: Path) -> Iterator[Callable[..., Child]]:
    """Start children against ``db_path``; whatever is still running at the end is killed."""
    started: list[Child] = []

    def start(script: str, synchronous: str = "full") -> Child:
        started.append(Child(script, db_path, synchronous))
        return started[-1]

    yield start
    for c in started:
        c.cleanup()
