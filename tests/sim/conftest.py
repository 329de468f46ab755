"""The real-CLI fixture, shared with tests/cli."""

from ..cli.conftest import cli  # noqa: F401  (a pytest fixture, found by name)
