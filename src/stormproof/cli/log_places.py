"""Where ``logs`` finds a run's attempts and their output: the home, or S3 for AWS runs.

A run records its executor; the attempts of ``executor: ssm`` and ``aws_batch`` ran on
machines that are not this one, so their output is where their agent uploaded it
(``aws.output_reader``), and which attempts a task had is in the run's log, not in the home.
Every other run's attempts are directories in the home, as they always were. Where one
attempt's output is, ``runtime.attempt_logs.attempt_logs`` says (the dashboard asks it too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stormproof.runtime.attempt_logs import AttemptLogs, attempt_logs, ran_on_aws

if TYPE_CHECKING:
    from .session import Session


@dataclass
class TaskAttempts:
    """What a reader knows of one task's attempts, fed row by row from the run's log."""

    task: str
    launched: set[int] = field(default_factory=set)
    ended: set[int] = field(default_factory=set)
    last: int | None = None
    task_ended: bool = False
    run_ended: bool = False

    def numbers(self) -> list[int]:
        return sorted(self.launched)

    def take(self, kind: str, data: dict[str, object]) -> None:
        if kind == "RunFinished":
            self.run_ended = True
        elif kind == "RunRedriven":
            self.run_ended = self.task_ended = False
        if data.get("task_id") != self.task:
            return
        if kind == "LaunchAttempt":
            number = int(str(data["number"]))
            self.launched.add(number)
            self.last = number
            self.task_ended = False
        elif kind == "AttemptEnded":
            self.ended.add(int(str(data["attempt_id"]).rsplit("/", 1)[1]))
        elif kind == "TaskEnded":
            self.task_ended = True


@dataclass
class LogPlaces:
    """One run's answer to "where are this attempt's logs" (``AttemptLogs``)."""

    s: Session
    name: str
    #: The run's meta as stored (its executor and, on AWS, its AWS settings).
    meta: dict[str, Any]

    @classmethod
    def of(cls, s: Session, name: str) -> LogPlaces:
        return cls(s, name, s.store.get_run(name).meta)

    def attempts(self, task: str) -> TaskAttempts:
        """The task's attempts: their directories here, or (on AWS) the run's log."""
        found = TaskAttempts(task)
        if not ran_on_aws(self.meta):
            found.launched.update(self.s.home.attempt_numbers(self.name, task))
            return found
        for row in self.s.store.read(self.name, 0):
            found.take(row.kind, row.data)
        return found

    def logs(self, task: str, number: int) -> AttemptLogs:
        return attempt_logs(self.s.home, self.name, self.meta, task, number)
