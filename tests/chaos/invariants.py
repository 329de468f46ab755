"""The chaos suite's invariants, checked from a run's traces and its event log.

``violations(effects, rows)`` takes the lines the tasks wrote (see ``workflows``) and the
run's log as ``(category, kind, data)`` rows, and says what is wrong, one sentence each:

* no attempt ran twice, and no task ran again after an attempt of it succeeded;
* nothing was lost: every attempt that wrote its end line has that exit code in the log (or
  128+N when a kill was decided for it: killed after the line), none is ``AttemptLost``, and
  none that ran is ``AttemptDropped``;
* no completion counted twice: one final event per attempt, one success per task;
* no checkpoint was reported corrupt, and every restore found its content intact.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

Row = tuple[str, str, dict[str, Any]]
Finals = dict[str, list[tuple[str, dict[str, Any]]]]
_FINAL_EVENTS = frozenset(
    ("AttemptExited", "AttemptLost", "AttemptDropped", "AttemptSubmitFailed", "AttemptPreempted")
)


def violations(effects: list[str], rows: list[Row]) -> list[str]:
    found: list[str] = []
    words = [line.split() for line in effects]
    starts = Counter(w[1] for w in words if w[0] == "start")
    ends = {w[1]: int(w[2]) for w in words if w[0] == "end"}
    found += [
        f"a restore found damaged content: {' '.join(w)}"
        for w in words
        if w[0] == "restored" and w[2] != "ok"
    ]
    found += [f"attempt {a} ran {n} times" for a, n in starts.items() if n > 1]
    finals: Finals = {}
    killed: set[str] = set()
    succeeded: Counter[str] = Counter()
    for category, kind, data in rows:
        if category == "event" and kind in _FINAL_EVENTS:
            finals.setdefault(str(data["attempt_id"]), []).append((kind, data))
        elif kind == "KillAttempt":
            killed.add(str(data["attempt_id"]))
        elif kind == "CheckpointCorrupt":
            found.append(f"a checkpoint was reported corrupt: {data}")
        elif kind == "TaskEnded" and data.get("state") == "succeeded":
            succeeded[str(data["task_id"])] += 1
    found += _endings(finals, starts)
    found += _exit_codes(ends, finals, killed)
    found += [f"task {t} counted as succeeded {n} times" for t, n in succeeded.items() if n > 1]
    found += _reruns(starts, ends, finals)
    return found


def _endings(finals: Finals, starts: Counter[str]) -> list[str]:
    found = []
    for attempt, ended in finals.items():
        if len(ended) > 1:
            found.append(f"attempt {attempt} ended {len(ended)} times: {ended}")
        kind, data = ended[0]
        if kind == "AttemptLost":
            found.append(f"attempt {attempt} was lost: {data.get('reason')}")
        if kind == "AttemptDropped" and attempt in starts:
            found.append(f"attempt {attempt} was reported dropped, but it ran")
    return found


def _exit_codes(ends: dict[str, int], finals: Finals, killed: set[str]) -> list[str]:
    found = []
    for attempt, code in ends.items():
        ended = finals.get(attempt)
        if not ended:
            found.append(f"attempt {attempt} ended (code {code}) and the log never heard")
            continue
        kind, data = ended[0]
        logged = data.get("exit_code")
        killed_after = isinstance(logged, int) and logged > 128 and attempt in killed
        if kind != "AttemptExited" or (logged != code and not killed_after):
            found.append(f"attempt {attempt} ended with {code}; the log says {kind} {logged}")
    return found


def _reruns(starts: Counter[str], ends: dict[str, int], finals: Finals) -> list[str]:
    """A task whose attempt ended 0 (by its own line and by the log) never runs again."""
    by_task: dict[str, list[int]] = {}
    for attempt in starts:
        task, number = attempt.rsplit("/", 1)
        by_task.setdefault(task, []).append(int(number))
    found = []
    for task, numbers in by_task.items():
        done = [
            n
            for n in numbers
            if ends.get(f"{task}/{n}") == 0
            and finals.get(f"{task}/{n}", [("", {})])[0][1].get("exit_code") == 0
        ]
        if done and max(numbers) > min(done):
            found.append(f"task {task} ran again after attempt {min(done)} succeeded")
    return found


def newest_checkpoints(rows: list[Row]) -> dict[str, int]:
    """The newest committed checkpoint of each task that has not ended: what a restore uses."""
    newest: dict[str, int] = {}
    finished: set[str] = set()
    for _, kind, data in rows:
        if kind == "CheckpointCommitted":
            task = str(data["attempt_id"]).rsplit("/", 1)[0]
            newest[task] = max(newest.get(task, 0), int(data["seq"]))
        elif kind == "TaskEnded":
            finished.add(str(data["task_id"]))
    return {task: seq for task, seq in newest.items() if task not in finished}
