"""The real ``stormproof`` command in a scratch directory (shared with ``tests/cli``)."""

from __future__ import annotations

from ..cli.conftest import cli  # noqa: F401  (the fixture, used by name)
