"""The traced tasks as a graph: which field identifies a task, edges, an order, cycles.

Dependencies are the union of ``parents`` and ``children`` (files often declare each edge at
one end only). Tasks in 1.5 files refer to each other by id; before 1.5 by *name*, so names
are the identity when they are unique, else ids. Everything is linear in the size of the
file: one index of ids, one pass per list, an iterative depth-first order. Kept apart from
``reading`` because it needs all the tasks at once, where reading looks at one at a time.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from stormproof.importers.wfformat.trace import Layout, Problems, TracedTask, WfFormatError, show

#: ``did you mean`` compares against every id: only for a few problems, and not in huge files.
_MAX_SUGGESTIONS = 5
_MAX_IDS_FOR_SUGGESTIONS = 50_000


def identities(
    tasks: list[TracedTask], layout: Layout, problems: Problems
) -> tuple[dict[str, int], dict[str, int], str]:
    """Which field names a task (``key``), its index, and a second index references may use.

    1.5 references are ids. Before 1.5 they are names (the generator keyed its
    tasks by name); a hand-made file may use ids instead, so whichever field is
    unique across all tasks is the identity (names first), and the other, when
    it is unique too, resolves references the first does not.
    """
    if layout == "split":
        return _unique_index(tasks, "id", problems), {}, "id"
    by_name = _index_if_unique([t.wf_name for t in tasks])
    by_id = _index_if_unique([t.wf_id for t in tasks])
    if by_name is not None:
        for t in tasks:
            t.key = t.wf_name or ""
        return by_name, by_id or {}, "name"
    if by_id is not None:
        for t in tasks:
            t.key = t.wf_id or ""
        return by_id, {}, "id"
    _unique_index(tasks, "name", problems)  # says which name is missing or repeated
    return {}, {}, "name"


def _index_if_unique(values: list[str | None]) -> dict[str, int] | None:
    index = {v: i for i, v in enumerate(values) if v is not None}
    return index if len(index) == len(values) else None


def _unique_index(tasks: list[TracedTask], field: str, problems: Problems) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, task in enumerate(tasks):
        value = task.wf_id if field == "id" else task.wf_name
        if value is None:
            problems.add(f"{task.place} has no {field}: every task needs a unique one")
        elif value in index:
            first = tasks[index[value]].place
            problems.add(
                f"{task.place}: {field} {show(value)} is used by {first} too (make them unique)"
            )
        else:
            index[value] = i
    return index


def link(
    tasks: list[TracedTask],
    index: Mapping[str, int],
    fallback: Mapping[str, int],
    what: str,
    problems: Problems,
) -> list[list[int]]:
    """Each task's parents as indices: the union of ``parents`` and the others' ``children``."""
    parents: list[list[int]] = [[] for _ in tasks]
    suggestions = [_MAX_SUGGESTIONS if len(index) <= _MAX_IDS_FOR_SUGGESTIONS else 0]

    def resolve(ref: str, i: int, key: str) -> int | None:
        j = index.get(ref)
        if j is None:
            j = fallback.get(ref)
        if j is None:
            hint = _did_you_mean(ref, index, suggestions)
            problems.add(f"{tasks[i].place}.{key}: {show(ref)} is not the {what} of any task{hint}")
        elif j == i:
            problems.add(f"{tasks[i].place}.{key}: the task lists itself (remove {show(ref)})")
            return None
        return j

    for i, task in enumerate(tasks):  # a task's own parents first, in its order
        for ref in task.parent_refs:
            j = resolve(ref, i, "parents")
            if j is not None:
                parents[i].append(j)
    for i, task in enumerate(tasks):
        for ref in task.child_refs:
            j = resolve(ref, i, "children")
            if j is not None:
                parents[j].append(i)
    return [list(dict.fromkeys(p)) if len(p) > 1 else p for p in parents]


def _did_you_mean(ref: str, index: Mapping[str, int], budget: list[int]) -> str:
    if budget[0] <= 0:
        return ""
    budget[0] -= 1
    close = difflib.get_close_matches(ref, index.keys(), n=1)
    return f" (did you mean {show(close[0])}?)" if close else ""


def dependency_order(parents: list[list[int]], tasks: list[TracedTask], source: str) -> list[int]:
    """Every task after its parents, in file order where the file allows; a cycle is an error.

    A depth-first walk that emits a task once its parents are out: a file
    already in dependency order comes out unchanged. Iterative, so a chain of
    a million tasks does not hit the recursion limit.
    """
    state = bytearray(len(parents))  # 0 not seen, 1 on the current path, 2 emitted
    order: list[int] = []
    for root in range(len(parents)):
        if state[root]:
            continue
        state[root] = 1
        stack = [(root, 0)]
        while stack:
            node, next_parent = stack[-1]
            node_parents = parents[node]
            if next_parent == len(node_parents):
                stack.pop()
                state[node] = 2
                order.append(node)
                continue
            stack[-1] = (node, next_parent + 1)
            parent = node_parents[next_parent]
            if state[parent] == 0:
                state[parent] = 1
                stack.append((parent, 0))
            elif state[parent] == 1:
                raise WfFormatError(source, [_cycle_message([n for n, _ in stack], parent, tasks)])
    return order


def _cycle_message(path: list[int], parent: int, tasks: list[TracedTask]) -> str:
    # path[k] == parent, each next node is a parent of the one before, and parent is a parent
    # of path[-1]: read backwards, parent -> path[-1] -> ... -> path[k] is a loop.
    loop = [parent, *reversed(path[path.index(parent) :])]
    shown = " -> ".join(show(tasks[i].key) for i in loop)
    return (
        f"the dependencies form a cycle: {shown} (each is a parent of the next; a workflow must "
        "have none: remove one of these links from parents/children)"
    )
