"""A problem with a workflow: where it is and what is wrong; and how problems are shown.

Both finders of problems, the graph checks (``validate``) and the translation of pydantic's
errors (``pydantic_errors``), produce ``Problem``s, and the loader (``load``) renders them. A
``Problem`` knows *where* (a path into the document) but not *which line*: the loader owns
the text and maps paths to lines (``render_problems`` takes that mapping as a function).
Kept apart from both finders because it is what they share, and all the loader needs to know
to word the final messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

#: A path into the document: ``("tasks", 2, "vcpus")``.
Loc = tuple[str | int, ...]

#: More than this many messages help nobody; the rest are counted, not listed.
MAX_MESSAGES = 100


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the workflow.

    ``place`` is shown to the user; ``at`` (default: ``place``) is where the
    line number is looked up, e.g. the misspelt key rather than its task;
    ``line``, when the finder already knows it, wins over both.
    """

    place: Loc
    text: str
    at: Loc | None = None
    line: int | None = None


def task_ids_in(data: Any) -> Callable[[int], str | None]:
    """``id_of(i)`` for a parsed document, for places like ``tasks[2] (equilibration)``."""
    tasks = data.get("tasks") if isinstance(data, dict) else None

    def id_of(i: int) -> str | None:
        if isinstance(tasks, list) and 0 <= i < len(tasks) and isinstance(tasks[i], dict):
            task_id = tasks[i].get("id")
            return task_id if isinstance(task_id, str) else None
        return None

    return id_of


def format_place(place: Loc, id_of: Callable[[int], str | None]) -> str:
    """``tasks[2] (equilibration).vcpus``: the path, with the task's id where it helps."""
    if not place:
        return "top level"
    out = str(place[0])
    for n, part in enumerate(place[1:], start=1):
        if isinstance(part, int):
            out += f"[{part}]"
            task_id = id_of(part) if place[n - 1] == "tasks" and n == 1 else None
            if task_id and place[n + 1 : n + 2] != ("id",):
                out += f" ({task_id if len(task_id) <= 40 else task_id[:37] + '...'})"
        elif part.isidentifier():
            out += f".{part}"
        else:
            out += f"[{part!r}]"
    return out


def render_problems(
    problems: Iterable[Problem],
    id_of: Callable[[int], str | None],
    line_of: Callable[[Loc], int | None],
) -> list[str]:
    """Final messages, ``line 12: tasks[1] (b).vcpus: ...``, at most ~100.

    Ordered by line where lines are known, else by task, so that problems
    of one task stand together.
    """
    problems = list(problems)
    shown: list[tuple[tuple[int, int], str]] = []
    for problem in problems[:MAX_MESSAGES]:
        line = problem.line or line_of(problem.at if problem.at is not None else problem.place)
        text = f"{format_place(problem.place, id_of)}: {problem.text}"
        order = (line or 0, _task_index(problem.place))
        shown.append((order, f"line {line}: {text}" if line else text))
    shown.sort(key=lambda pair: pair[0])
    messages = list(dict.fromkeys(text for _, text in shown))
    if len(problems) > MAX_MESSAGES:
        messages.append(f"... and {len(problems) - MAX_MESSAGES} more problems (fix these first)")
    return messages


def _task_index(place: Loc) -> int:
    return place[1] if len(place) > 1 and place[0] == "tasks" and isinstance(place[1], int) else -1
