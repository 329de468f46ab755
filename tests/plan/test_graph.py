"""Levels, earliest times, critical path and upward rank on hand-checked DAGs.

The random tests check the linear-time functions against the obvious slow
definitions (the recipe's stage loop, longest paths by recursion), which is
what makes the fast versions trustworthy.
"""

from __future__ import annotations

import functools
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stormproof.plan.graph import (
    Dag,
    critical_path,
    critical_path_length,
    schedule,
    stages,
    topo_order,
    upward_rank,
)
from stormproof.spec.model import WorkflowSpec
from tests.recipe_sample import RECIPE_SAMPLE

from .builders import diamond, task, workflow


def test_diamond_exact_numbers() -> None:
    spec = diamond()
    assert stages(spec) == [["a"], ["b", "c"], ["d"]]
    assert schedule(spec) == {
        "a": (0.0, 10.0),
        "b": (10.0, 30.0),
        "c": (10.0, 15.0),
        "d": (30.0, 37.0),
    }
    assert critical_path(spec) == ["a", "b", "d"]
    assert critical_path_length(spec) == 37.0
    assert upward_rank(spec) == {"a": 37.0, "b": 27.0, "c": 12.0, "d": 7.0}


def test_chain() -> None:
    spec = workflow(task("a", runtime=1), task("b", ["a"], "2s"), task("c", ["b"], "1m"))
    assert stages(spec) == [["a"], ["b"], ["c"]]
    assert schedule(spec) == {"a": (0.0, 1.0), "b": (1.0, 3.0), "c": (3.0, 63.0)}
    assert critical_path(spec) == ["a", "b", "c"]
    assert critical_path_length(spec) == 63.0
    assert upward_rank(spec) == {"a": 63.0, "b": 62.0, "c": 60.0}


def test_fork_join_with_an_independent_longer_task() -> None:
    spec = workflow(
        task("split", runtime=5),
        task("w1", ["split"], 10),
        task("w2", ["split"], 30),
        task("w3", ["split"], 20),
        task("join", ["w1", "w2", "w3"], 5),
        task("side", runtime=50),
    )
    assert stages(spec) == [["split", "side"], ["w1", "w2", "w3"], ["join"]]
    times = schedule(spec)
    assert times["w3"] == (5.0, 25.0)
    assert times["join"] == (35.0, 40.0)
    assert times["side"] == (0.0, 50.0)
    # The lone 50 s task outlasts the 40 s fork-join: the critical path is that task alone.
    assert critical_path(spec) == ["side"]
    assert critical_path_length(spec) == 50.0
    rank = upward_rank(spec)
    assert rank["split"] == 40.0
    assert rank["w1"] == 15.0
    assert rank["side"] == 50.0


def test_stages_keep_file_order_when_the_file_is_not_topological() -> None:
    spec = workflow(task("d", ["b", "c"]), task("c", ["a"]), task("b", ["a"]), task("a"))
    assert stages(spec) == [["a"], ["c", "b"], ["d"]]
    assert topo_order(spec) == ["a", "c", "b", "d"]


def test_missing_runtimes_count_as_zero_and_the_path_is_the_deepest_chain() -> None:
    spec = workflow(task("a"), task("b", ["a"]), task("c", ["b"]), task("x"))
    dag = Dag.from_spec(spec)
    assert dag.missing_runtime == 4
    assert critical_path_length(spec) == 0.0
    assert critical_path(spec) == ["a", "b", "c"]


def test_recipe_sample_has_four_stages() -> None:
    spec = WorkflowSpec.model_validate(RECIPE_SAMPLE)
    assert stages(spec) == [
        ["data-preprocessing"],
        ["equilibration"],
        ["production-run"],
        ["analysis"],
    ]


def test_a_long_chain_needs_no_recursion() -> None:
    n = 20_000
    dag = Dag.from_edges(
        [f"t{i}" for i in range(n)], [()] + [(i,) for i in range(n - 1)], [1.0] * n
    )
    assert len(stages(dag)) == n
    assert critical_path_length(dag) == float(n)
    assert upward_rank(dag)["t0"] == float(n)


def test_invalid_graphs_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="cycle"):
        Dag.from_edges(["a", "b"], [(1,), (0,)], [0.0, 0.0])
    spec = workflow(task("a", ["ghost"]))
    with pytest.raises(ValueError, match="unknown dependency 'ghost'"):
        Dag.from_spec(spec)


# --- against the slow definitions ------------------------------------------------------


@st.composite
def random_dags(draw: st.DrawFn) -> tuple[list[tuple[int, ...]], list[float]]:
    n = draw(st.integers(1, 25))
    parents = [
        tuple(sorted(draw(st.sets(st.integers(0, i - 1), max_size=3)))) if i else ()
        for i in range(n)
    ]
    runtimes = draw(st.lists(st.sampled_from([0.0, 1.0, 2.5, 7.0]), min_size=n, max_size=n))
    # Shuffle positions so that file order is not a topological order.
    perm = draw(st.permutations(range(n)))
    where = {old: new for new, old in enumerate(perm)}
    shuffled_parents: list[tuple[int, ...]] = [()] * n
    shuffled_runtimes = [0.0] * n
    for old in range(n):
        shuffled_parents[where[old]] = tuple(where[p] for p in parents[old])
        shuffled_runtimes[where[old]] = runtimes[old]
    return shuffled_parents, shuffled_runtimes


def _recipe_stages(ids: list[str], parents: list[tuple[int, ...]]) -> list[list[str]]:
    """The recipe's ``generate_execution_plan`` loop, O(n²) and obviously right."""
    remaining = list(range(len(ids)))
    done: set[int] = set()
    out = []
    while remaining:
        ready = [i for i in remaining if all(p in done for p in parents[i])]
        assert ready
        out.append([ids[i] for i in ready])
        done.update(ready)
        remaining = [i for i in remaining if i not in done]
    return out


@settings(max_examples=200, deadline=None)
@given(random_dags())
def test_linear_functions_agree_with_slow_definitions(
    graph: tuple[list[tuple[int, ...]], list[float]],
) -> None:
    parents, runtimes = graph
    ids = [f"t{i}" for i in range(len(parents))]
    dag = Dag.from_edges(ids, parents, runtimes)
    children: list[list[int]] = [[] for _ in ids]
    for c, ps in enumerate(parents):
        for p in ps:
            children[p].append(c)

    @functools.cache
    def finish(i: int) -> float:
        return max((finish(p) for p in parents[i]), default=0.0) + runtimes[i]

    @functools.cache
    def rank(i: int) -> float:
        return runtimes[i] + max((rank(c) for c in children[i]), default=0.0)

    assert stages(dag) == _recipe_stages(ids, parents)
    position = {t: k for k, t in enumerate(topo_order(dag))}
    assert all(position[ids[p]] < position[ids[i]] for i in range(len(ids)) for p in parents[i])
    times = schedule(dag)
    for i, task_id in enumerate(ids):
        assert times[task_id][1] == pytest.approx(finish(i))
        assert times[task_id][0] == pytest.approx(finish(i) - runtimes[i])
        assert upward_rank(dag)[task_id] == pytest.approx(rank(i))
    path = [ids.index(t) for t in critical_path(dag)]
    assert not parents[path[0]]
    assert all(a in parents[b] for a, b in itertools.pairwise(path))
    assert sum(runtimes[i] for i in path) == pytest.approx(critical_path_length(dag))
    assert critical_path_length(dag) == pytest.approx(max(finish(i) for i in range(len(ids))))
