"""``@record``: immutable to the type checker, cheap to build, equal and hashable by value."""

from __future__ import annotations

from pathlib import Path

from mypy import api

from stormproof.core.decisions import AttemptEnded, LaunchAttempt
from stormproof.core.defs import Resources
from stormproof.core.events import AttemptExited


def test_records_are_equal_and_hashable_by_value() -> None:
    a = AttemptExited(1.0, "t/1", 0)
    b = AttemptExited(1.0, "t/1", 0)
    assert a == b and hash(a) == hash(b)
    assert {a, b} == {a}
    assert a != AttemptExited(1.0, "t/1", 1)
    assert {Resources(1, 64): "x"}[Resources(1, 64)] == "x"
    launch = LaunchAttempt("t/1", "t", 1, ("p-0",), "p")
    assert launch.to_dict()["instances"] == ("p-0",)


def test_records_have_no_instance_dict() -> None:
    """Slotted: no per-object ``__dict__`` (memory per task in the core)."""
    assert not hasattr(AttemptEnded("t/1", "t", "succeeded", None, 0, None), "__dict__")


def test_the_type_checker_refuses_to_change_a_record(tmp_path: Path) -> None:
    snippet = tmp_path / "change.py"
    snippet.write_text(
        "from stormproof.core.events import AttemptExited\n"
        "from stormproof.core.defs import Resources\n"
        "e = AttemptExited(1.0, 't/1', 0)\n"
        "e.exit_code = 3\n"
        "r = Resources(1, 64)\n"
        "r.vcpus = 2\n"
    )
    out, err, status = api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(snippet)]
    )
    assert status == 1, out + err
    assert 'Property "exit_code" defined in "AttemptExited" is read-only' in out
    assert 'Property "vcpus" defined in "Resources" is read-only' in out
