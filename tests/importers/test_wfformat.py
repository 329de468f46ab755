"""`stormproof import wfformat`: real WfInstances traces and small hand-made ones, in both layouts.

Every imported workflow is written as YAML and loaded back with the real
loader (``load_workflow``), so "it validates" is checked the way `run` and
`plan` check it. Expected values are computed from the source documents,
never typed in.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from stormproof.cli.import_cmd import import_
from stormproof.importers.files import read_json
from stormproof.importers.render import render_yaml
from stormproof.importers.wfformat.convert import ImportResult, convert, header_lines
from stormproof.importers.wfformat.options import (
    DEFAULT_MEMORY_MIB,
    DEFAULT_TIME_FACTOR,
    ImportOptions,
)
from stormproof.importers.wfformat.task_documents import sanitize_ids
from stormproof.importers.wfformat.trace import WfFormatError
from stormproof.spec.load import load_workflow
from stormproof.spec.model import TASK_ID_PATTERN, TaskSpec, WorkflowSpec

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO.parent / "shared" / "data" / "wfinstances"
SAMPLE_FILES = sorted(SAMPLES.glob("*.json")) if SAMPLES.is_dir() else []
MIB = 1024 * 1024


# --------------------------------------------------------------------------- helpers


def split_doc(
    tasks: list[dict[str, Any]], execution: list[dict[str, Any]] | None, **top: Any
) -> dict[str, Any]:
    """A WfFormat 1.5 document: specification tasks, and execution entries unless None."""
    workflow: dict[str, Any] = {"specification": {"tasks": tasks, "files": []}}
    if execution is not None:
        workflow["execution"] = {
            "makespanInSeconds": 99.5,
            "executedAt": "2024-01-01T00:00:00Z",
            "tasks": execution,
        }
    return {"name": "small", "schemaVersion": "1.5", "workflow": workflow, **top}


def small_split() -> dict[str, Any]:
    """Fork-join: split -> (work_a, work_b) -> merge; one edge given only as a child."""
    spec = [
        {"id": "split_ID01", "name": "split", "parents": [], "children": ["work_ID02"]},
        {"id": "work_ID02", "name": "work", "parents": ["split_ID01"], "children": []},
        {"id": "work_ID03", "name": "work", "parents": ["split_ID01"], "children": ["merge_ID04"]},
        {"id": "merge_ID04", "name": "merge", "parents": ["work_ID02"], "children": []},
    ]
    execution = [
        {
            "id": "split_ID01",
            "runtimeInSeconds": 2.5,
            "coreCount": 2,
            "memoryInBytes": 3 * MIB + 1,
            "command": {"program": "split", "arguments": ["-n", "2", "in put.txt"]},
        },
        {"id": "work_ID02", "runtimeInSeconds": 10, "memoryInBytes": 512 * MIB},
        {"id": "work_ID03", "runtimeInSeconds": 12.25, "coreCount": 1.5},
        {"id": "merge_ID04", "runtimeInSeconds": 0.01, "command": {"program": "merge"}},
    ]
    return split_doc(spec, execution)


def small_flat() -> dict[str, Any]:
    """The same workflow as WfFormat 1.4 (flat, references by name, KB memory, `runtime`)."""
    return {
        "name": "small-flat",
        "schemaVersion": "1.4",
        "workflow": {
            "makespanInSeconds": 99.5,
            "tasks": [
                {
                    "name": "split_ID01",
                    "id": "ID01",
                    "runtimeInSeconds": 2.5,
                    "cores": 2,
                    "memoryInBytes": 3 * MIB + 1,
                    "command": {"program": "split", "arguments": ["-n", "2", "in put.txt"]},
                    "parents": [],
                    "children": ["work_ID02"],
                },
                {"name": "work_ID02", "id": "ID02", "runtime": 10, "memory": 512 * MIB // 1000},
                {
                    "name": "work_ID03",
                    "id": "ID03",
                    "runtime": 12.25,
                    "cores": 1.5,
                    "parents": ["ID01"],  # by id: a hand-made file may do that
                    "children": ["merge_ID04"],
                },
                {
                    "name": "merge_ID04",
                    "id": "ID04",
                    "runtime": 0.01,
                    "command": {"program": "merge"},
                    "parents": ["work_ID02"],
                },
            ],
        },
    }


def source_edges(document: dict[str, Any]) -> set[tuple[str, str]]:
    """(parent, child) pairs of a 1.5 document: the union of parents and children."""
    tasks = document["workflow"]["specification"]["tasks"]
    edges = {(p, t["id"]) for t in tasks for p in t.get("parents", [])}
    return edges | {(t["id"], c) for t in tasks for c in t.get("children", [])}


def imported_edges(spec: WorkflowSpec) -> set[tuple[str, str]]:
    """(parent, child) pairs of an imported workflow, in the original ids (labels.wf_id)."""
    original = {t.id: t.labels["wf_id"] for t in spec.tasks}
    return {(original[d], original[t.id]) for t in spec.tasks for d in t.depends_on}


def write_and_load(tmp_path: Path, result: ImportResult, options: ImportOptions) -> WorkflowSpec:
    """Write the import as the command does, then load it with the real loader."""
    path = tmp_path / "imported.yaml"
    path.write_text(render_yaml(result.workflow, header_lines(result, "in.json", options)))
    return load_workflow(path)


def by_original(spec: WorkflowSpec) -> dict[str, TaskSpec]:
    return {t.labels["wf_id"]: t for t in spec.tasks}


def sleep_seconds(task: TaskSpec) -> float:
    assert isinstance(task.command, list) and task.command[0] == "sleep", task.command
    return float(task.command[1])


def message(excinfo: pytest.ExceptionInfo[WfFormatError]) -> str:
    return str(excinfo.value)


# --------------------------------------------------------------------------- the real traces


@pytest.mark.parametrize(
    "path",
    SAMPLE_FILES
    or [pytest.param(None, marks=pytest.mark.skip(reason=f"no WfInstances samples in {SAMPLES}"))],
    ids=lambda p: p.name if isinstance(p, Path) else "absent",
)
def test_each_wfinstances_trace_imports_and_validates(tmp_path: Path, path: Path) -> None:
    document = json.loads(path.read_text())
    options = ImportOptions()
    result = convert(document, options, source=str(path))
    spec = write_and_load(tmp_path, result, options)

    source_tasks = document["workflow"]["specification"]["tasks"]
    executed = {e["id"]: e for e in document["workflow"]["execution"]["tasks"]}
    assert len(spec.tasks) == result.tasks == len(source_tasks)
    assert imported_edges(spec) == source_edges(document)
    assert result.edges == len(source_edges(document))
    tasks = by_original(spec)
    assert set(tasks) == {t["id"] for t in source_tasks}
    for task_id, task in tasks.items():
        entry = executed[task_id]
        assert task.estimated_runtime == entry["runtimeInSeconds"]
        assert sleep_seconds(task) == pytest.approx(
            entry["runtimeInSeconds"] * DEFAULT_TIME_FACTOR, abs=1e-6
        )
        assert task.vcpus == entry.get("coreCount", 1)
        memory = entry.get("memoryInBytes")
        assert task.memory == (math.ceil(memory / MIB) if memory else DEFAULT_MEMORY_MIB)
        program = entry["command"]["program"]
        assert shlex.split(task.labels["wf_command"]) == [program, *entry["command"]["arguments"]]
    position = {t.id: i for i, t in enumerate(spec.tasks)}
    assert all(position[d] < position[t.id] for t in spec.tasks for d in t.depends_on)
    assert spec.name == document["name"]


# --------------------------------------------------------------------------- both layouts


@pytest.mark.parametrize("make", [small_split, small_flat], ids=["1.5-split", "1.4-flat"])
def test_a_small_trace_in_either_layout(tmp_path: Path, make: Any) -> None:
    document = make()
    options = ImportOptions(time_factor=0.5)
    result = convert(document, options)
    spec = write_and_load(tmp_path, result, options)

    assert result.layout == ("split" if "specification" in document["workflow"] else "flat")
    assert [t.id for t in spec.tasks] == ["split_ID01", "work_ID02", "work_ID03", "merge_ID04"]
    deps = {t.id: t.depends_on for t in spec.tasks}
    assert deps == {
        "split_ID01": [],
        "work_ID02": ["split_ID01"],
        "work_ID03": ["split_ID01"],
        "merge_ID04": ["work_ID02", "work_ID03"],  # work_ID03 -> merge only as a child
    }
    runtimes = {t.id: t.estimated_runtime for t in spec.tasks}
    assert runtimes == {"split_ID01": 2.5, "work_ID02": 10, "work_ID03": 12.25, "merge_ID04": 0.01}
    assert {t.id: sleep_seconds(t) for t in spec.tasks} == {k: v * 0.5 for k, v in runtimes.items()}
    assert {t.id: t.vcpus for t in spec.tasks} == {
        "split_ID01": 2,
        "work_ID02": 1,
        "work_ID03": 1.5,
        "merge_ID04": 1,
    }
    memory = {t.id: t.memory for t in spec.tasks}
    assert memory["split_ID01"] == 4  # 3 MiB + 1 byte, rounded up
    assert memory["work_ID03"] == DEFAULT_MEMORY_MIB  # none traced
    assert memory["work_ID02"] == 512  # 1.4: 536870 KB of 1000 bytes, rounded up to MiB
    split = spec.tasks[0]
    assert shlex.split(split.labels["wf_command"]) == ["split", "-n", "2", "in put.txt"]
    assert spec.tasks[3].labels["wf_command"] == "merge"
    assert "wf_command" not in spec.tasks[1].labels
    assert spec.description.startswith("Imported from a WfFormat")
    assert "traced makespan 99.5 s" in spec.description


def test_the_flat_layout_keeps_both_old_identifiers_in_labels(tmp_path: Path) -> None:
    spec = write_and_load(tmp_path, convert(small_flat()), ImportOptions())
    assert spec.tasks[0].labels["wf_id"] == "ID01"
    assert spec.tasks[0].labels["wf_name"] == "split_ID01"


def test_a_command_given_as_one_string_is_kept_as_it_is(tmp_path: Path) -> None:
    document = split_doc([{"id": "a"}], [{"id": "a", "runtimeInSeconds": 1, "command": "x 'y"}])
    spec = write_and_load(tmp_path, convert(document), ImportOptions())
    assert spec.tasks[0].labels["wf_command"] == "x 'y"


def test_the_pre_1_3_jobs_list_with_bare_arguments(tmp_path: Path) -> None:
    document = {
        "name": "old",
        "schemaVersion": "1.2",
        "workflow": {
            "makespan": 5,
            "jobs": [
                {"name": "a", "runtime": 1, "arguments": ["x", "y"]},
                {"name": "b", "runtime": 2, "parents": ["a"]},
            ],
        },
    }
    spec = write_and_load(tmp_path, convert(document), ImportOptions())
    assert [(t.id, t.depends_on, t.estimated_runtime) for t in spec.tasks] == [
        ("a", [], 1),
        ("b", ["a"], 2),
    ]
    assert spec.tasks[0].labels["wf_command"] == "x y"


def test_a_file_out_of_dependency_order_is_written_parents_first(tmp_path: Path) -> None:
    spec_tasks = [
        {"id": "c", "parents": ["b"]},
        {"id": "b", "parents": ["a"]},
        {"id": "a", "parents": []},
        {"id": "d", "parents": []},
    ]
    execution = [{"id": t["id"], "runtimeInSeconds": 1} for t in spec_tasks]
    spec = write_and_load(tmp_path, convert(split_doc(spec_tasks, execution)), ImportOptions())
    assert [t.id for t in spec.tasks] == ["a", "b", "c", "d"]


def test_an_edge_given_at_both_ends_or_twice_counts_once() -> None:
    spec_tasks = [
        {"id": "a", "children": ["b", "b"]},
        {"id": "b", "parents": ["a", "a"]},
    ]
    execution = [{"id": "a", "runtimeInSeconds": 1}, {"id": "b", "runtimeInSeconds": 1}]
    result = convert(split_doc(spec_tasks, execution))
    assert result.workflow["tasks"][1]["depends_on"] == ["a"]
    assert result.edges == 1


def test_a_chain_of_thousands_does_not_hit_the_recursion_limit() -> None:
    n = sys.getrecursionlimit() * 3
    # listed last-first, so every task waits on one further down the file
    spec_tasks = [{"id": f"t{i}", "parents": [f"t{i + 1}"] if i + 1 < n else []} for i in range(n)]
    execution = [{"id": f"t{i}", "runtimeInSeconds": 1} for i in range(n)]
    result = convert(split_doc(spec_tasks, execution))
    assert [t["id"] for t in result.workflow["tasks"]] == [f"t{i}" for i in reversed(range(n))]


# --------------------------------------------------------------------------- ids


def test_ids_outside_the_alphabet_are_made_valid_unique_and_traceable(tmp_path: Path) -> None:
    originals = ["a_b", "a:b", "a/b", "#x", "é", "x" * 200, "ok-1"]
    spec_tasks = [{"id": o, "parents": [originals[0]] if o != "a_b" else []} for o in originals]
    execution = [{"id": o, "runtimeInSeconds": 1} for o in originals]
    spec = write_and_load(tmp_path, convert(split_doc(spec_tasks, execution)), ImportOptions())

    ids = [t.id for t in spec.tasks]
    assert len(set(ids)) == len(ids)
    assert all(re.match(TASK_ID_PATTERN, i) for i in ids)
    tasks = by_original(spec)
    assert set(tasks) == set(originals)
    assert tasks["a_b"].id == "a_b" and tasks["ok-1"].id == "ok-1"  # valid ids are kept
    assert tasks["a:b"].id.startswith("a_b-") and tasks["a/b"].id.startswith("a_b-")
    assert tasks["#x"].id == "t_x"
    assert len(tasks["x" * 200].id) == 128
    assert all(t.depends_on == ["a_b"] for t in spec.tasks if t.id != "a_b")


def test_sanitised_ids_do_not_depend_on_the_order_of_colliding_tasks() -> None:
    forward = sanitize_ids(["a_b", "a:b", "a/b"])
    backward = sanitize_ids(["a/b", "a:b", "a_b"])
    assert dict(zip(["a_b", "a:b", "a/b"], forward, strict=True)) == dict(
        zip(["a/b", "a:b", "a_b"], backward, strict=True)
    )


def test_an_id_equal_to_the_hashed_form_of_another_still_gets_a_unique_id() -> None:
    first = sanitize_ids(["a_b", "a:b"])[1]
    result = sanitize_ids(["a_b", first, "a:b"])  # the hashed form is taken by a real id
    assert len(set(result)) == 3 and result[:2] == ["a_b", first]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=140), unique=True, max_size=30))
def test_sanitised_ids_are_valid_unique_and_keep_valid_ones(originals: list[str]) -> None:
    result = sanitize_ids(originals)
    assert len(set(result)) == len(result) == len(originals)
    assert all(re.match(TASK_ID_PATTERN, r) for r in result)
    assert all(
        r == o for o, r in zip(originals, result, strict=True) if re.match(TASK_ID_PATTERN, o)
    )
    assert sanitize_ids(originals) == result


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("factor", [0.0, 1e-7, 0.001, 2.0])
def test_the_time_factor_scales_the_sleep_and_never_the_estimate(
    tmp_path: Path, factor: float
) -> None:
    options = ImportOptions(time_factor=factor)
    spec = write_and_load(tmp_path, convert(small_split(), options), options)
    for task in spec.tasks:
        assert sleep_seconds(task) == pytest.approx(task.estimated_runtime * factor, abs=1e-6)
        assert isinstance(task.command, list) and "e" not in task.command[1].lower()
    assert spec.tasks[1].estimated_runtime == 10


def test_a_time_factor_that_overflows_the_sleep_is_refused() -> None:
    with pytest.raises(WfFormatError, match=r'makes "work_ID03" sleep forever'):
        convert(small_split(), ImportOptions(time_factor=1e308))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        *((f, v) for f in ("time_factor", "default_runtime") for v in (-1.0, math.nan, math.inf)),
        ("max_vcpus", 0.0),
        ("max_memory_mib", 0),
    ],
)
def test_options_out_of_range_are_refused_whoever_builds_them(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"{field} must be a finite number"):
        ImportOptions(**{field: value})


def test_caps_bound_resources_and_keep_the_traced_values_in_labels(tmp_path: Path) -> None:
    options = ImportOptions(max_vcpus=1.5, max_memory_mib=100)
    result = convert(small_split(), options)
    spec = write_and_load(tmp_path, result, options)
    tasks = {t.id: t for t in spec.tasks}
    assert tasks["split_ID01"].vcpus == 1.5 and tasks["split_ID01"].labels["wf_cores"] == "2"
    assert tasks["work_ID02"].memory == 100
    assert tasks["work_ID02"].labels["wf_memory_bytes"] == str(512 * MIB)
    assert tasks["work_ID03"].memory == 100  # the default 1024 is capped too, but not labelled
    assert "wf_memory_bytes" not in tasks["work_ID03"].labels
    assert "wf_cores" not in tasks["work_ID03"].labels
    assert result.capped == 2


def test_the_name_option_wins_over_the_file(tmp_path: Path) -> None:
    result = convert(small_split(), ImportOptions(name="mine"))
    assert result.workflow["name"] == "mine"
    del_name = small_split()
    del del_name["name"]
    assert convert(del_name, fallback_name="stem").workflow["name"] == "stem"


# --------------------------------------------------------------------------- missing runtimes


def test_a_task_without_a_runtime_is_named_with_the_fix() -> None:
    document = small_split()
    del document["workflow"]["execution"]["tasks"][2]["runtimeInSeconds"]
    document["workflow"]["execution"]["tasks"].pop(1)
    with pytest.raises(WfFormatError) as excinfo:
        convert(document, source="trace.json")
    text = message(excinfo)
    assert text.startswith("trace.json: 2 of 4 tasks have no runtime")
    assert '"work_ID02" (workflow.specification.tasks[1] has no entry in workflow.execution' in text
    assert '"work_ID03" (workflow.execution.tasks[1] has no runtimeInSeconds' in text
    assert "--default-runtime" in text


def test_default_runtime_fills_the_gaps_and_says_so(tmp_path: Path) -> None:
    document = small_split()
    del document["workflow"]["execution"]["tasks"][2]["runtimeInSeconds"]
    options = ImportOptions(default_runtime=60)
    result = convert(document, options)
    spec = write_and_load(tmp_path, result, options)
    tasks = {t.id: t for t in spec.tasks}
    assert tasks["work_ID03"].estimated_runtime == 60
    assert tasks["work_ID03"].labels["wf_runtime"] == "default"
    assert "wf_runtime" not in tasks["work_ID02"].labels
    assert result.defaulted_runtimes == 1
    assert any("--default-runtime 60 s" in line for line in header_lines(result, "x", options))


def test_a_description_without_execution_needs_a_default_runtime(tmp_path: Path) -> None:
    document = split_doc([{"id": "a"}, {"id": "b", "parents": ["a"]}], execution=None)
    with pytest.raises(WfFormatError) as excinfo:
        convert(document)
    assert "no workflow.execution section" in message(excinfo)
    assert "--default-runtime" in message(excinfo)
    options = ImportOptions(default_runtime=5)
    spec = write_and_load(tmp_path, convert(document, options), options)
    assert [t.estimated_runtime for t in spec.tasks] == [5, 5]


# --------------------------------------------------------------------------- bad input

SKELETON_HINT = 'a WfFormat file looks like {"name"'


def _exec(*ids: str) -> list[dict[str, Any]]:
    return [{"id": i, "runtimeInSeconds": 1} for i in ids]


BAD_DOCUMENTS: list[tuple[str, Any, list[str]]] = [
    ("top-level list", [1, 2], ["the top level is a list, not an object", SKELETON_HINT]),
    ("no workflow key", {"name": "x"}, ['top-level key "workflow" is missing', SKELETON_HINT]),
    (
        "a stormproof workflow",
        {"name": "x", "tasks": [{"id": "a", "command": "true"}]},
        ["looks like a stormproof workflow already", SKELETON_HINT],
    ),
    ("workflow not an object", {"workflow": []}, ['"workflow" should be an object', SKELETON_HINT]),
    (
        "neither layout",
        {"workflow": {"makespan": 1}},
        ['neither "specification" (WfFormat 1.5 and later) nor "tasks"', SKELETON_HINT],
    ),
    (
        "no tasks list",
        {"workflow": {"specification": {"files": []}}},
        ['workflow.specification has no "tasks" list', SKELETON_HINT],
    ),
    (
        "empty tasks",
        {"workflow": {"specification": {"tasks": []}}},
        ["workflow.specification.tasks is empty"],
    ),
    (
        "unknown parent",
        split_doc([{"id": "alpha"}, {"id": "beta", "parents": ["alpah"]}], _exec("alpha", "beta")),
        [
            'workflow.specification.tasks[1].parents: "alpah" is not the id of any task '
            '(did you mean "alpha"?)'
        ],
    ),
    (
        "unknown child",
        split_doc([{"id": "a", "children": ["zzz"]}], _exec("a")),
        ['workflow.specification.tasks[0].children: "zzz" is not the id of any task'],
    ),
    (
        "self parent",
        split_doc([{"id": "a", "parents": ["a"]}], _exec("a")),
        ['workflow.specification.tasks[0].parents: the task lists itself (remove "a")'],
    ),
    (
        "duplicate id",
        split_doc([{"id": "a"}, {"id": "a"}], _exec("a")),
        ['workflow.specification.tasks[1]: id "a" is used by workflow.specification.tasks[0]'],
    ),
    (
        # a <- c, b <- a, and b lists c as its child: the loop closes through "children"
        "cycle",
        split_doc(
            [
                {"id": "a", "parents": ["c"]},
                {"id": "b", "parents": ["a"], "children": ["c"]},
                {"id": "c"},
            ],
            _exec("a", "b", "c"),
        ),
        ['the dependencies form a cycle: "', "remove one of these links from parents/children"],
    ),
    (
        "execution id unknown",
        split_doc([{"id": "a"}], _exec("a", "b")),
        ['workflow.execution.tasks[1]: id "b" is not in workflow.specification.tasks'],
    ),
    (
        "execution entry twice",
        split_doc([{"id": "a"}], _exec("a", "a")),
        ['workflow.execution.tasks[1]: id "a" has an execution entry already'],
    ),
    (
        "runtime not a number",
        split_doc([{"id": "a"}], [{"id": "a", "runtimeInSeconds": "12s"}]),
        ["workflow.execution.tasks[0].runtimeInSeconds should be a number of seconds, but it is"],
    ),
    (
        "negative runtime",
        split_doc([{"id": "a"}], [{"id": "a", "runtimeInSeconds": -1}]),
        ["workflow.execution.tasks[0].runtimeInSeconds cannot be negative, but it is -1"],
    ),
    (
        "bad cores",
        split_doc([{"id": "a"}], [{"id": "a", "runtimeInSeconds": 1, "coreCount": True}]),
        ["workflow.execution.tasks[0].coreCount should be a number of cores, but it is true"],
    ),
    (
        "task id missing",
        split_doc([{"name": "a"}], _exec("a")),
        ["workflow.specification.tasks[0].id should be a non-empty string, but it is missing"],
    ),
    (
        "parents not a list",
        split_doc([{"id": "a", "parents": "b"}], _exec("a")),
        ["workflow.specification.tasks[0].parents should be a list of task ids (strings), but"],
    ),
    (
        "command of the wrong shape",
        split_doc([{"id": "a"}], [{"id": "a", "runtimeInSeconds": 1, "command": ["x"]}]),
        ["workflow.execution.tasks[0].command should be an object like"],
    ),
    (
        "lone surrogate",
        split_doc(
            [{"id": "a", "parents": ["\ud800"]}],
            [{"id": "a", "runtimeInSeconds": 1, "command": {"program": "p\udc00"}}],
        ),
        [
            'workflow.specification.tasks[0].parents holds a lone "\\udXXX" escape',
            'workflow.execution.tasks[0].command.program holds a lone "\\udXXX" escape',
        ],
    ),
    (
        "flat names repeated",
        {"workflow": {"tasks": [{"name": "a", "runtime": 1}, {"name": "a", "runtime": 1}]}},
        ['workflow.tasks[1]: name "a" is used by workflow.tasks[0] too'],
    ),
]


@pytest.mark.parametrize(
    ("case", "document", "expected"), BAD_DOCUMENTS, ids=[c[0] for c in BAD_DOCUMENTS]
)
def test_bad_documents_name_the_place_and_the_fix(
    case: str, document: Any, expected: list[str]
) -> None:
    with pytest.raises(WfFormatError) as excinfo:
        convert(document, source="trace.json")
    text = message(excinfo)
    assert text.startswith("trace.json: ")
    for part in expected:
        assert part in text, text


def test_a_cycle_is_shown_as_a_loop_of_the_original_ids() -> None:
    document = split_doc(
        [{"id": "x:1", "parents": ["x:3"]}, {"id": "x:2", "parents": ["x:1"]}, {"id": "x:3"}],
        _exec("x:1", "x:2", "x:3"),
    )
    document["workflow"]["specification"]["tasks"][2]["parents"] = ["x:2"]
    with pytest.raises(WfFormatError) as excinfo:
        convert(document)
    loop = re.search(r"cycle: (.*?) \(", message(excinfo))
    assert loop is not None
    names = [json.loads(n) for n in loop.group(1).split(" -> ")]
    assert names[0] == names[-1] and sorted(names[:-1]) == ["x:1", "x:2", "x:3"]
    parents = {t["id"]: t["parents"] for t in document["workflow"]["specification"]["tasks"]}
    assert all(a in parents[b] for a, b in itertools.pairwise(names))


def test_many_problems_are_reported_together_and_capped() -> None:
    spec_tasks = [{"id": f"t{i}", "parents": [f"missing{i}"]} for i in range(50)]
    with pytest.raises(WfFormatError) as excinfo:
        convert(split_doc(spec_tasks, _exec(*(f"t{i}" for i in range(50)))))
    assert len(excinfo.value.messages) == 21
    assert excinfo.value.messages[-1] == "... and 30 more problem(s) like these"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{\n  "name": "x",\n  "workflow": {,}\n}', "line 3, column 16: invalid JSON"),
        (b'{"name": "x", "workflow": {', "the file ends too early"),
        (b"name: x\n", "line 1, column 1: invalid JSON"),
        (b"", "the file is empty"),
        (b'{"name": "\xff"}', "line 1: the file is not UTF-8 text"),
    ],
    ids=["syntax", "truncated", "yaml", "empty", "not-utf8"],
)
def test_unreadable_json_says_where(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "trace.json"
    path.write_bytes(content)
    with pytest.raises(WfFormatError) as excinfo:
        read_json(str(path), WfFormatError)
    assert str(excinfo.value).startswith(f"{path}: ")
    assert expected in str(excinfo.value)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(WfFormatError, match="no such file"):
        read_json(str(tmp_path / "nope.json"), WfFormatError)


# --------------------------------------------------------------------------- the command


@pytest.fixture
def in_tmp(tmp_path: Path) -> Iterator[Path]:
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)


def run_import(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(import_, ["wfformat", *args], catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.exit_code, result.stdout, result.stderr


def test_the_command_writes_a_file_that_plan_can_load(in_tmp: Path) -> None:
    (in_tmp / "trace.json").write_text(json.dumps(small_split()))
    code, out, err = run_import("trace.json", "-o", "wf.yaml", "--time-factor", "0.01")
    assert code == 0, out + err
    assert "wrote wf.yaml: 4 tasks, 4 dependencies" in out
    text = (in_tmp / "wf.yaml").read_text()
    assert text.startswith("# Imported by `stormproof import wfformat` from trace.json\n")
    assert "x 0.01 (--time-factor 0.01)" in text
    spec = load_workflow(in_tmp / "wf.yaml")
    assert sleep_seconds(spec.tasks[1]) == pytest.approx(0.1)


def test_the_command_writes_to_stdout_with_a_dash(in_tmp: Path) -> None:
    (in_tmp / "trace.json").write_text(json.dumps(small_split()))
    code, out, err = run_import("trace.json", "-o", "-")
    assert code == 0, err
    assert out.startswith("# Imported by")
    assert "wrote standard output" in err
    (in_tmp / "copy.yaml").write_text(out)
    assert len(load_workflow(in_tmp / "copy.yaml").tasks) == 4


def test_the_command_refuses_to_overwrite_without_force(in_tmp: Path) -> None:
    (in_tmp / "trace.json").write_text(json.dumps(small_split()))
    (in_tmp / "wf.yaml").write_text("mine\n")
    code, _, err = run_import("trace.json", "-o", "wf.yaml")
    assert code == 2
    assert "error: wf.yaml exists already: add --force to overwrite it" in err
    assert (in_tmp / "wf.yaml").read_text() == "mine\n"
    code, _, err = run_import("trace.json", "-o", "wf.yaml", "--force")
    assert code == 0, err
    assert len(load_workflow(in_tmp / "wf.yaml").tasks) == 4
    assert not list(in_tmp.glob(".wf.yaml.*"))  # no temporary file left behind


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["missing.json", "-o", "wf.yaml"], "error: missing.json: no such file (check the path)"),
        (["trace.json", "-o", "wf.yaml", "--time-factor", "-1"], "must be a number of at least 0"),
        (["trace.json", "-o", "wf.yaml", "--time-factor", "nan"], "must be a number of at least 0"),
        (["trace.json", "-o", "wf.yaml", "--default-runtime", "soon"], "expected a duration"),
        (["trace.json", "-o", "nodir/wf.yaml"], "the directory nodir does not exist"),
        (["trace.json"], "Missing option '-o'"),
        (["bad.json", "-o", "wf.yaml"], "error: bad.json: line 1, column 2: invalid JSON"),
        (["list.json", "-o", "wf.yaml"], "error: list.json: the top level is a list"),
    ],
    ids=[
        "no-file",
        "negative-factor",
        "nan-factor",
        "bad-duration",
        "no-dir",
        "no-o",
        "json",
        "shape",
    ],
)
def test_the_command_turns_bad_input_into_one_line_and_exit_2(
    in_tmp: Path, args: list[str], expected: str
) -> None:
    (in_tmp / "trace.json").write_text(json.dumps(small_split()))
    (in_tmp / "bad.json").write_text("{nope}")
    (in_tmp / "list.json").write_text("[]")
    code, out, err = run_import(*args)
    assert code == 2
    assert expected in err, err
    assert "Traceback" not in out + err
    assert not (in_tmp / "wf.yaml").exists()


def test_the_command_says_how_to_fix_a_missing_runtime(in_tmp: Path) -> None:
    document = small_split()
    document["workflow"]["execution"]["tasks"].pop()
    (in_tmp / "trace.json").write_text(json.dumps(document))
    code, _, err = run_import("trace.json", "-o", "wf.yaml")
    assert code == 2 and "--default-runtime" in err and err.count("error:") == 1
    code, _, err = run_import("trace.json", "-o", "wf.yaml", "--default-runtime", "2m")
    assert code == 0, err
    assert load_workflow(in_tmp / "wf.yaml").tasks[3].estimated_runtime == 120


@pytest.mark.parametrize(
    "path",
    SAMPLE_FILES[:1]
    or [pytest.param(None, marks=pytest.mark.skip(reason=f"no WfInstances samples in {SAMPLES}"))],
    ids=lambda p: p.name if isinstance(p, Path) else "absent",
)
def test_the_command_imports_a_real_trace(in_tmp: Path, path: Path) -> None:
    code, _, err = run_import(str(path), "-o", "wf.yaml")
    assert code == 0, err
    spec = load_workflow(in_tmp / "wf.yaml")
    assert len(spec.tasks) == len(
        json.loads(path.read_text())["workflow"]["specification"]["tasks"]
    )


# --------------------------------------------------------------------------- end to end

_IMPORT = (
    "import sys; from stormproof.cli.import_cmd import import_; "
    "import_.main(sys.argv[1:], prog_name='stormproof import')"
)


@pytest.mark.slow
def test_an_imported_trace_runs_to_the_end_with_the_real_cli(tmp_path: Path) -> None:
    stormproof = Path(sys.executable).parent / "stormproof"
    if not stormproof.exists():
        pytest.skip(f"no stormproof console script next to {sys.executable} (pip install -e .)")
    (tmp_path / "trace.json").write_text(json.dumps(small_split()))

    def call(*cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )

    imported = call(
        sys.executable, "-c", _IMPORT, "wfformat", "trace.json", "-o", "wf.yaml",
        "--time-factor", "0.01",
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    home = str(tmp_path / "home")
    ran = call(str(stormproof), "run", "wf.yaml", "--name", "replay", "--home", home, "-q")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    status = call(str(stormproof), "status", "replay", "--json", "--home", home)
    assert status.returncode == 0, status.stderr
    view = json.loads(status.stdout)
    assert view["state"] == "succeeded"
    assert {name: task["state"] for name, task in view["tasks"].items()} == dict.fromkeys(
        ["split_ID01", "work_ID02", "work_ID03", "merge_ID04"], "succeeded"
    )
