"""Outputs of a result: recorded by stat, checked, copied with their times (``runtime.reuse``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stormproof.errors import StormproofError
from stormproof.runtime.fingerprint import definitions, what_changed
from stormproof.runtime.reuse import copy_reused, output_stats, outputs_problem, result_of
from stormproof.spec.model import WorkflowSpec
from stormproof.store.base import TaskResult


def made(data: Path) -> TaskResult:
    (data / "plots").mkdir(parents=True)
    (data / "plots" / "a.png").write_bytes(b"png")
    (data / "x.nc").write_bytes(b"0123")
    stats = output_stats(data, ["x.nc", "plots"])
    return TaskResult("fp", "r0", "t", "wf", 1.0, {"data_dir": str(data), "outputs": stats})


def test_outputs_as_left_are_reusable_and_any_change_or_loss_is_named(tmp_path: Path) -> None:
    result = made(tmp_path / "r0")
    assert outputs_problem(result, ["x.nc", "plots"]) is None
    (tmp_path / "r0" / "plots" / "b.png").write_bytes(b"")  # a file added to a folder output
    assert outputs_problem(result, ["x.nc", "plots"]) == "output changed since run r0: plots"
    (tmp_path / "r0" / "x.nc").unlink()
    assert outputs_problem(result, ["x.nc"]) == "output missing: x.nc"
    assert outputs_problem(result, ["never.nc"]) == "output missing in run r0: never.nc"


def test_a_copy_keeps_times_so_the_new_run_records_the_same_stats(tmp_path: Path) -> None:
    made(tmp_path / "r0")
    os.utime(tmp_path / "r0" / "x.nc", ns=(1_000_000_000, 1_000_000_000))
    copy = {
        "task": "t",
        "run": "r0",
        "data_dir": str(tmp_path / "r0"),
        "outputs": ["x.nc", "plots"],
    }
    copy_reused({"copy": [copy]}, tmp_path / "r1", "r1")
    copy_reused({"copy": [copy]}, tmp_path / "r1", "r1")  # again after a crash: harmless
    assert output_stats(tmp_path / "r1", ["x.nc", "plots"]) == output_stats(
        tmp_path / "r0", ["x.nc", "plots"]
    )


def test_outputs_gone_before_the_copy_are_a_clear_error(tmp_path: Path) -> None:
    copy = {"task": "t", "run": "r0", "data_dir": str(tmp_path / "gone"), "outputs": ["x.nc"]}
    with pytest.raises(StormproofError, match=r"cannot copy the outputs of task 't' from run 'r0'"):
        copy_reused({"copy": [copy]}, tmp_path / "r1", "r1")


def _rewrite(path: Path, data: bytes, *, keep_mtime: bool) -> None:
    """Rewrite ``path``; with ``keep_mtime`` its modification time is put back as it was."""
    before = path.stat()
    path.write_bytes(data)
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    else:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))


@pytest.mark.parametrize(
    ("output", "inside", "data", "keep_mtime"),
    [
        ("x.nc", "x.nc", b"01234", True),  # a file that grew, its time put back
        ("x.nc", "x.nc", b"abcd", False),  # same size, rewritten later
        ("plots", "plots/a.png", b"a larger png", True),  # not the last file of the folder
        ("plots", "plots/a.png", b"PNG", False),  # same size, rewritten later
    ],
)
def test_a_rewritten_output_is_never_reused(
    tmp_path: Path, output: str, inside: str, data: bytes, keep_mtime: bool
) -> None:
    result = made(tmp_path / "r0")
    (tmp_path / "r0" / "plots" / "b.png").write_bytes(b"b")
    result = TaskResult(
        "fp", "r0", "t", "wf", 1.0,
        {"data_dir": str(tmp_path / "r0"), "outputs": output_stats(tmp_path / "r0", [output])},
    )  # fmt: skip
    _rewrite(tmp_path / "r0" / inside, data, keep_mtime=keep_mtime)
    assert outputs_problem(result, [output]) == f"output changed since run r0: {output}"


def test_a_file_output_replaced_by_a_folder_of_the_same_name_is_never_reused(
    tmp_path: Path,
) -> None:
    result = made(tmp_path / "r0")
    (tmp_path / "r0" / "x.nc").unlink()
    (tmp_path / "r0" / "x.nc").mkdir()
    assert outputs_problem(result, ["x.nc"]) == "output changed since run r0: x.nc"


def test_a_nested_output_is_copied_into_folders_the_new_run_does_not_have_yet(
    tmp_path: Path,
) -> None:
    nested = tmp_path / "r0" / "results" / "2024"
    nested.mkdir(parents=True)
    (nested / "x.nc").write_bytes(b"x")
    copy = {
        "task": "t",
        "run": "r0",
        "data_dir": str(tmp_path / "r0"),
        "outputs": ["results/2024/x.nc"],
    }
    copy_reused({"copy": [copy]}, tmp_path / "r1", "r1")
    assert (tmp_path / "r1" / "results" / "2024" / "x.nc").read_bytes() == b"x"


def test_a_result_records_the_definition_a_later_run_compares_with(tmp_path: Path) -> None:
    spec = WorkflowSpec.model_validate({"name": "wf", "tasks": [{"id": "t", "command": "x"}]})
    (definition,) = definitions(spec, {}, None)
    made(tmp_path / "r0")
    result = result_of("r0", "wf", "t", definition, tmp_path / "r0", ["x.nc"], 5.0)
    assert result.definition == {"parts": definition.parts, "inputs": definition.inputs}
    assert result.data["outputs"] == output_stats(tmp_path / "r0", ["x.nc"])
    assert what_changed(result.definition, definition) == []


def test_a_recorded_stat_keeps_the_shape_earlier_versions_stored(tmp_path: Path) -> None:
    """Results in users' stores hold these lists: a new shape would make every recorded
    output look changed, and every task rerun, after an upgrade."""
    made(tmp_path / "r0")
    (tmp_path / "r0" / "plots" / "b.png").write_bytes(b"bb")
    x, a, b = (os.stat(tmp_path / "r0" / p) for p in ("x.nc", "plots/a.png", "plots/b.png"))
    folder = os.stat(tmp_path / "r0" / "plots")
    newest = max(folder.st_mtime_ns, a.st_mtime_ns, b.st_mtime_ns)
    assert output_stats(tmp_path / "r0", ["x.nc", "plots", "none"]) == {
        "x.nc": ["file", 4, x.st_mtime_ns, 1],
        "plots": ["dir", 5, newest, 2],
        "none": None,
    }
