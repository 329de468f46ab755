"""Every bad input ends in one SpecError that names the place and the fix, never a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from stormproof.errors import SpecError
from stormproof.spec.load import load_workflow, parse_workflow
from stormproof.spec.problems import MAX_MESSAGES
from tests.spec.bad_workflows import CASES, EXPECTED, case_bytes, write_case

CASE_IDS = [case[0] for case in CASES]


def _fails(path: Path) -> SpecError:
    with pytest.raises(SpecError) as caught:
        load_workflow(path)
    return caught.value


def test_the_case_list_is_complete_and_consistent() -> None:
    assert len(CASES) >= 25
    assert len(set(CASE_IDS)) == len(CASE_IDS)
    assert set(EXPECTED) == set(CASE_IDS)
    assert all(Path(name).suffix in (".json", ".yaml") for _, name, _ in CASES)


@pytest.mark.parametrize(("case_id", "file_name", "text"), CASES, ids=CASE_IDS)
def test_bad_file_raises_one_clear_spec_error(
    tmp_path: Path, case_id: str, file_name: str, text: str
) -> None:
    path = write_case(tmp_path, file_name, text)
    err = _fails(path)
    message = str(err)
    assert EXPECTED[case_id] in message
    assert message.startswith(f"{path}: ")
    assert err.source == str(path)
    assert err.messages
    for banned in ("Traceback", "errors.pydantic.dev", "Input should be", "Value error,"):
        assert banned not in message


@pytest.mark.parametrize(("case_id", "file_name", "text"), CASES, ids=CASE_IDS)
def test_parse_workflow_reports_the_same_problem(case_id: str, file_name: str, text: str) -> None:
    fmt = "json" if file_name.endswith(".json") else "yaml"
    with pytest.raises(SpecError) as caught:
        parse_workflow(text, "<stdin>", fmt)
    if case_id == "not_utf8":  # a str cannot be "not UTF-8"; it holds a lone surrogate
        assert "not valid Unicode" in str(caught.value)
    else:
        assert EXPECTED[case_id] in str(caught.value)
    assert str(caught.value).startswith("<stdin>: ")


def test_all_problems_are_reported_in_line_order(tmp_path: Path) -> None:
    text = (
        "name: demo\n"  # 1
        "tasks:\n"  # 2
        "  - id: prep\n"  # 3
        "    command: [run]\n"  # 4
        "    vcpus: eight\n"  # 5
        "  - id: md\n"  # 6
        "    command: [run]\n"  # 7
        "    depends_on: [perp]\n"  # 8
        "    memroy: 4096\n"  # 9
        "  - id: a\n"  # 10
        "    command: [run]\n"  # 11
        "    depends_on: [b]\n"  # 12
        "  - id: b\n"  # 13
        "    command: [run]\n"  # 14
        "    depends_on: [a]\n"  # 15
    )
    err = _fails(write_case(tmp_path, "wf.yaml", text))
    assert err.messages == [
        "line 5: tasks[0] (prep).vcpus: expected a number, got 'eight' "
        "(the number of vCPUs, e.g. 2 or 0.5)",
        "line 8: tasks[1] (md).depends_on: unknown task 'perp' (did you mean 'prep'?)",
        "line 9: tasks[1] (md): unknown field 'memroy' (did you mean 'memory'?)",
        "line 12: tasks[2] (a).depends_on: dependency cycle a -> b -> a "
        "(each task waits for the next, so none can start; remove one of these dependencies)",
    ]
    assert str(err).startswith(f"{tmp_path / 'wf.yaml'}: 4 problems\n  - line 5: ")


def test_graph_problems_of_a_valid_json_model_get_line_numbers(tmp_path: Path) -> None:
    doc = {
        "name": "demo",
        "tasks": [
            {"id": "a", "command": ["run"]},
            {"id": "b", "command": ["run"], "depends_on": ["c"]},
        ],
    }
    err = _fails(write_case(tmp_path, "wf.json", json.dumps(doc, indent=2)))
    assert err.messages == [
        "line 16: tasks[1] (b).depends_on: unknown task 'c' "
        "(check the spelling, or add a task with that id)"
    ]


def test_many_problems_are_counted_not_all_listed(tmp_path: Path) -> None:
    tasks = [{"id": f"t{i}", "command": ["run"], "vcpus": "x"} for i in range(250)]
    text = json.dumps({"name": "demo", "tasks": tasks})
    err = _fails(write_case(tmp_path, "wf.json", text))
    assert len(err.messages) == MAX_MESSAGES + 1
    assert err.messages[-1] == f"... and {250 - MAX_MESSAGES} more problems (fix these first)"


def test_missing_file(tmp_path: Path) -> None:
    err = _fails(tmp_path / "nope.yaml")
    assert str(err) == f"{tmp_path / 'nope.yaml'}: no such file (check the path)"


def test_directory(tmp_path: Path) -> None:
    assert "is a directory, not a workflow file" in str(_fails(tmp_path))


def _refuse_open(monkeypatch: pytest.MonkeyPatch, path: Path, error: OSError) -> None:
    """Make opening ``path`` (and only it) fail with ``error``: the tests run as root."""
    real = os.open

    def refusing(name: Any, *args: Any, **kwargs: Any) -> int:
        if str(name) == str(path):
            raise error
        return real(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_case(tmp_path, "wf.yaml", "name: x\n")
    _refuse_open(monkeypatch, path, PermissionError(13, "Permission denied", str(path)))
    assert "cannot be read: permission denied" in str(_fails(path))


def test_other_os_errors_are_spec_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "wf.json"
    _refuse_open(monkeypatch, path, OSError(5, "Input/output error"))
    assert "cannot be read: Input/output error" in str(_fails(path))


@pytest.mark.parametrize("depth", [900, 100_000])
@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_absurd_nesting_is_a_spec_error(tmp_path: Path, depth: int, suffix: str) -> None:
    text = '{"name": "x", "tasks": ' + "[" * depth + "]" * depth + "}"
    err = _fails(write_case(tmp_path, "wf" + suffix, text))
    assert "Traceback" not in str(err)


def test_json_syntax_error_of_unknown_extension_is_reported_as_json(tmp_path: Path) -> None:
    err = _fails(write_case(tmp_path, "wf.txt", '{"name": "x", "tasks": [}'))
    assert "invalid JSON" in str(err)


def test_yaml_syntax_error_of_unknown_extension_is_reported_as_yaml(tmp_path: Path) -> None:
    err = _fails(write_case(tmp_path, "wf.txt", "name: x\ntasks: [\n"))
    assert "invalid YAML" in str(err)


def test_case_bytes_keep_raw_bytes() -> None:
    text = next(text for case_id, _, text in CASES if case_id == "not_utf8")
    assert case_bytes(text) == b"name: caf\xe9\ntasks: []\n"
