"""The workflow as a graph: levels, earliest times, critical path, priorities.

Rules of this module:

* **Pure and linear.** Every function is O(V + E): one Kahn pass with
  indegree counters gives a topological order, and everything else is a
  single sweep over it. The recipe's stage loop rescans every remaining task
  per stage (O(V²) on a chain); at 100,000 tasks that is the difference
  between milliseconds and hours.
* **Index form inside.** A ``Dag`` holds tasks as integer indexes with tuples
  of parent/child indexes and plain floats, built once from a spec. The
  public functions accept a ``WorkflowSpec`` (convenient) or a ``Dag`` (what
  ``plan.report`` passes, so the graph is built once per plan, not once per
  question).
* **Input is trusted.** The spec has already been validated (unique ids, known
  dependencies, no cycle) by ``spec.validate``; a violation here is a
  programming error and raises ``ValueError``, not a user-facing message.
* **Unbounded capacity.** ``schedule`` answers "how soon could each task start
  if every ready task started at once": the dependency bound, which is what a
  critical path is. Capacity limits are ``plan.estimate``'s business.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from stormproof.spec.load import gc_paused
from stormproof.spec.model import WorkflowSpec

__all__ = ["Dag", "gc_paused"]


@dataclass(frozen=True, slots=True)
class Dag:
    """A workflow's dependency graph in index form, with estimated runtimes.

    ``order`` is a topological order and ``level`` the stage (0-based) of each
    task; both are computed once at construction because every other question
    needs them.
    """

    ids: tuple[str, ...]
    parents: tuple[tuple[int, ...], ...]
    children: tuple[tuple[int, ...], ...]
    #: Estimated runtime of each task in seconds; 0.0 where the spec gives none.
    runtime_s: tuple[float, ...]
    #: How many tasks have no ``estimated_runtime`` (their 0.0 makes times lower bounds).
    missing_runtime: int
    order: tuple[int, ...]
    level: tuple[int, ...]
    #: What each task without ``estimated_runtime`` counts as (0: nothing is assumed).
    assumed_runtime_s: float = 0.0

    @classmethod
    def from_spec(cls, spec: WorkflowSpec, default_runtime_s: float = 0.0) -> Dag:
        """``default_runtime_s`` stands for a missing ``estimated_runtime`` (``plan`` passes
        ``ASSUMED_RUNTIME_S``; the graph questions' own default is 0)."""
        with gc_paused():
            tasks = spec.tasks
            index = {task.id: i for i, task in enumerate(tasks)}
            if len(index) != len(tasks):
                raise ValueError("duplicate task ids: validate the workflow before planning it")
            lookup = index.__getitem__
            try:
                parents = tuple([tuple(map(lookup, task.depends_on)) for task in tasks])
            except KeyError as err:
                raise ValueError(
                    f"unknown dependency {err.args[0]!r}: validate the workflow before planning it"
                ) from None
            runtimes = [task.estimated_runtime for task in tasks]
            missing = runtimes.count(None)
            runtime_s = tuple([default_runtime_s if r is None else float(r) for r in runtimes])
            dag = cls._build(tuple(index), parents, runtime_s, missing)
            return dag if not missing else replace(dag, assumed_runtime_s=default_runtime_s)

    @classmethod
    def from_edges(
        cls,
        ids: Sequence[str],
        parents: Sequence[Sequence[int]],
        runtime_s: Sequence[float],
        missing_runtime: int = 0,
    ) -> Dag:
        """Build from index lists; the door for tests and for callers without a spec."""
        with gc_paused():
            return cls._build(
                tuple(ids),
                tuple(tuple(p) for p in parents),
                tuple(float(r) for r in runtime_s),
                missing_runtime,
            )

    @classmethod
    def _build(
        cls,
        ids: tuple[str, ...],
        parents: tuple[tuple[int, ...], ...],
        runtime_s: tuple[float, ...],
        missing_runtime: int,
    ) -> Dag:
        n = len(ids)
        child_lists: list[list[int]] = [[] for _ in range(n)]
        for child, ps in enumerate(parents):
            for parent in ps:
                child_lists[parent].append(child)
        children = tuple([tuple(c) for c in child_lists])
        order, level = _kahn(parents, children, ids)
        return cls(
            ids=ids,
            parents=parents,
            children=children,
            runtime_s=runtime_s,
            missing_runtime=missing_runtime,
            order=tuple(order),
            level=tuple(level),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def stage_indexes(self) -> list[list[int]]:
        """Tasks grouped by level, each group in spec order (as the recipe lists them)."""
        groups: list[list[int]] = [[] for _ in range(max(self.level, default=-1) + 1)]
        for i, lvl in enumerate(self.level):
            groups[lvl].append(i)
        return groups

    def earliest(self) -> tuple[list[float], list[float]]:
        """Earliest start and finish of every task, in seconds from the start of the run."""
        n = len(self.ids)
        start = [0.0] * n
        finish = [0.0] * n
        parents, runtime = self.parents, self.runtime_s
        for i in self.order:
            ps = parents[i]
            s = max([finish[p] for p in ps]) if ps else 0.0
            start[i] = s
            finish[i] = s + runtime[i]
        return start, finish

    def critical_path_indexes(self, finish: Sequence[float] | None = None) -> list[int]:
        """The chain of tasks that bounds the makespan, first task first.

        Ties between equally long chains go to the one with more stages, so a
        workflow without any ``estimated_runtime`` still shows its deepest
        chain rather than an arbitrary single task.
        """
        if not self.ids:
            return []
        if finish is None:
            finish = self.earliest()[1]
        level = self.level
        end = max(range(len(self.ids)), key=lambda i: (finish[i], level[i]))
        path = [end]
        node = end
        while self.parents[node]:
            node = max(self.parents[node], key=lambda p: (finish[p], level[p]))
            path.append(node)
        path.reverse()
        return path

    def upward_rank(self) -> list[float]:
        """Longest estimated path from each task to any sink, its own runtime included."""
        rank = [0.0] * len(self.ids)
        children, runtime = self.children, self.runtime_s
        for i in reversed(self.order):
            cs = children[i]
            rank[i] = runtime[i] + (max([rank[c] for c in cs]) if cs else 0.0)
        return rank


def _kahn(
    parents: Sequence[Sequence[int]], children: Sequence[Sequence[int]], ids: Sequence[str]
) -> tuple[list[int], list[int]]:
    """A topological order, and each task's level (1 + the deepest parent's), in one pass."""
    indegree = [len(p) for p in parents]
    level = [0] * len(parents)
    order = [i for i, d in enumerate(indegree) if d == 0]
    append = order.append
    for i in order:  # the list grows while we walk it: a FIFO queue without popping
        below = level[i] + 1
        for c in children[i]:
            if level[c] < below:
                level[c] = below
            indegree[c] -= 1
            if indegree[c] == 0:
                append(c)
    if len(order) != len(parents):
        stuck = [ids[i] for i, d in enumerate(indegree) if d > 0][:5]
        raise ValueError(
            f"the workflow has a dependency cycle (through {', '.join(stuck)}): "
            "validate it before planning it"
        )
    return order, level


def _dag(spec: WorkflowSpec | Dag) -> Dag:
    return spec if isinstance(spec, Dag) else Dag.from_spec(spec)


def stages(spec: WorkflowSpec | Dag) -> list[list[str]]:
    """Topological levels: stage k holds the tasks whose longest dependency chain has k links.

    These are the recipe's ``generate_execution_plan`` stages (everything in a
    stage can run in parallel once the previous stages are done), computed in
    one pass instead of one rescan per stage.
    """
    dag = _dag(spec)
    ids = dag.ids
    return [[ids[i] for i in group] for group in dag.stage_indexes()]


def topo_order(spec: WorkflowSpec | Dag) -> list[str]:
    """Every task after all its dependencies: the stages, concatenated (deterministic)."""
    return [task_id for stage in stages(spec) for task_id in stage]


def schedule(spec: WorkflowSpec | Dag) -> dict[str, tuple[float, float]]:
    """``task id -> (earliest start s, earliest finish s)`` with unbounded capacity.

    Tasks without ``estimated_runtime`` count as 0 s (``Dag.missing_runtime``
    says how many), so these are lower bounds for such workflows.
    """
    dag = _dag(spec)
    start, finish = dag.earliest()
    return dict(zip(dag.ids, zip(start, finish, strict=True), strict=True))


def critical_path(spec: WorkflowSpec | Dag) -> list[str]:
    """The ids of the longest estimated chain, first task first."""
    dag = _dag(spec)
    return [dag.ids[i] for i in dag.critical_path_indexes()]


def critical_path_length(spec: WorkflowSpec | Dag) -> float:
    """Seconds the critical path takes: no schedule on any capacity can finish sooner."""
    dag = _dag(spec)
    finish = dag.earliest()[1]
    return max(finish, default=0.0)


def upward_rank(spec: WorkflowSpec | Dag) -> dict[str, float]:
    """``task id -> longest estimated path from it to any sink, its own runtime included``.

    The core runs the ready task with the highest rank first (HEFT's upward
    rank): it is the one whose delay would delay the whole workflow most.
    """
    dag = _dag(spec)
    return dict(zip(dag.ids, dag.upward_rank(), strict=True))
