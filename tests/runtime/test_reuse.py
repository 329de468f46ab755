"""Outputs of a result: recorded by stat, checked, copied with their times (``runtime.reuse``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stormproof.errors import StormproofError
from stormproof.runtime.reuse import copy_reused, output_stats, outputs_problem
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
