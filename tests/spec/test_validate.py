"""The graph checks, run directly on ids and dependency lists (no files, no pydantic)."""

from __future__ import annotations

import graphlib
import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stormproof.errors import SpecError
from stormproof.spec.model import TaskSpec, WorkflowSpec
from stormproof.spec.problems import Problem, format_place, render_problems
from stormproof.spec.validate import graph_problems, validate_spec


def _texts(problems: list[Problem]) -> list[str]:
    return [p.text for p in problems]


def test_a_clean_graph_has_no_problems() -> None:
    assert graph_problems(["a", "b", "c"], [[], ["a"], ["a", "b"]]) == []


def test_dependencies_listed_later_in_the_file_are_fine() -> None:
    assert graph_problems(["c", "b", "a"], [["a", "b"], ["a"], []]) == []


def test_duplicate_ids_name_the_first_user() -> None:
    problems = graph_problems(["prep", "md", "prep", "prep"], [[], [], [], []])
    assert [(p.place, p.text) for p in problems] == [
        (("tasks", 2, "id"), "'prep' is used by tasks[0] too (give each task its own id)"),
        (("tasks", 3, "id"), "'prep' is used by tasks[0] too (give each task its own id)"),
    ]


def test_unknown_dependency_suggests_the_closest_id() -> None:
    (problem,) = graph_problems(["equilibration", "md"], [[], ["equilibraton"]])
    assert problem.place == ("tasks", 1, "depends_on")
    assert problem.at == ("tasks", 1, "depends_on", 0)
    assert problem.text == "unknown task 'equilibraton' (did you mean 'equilibration'?)"


def test_unknown_dependency_without_a_close_id() -> None:
    (problem,) = graph_problems(["a"], [["zzzzzz"]])
    assert problem.text == "unknown task 'zzzzzz' (check the spelling, or add a task with that id)"


def test_self_dependency_is_not_also_a_cycle() -> None:
    assert _texts(graph_problems(["a", "b"], [["a"], ["a"]])) == [
        "task 'a' depends on itself (remove 'a' from its depends_on)"
    ]


def test_repeated_dependency() -> None:
    problems = graph_problems(["a", "b"], [[], ["a", "a"]])
    assert [(p.at, p.text) for p in problems] == [
        (("tasks", 1, "depends_on", 1), "lists 'a' twice (remove one)")
    ]


def test_a_cycle_is_shown_as_the_cycle_from_its_first_task() -> None:
    ids = ["x", "c", "a", "b", "after"]
    deps: list[list[str | None]] = [[], ["a"], ["b"], ["c", "x"], ["a"]]
    (problem,) = graph_problems(ids, deps)
    assert problem.place == ("tasks", 1, "depends_on")
    assert problem.text.startswith("dependency cycle c -> a -> b -> c (")


def test_disjoint_cycles_are_all_reported_and_tasks_behind_them_are_not() -> None:
    ids = ["a", "b", "c", "d", "e", "f"]
    deps: list[list[str | None]] = [["b"], ["a"], ["d"], ["e"], ["c"], ["a", "c"]]
    texts = _texts(graph_problems(ids, deps))
    assert [t.split(" (")[0] for t in texts] == [
        "dependency cycle a -> b -> a",
        "dependency cycle c -> d -> e -> c",
    ]


def test_malformed_entries_are_skipped() -> None:
    assert graph_problems(["a", None, "b"], [[None], ["a"], ["a", None]]) == []


def test_problems_of_every_kind_at_once() -> None:
    ids = ["a", "b", "a", "c"]
    deps: list[list[str | None]] = [["c"], ["b", "typo"], [], ["a"]]
    texts = _texts(graph_problems(ids, deps))
    assert texts[0] == "'a' is used by tasks[0] too (give each task its own id)"
    assert texts[1] == "task 'b' depends on itself (remove 'b' from its depends_on)"
    assert texts[2].startswith("unknown task 'typo'")
    assert texts[3].startswith("dependency cycle a -> c -> a")


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=12),
    edges=st.lists(st.tuples(st.integers(0, 11), st.integers(0, 11)), max_size=30),
)
def test_cycles_are_found_exactly_when_there_are_some(n: int, edges: list[tuple[int, int]]) -> None:
    ids = [f"t{i}" for i in range(n)]
    deps: list[list[str | None]] = [[] for _ in range(n)]
    for task, dep in edges:
        if task < n and dep < n and task != dep and f"t{dep}" not in deps[task]:
            deps[task].append(f"t{dep}")
    problems = graph_problems(ids, deps)
    sorter = graphlib.TopologicalSorter({i: set(d) for i, d in zip(ids, deps, strict=True)})
    try:
        sorter.prepare()
        has_cycle = False
    except graphlib.CycleError:
        has_cycle = True
    assert bool(problems) == has_cycle
    for problem in problems:  # every reported cycle is made of real dependencies
        names = problem.text.removeprefix("dependency cycle ").split(" (")[0].split(" -> ")
        assert names[0] == names[-1]
        for task, dep in itertools.pairwise(names):
            assert dep in deps[ids.index(task)]


def test_graph_checks_are_linear_on_a_long_chain() -> None:
    n = 100_000
    ids = [f"t{i}" for i in range(n)]
    forward: list[list[str | None]] = [[f"t{i + 1}"] for i in range(n - 1)] + [[]]
    start = time.perf_counter()
    assert graph_problems(ids, forward) == []  # not in file order: the Kahn path
    cyclic = [*forward[:-1], ["t0"]]
    (problem,) = graph_problems(ids, cyclic)
    assert problem.text.startswith("dependency cycle t0 -> t1 -> t2")
    assert time.perf_counter() - start < 5.0  # ~0.3 s; quadratic would take hours


def test_many_unknown_dependencies_in_a_huge_graph_fail_fast() -> None:
    n = 50_000
    ids = [f"task-{i}" for i in range(n)]
    deps: list[list[str | None]] = [[f"tsk-{i}"] if i % 10 == 0 else [] for i in range(n)]
    start = time.perf_counter()
    problems = graph_problems(ids, deps)
    assert len(problems) == n // 10
    assert time.perf_counter() - start < 10.0  # suggestions stop when their budget is spent
    assert any("did you mean" in p.text for p in problems)


def test_format_place() -> None:
    ids = {0: "prep", 1: None, 2: "x" * 50}.get
    assert format_place((), ids) == "top level"
    assert format_place(("tasks", 0, "vcpus"), ids) == "tasks[0] (prep).vcpus"
    assert format_place(("tasks", 0, "id"), ids) == "tasks[0].id"
    assert format_place(("tasks", 1, "command", 2), ids) == "tasks[1].command[2]"
    assert format_place(("tasks", 2), ids) == f"tasks[2] ({'x' * 37}...)"
    assert format_place(("tasks", 0, "environment", "MY VAR"), ids) == (
        "tasks[0] (prep).environment['MY VAR']"
    )
    assert format_place(("global_config", "spot_strategy"), ids) == "global_config.spot_strategy"


def test_render_sorts_by_line_and_drops_repeats() -> None:
    problems = [
        Problem(("tasks", 1), "second", line=9),
        Problem(("tasks", 0), "first", line=3),
        Problem(("tasks", 0), "first", line=3),
    ]
    assert render_problems(problems, lambda i: None, lambda loc: None) == [
        "line 3: tasks[0]: first",
        "line 9: tasks[1]: second",
    ]


def test_validate_spec_for_specs_built_in_code() -> None:
    spec = WorkflowSpec(
        name="coded",
        tasks=[
            TaskSpec(id="a", command=["run"], depends_on=["b"]),
            TaskSpec(id="b", command=["run"], depends_on=["a"]),
        ],
    )
    with pytest.raises(SpecError, match=r"tasks\[0\] \(a\)\.depends_on: dependency cycle a -> b"):
        validate_spec(spec, "coded")
    validate_spec(WorkflowSpec(name="ok", tasks=[TaskSpec(id="a", command="true")]))
