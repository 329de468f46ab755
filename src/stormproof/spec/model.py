"""The workflow file, as data.

The recipe's workflow JSON is accepted verbatim: every field of its sample
keeps the recipe's meaning. Extensions follow the same flat snake_case style.
Unknown fields are errors (``extra="forbid"``) so that a typo never silently
turns into a default.

Graph-level checks (unknown dependencies, cycles, duplicate ids) live in
``spec.validate``: they need the whole task list, not one task.
"""

from __future__ import annotations

import difflib
import re
from enum import Enum
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from stormproof.errors import ErrorName

#: Task ids become file names and database keys: a safe alphabet, no path tricks.
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)\s*d)?\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*"
    r"(?:(\d+(?:\.\d+)?)\s*m)?\s*(?:(\d+(?:\.\d+)?)\s*s?)?\s*$"
)


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``90``, ``90s``, ``10m``, ``2h30m``, ``1d``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 600, '10m' or '2h30m', not true/false")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond any float: a typo of many digits
            raise ValueError(f"{value:.3g} seconds is too long (give seconds, e.g. 600)") from None
    elif isinstance(value, str):
        seconds = _duration_text(value)
    else:
        raise ValueError(f"expected a duration like 600, '10m' or '2h30m', got {value!r}")
    if seconds < 0:
        raise ValueError(f"cannot be negative, got {value!r} (give seconds, e.g. 600, or '10m')")
    return seconds


@lru_cache(maxsize=256)
def _duration_text(text: str) -> float:
    # Cached: a generated 100k-task file repeats the same few strings ("2h") in every task.
    if not text.strip() or not (m := _DURATION.match(text)):
        raise ValueError(f"expected a duration like 600, '10m' or '2h30m', got {text!r}")
    d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return d * 86400 + h * 3600 + mi * 60 + s


#: Seconds. The published JSON Schema says what the validator accepts (numbers *and* strings),
#: not the float it produces, so editors do not flag ``timeout: 2h``.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "minLength": 1, "pattern": _DURATION.pattern},
            ],
            "description": "seconds, or a string like '90s', '10m', '2h30m' or '1d'",
        }
    ),
]


def _env_value(value: Any) -> Any:
    # YAML users write SIMULATION_TIME: 1000000; the process environment only holds strings.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


EnvValue = Annotated[
    str,
    BeforeValidator(_env_value),
    WithJsonSchema({"type": ["string", "number", "boolean"]}),
]


class OnFailure(str, Enum):
    """What a task's final failure does to the rest of the workflow."""

    FAIL = "fail"  # stop launching, cancel running attempts, the workflow fails
    FINISH = "finish"  # stop launching, let running attempts finish, then fail
    CONTINUE = "continue"  # keep running everything that does not depend on the failed task


class SpotStrategy(str, Enum):
    """The recipe's ``spot_strategy``: how a spot fleet spreads over instance types."""

    DIVERSIFIED = "diversified"
    LOWEST_PRICE = "lowest_price"
    CAPACITY_OPTIMIZED = "capacity_optimized"
    PRICE_CAPACITY_OPTIMIZED = "price_capacity_optimized"


class Strict(BaseModel):
    # allow_inf_nan=False: `vcpus: .inf` or `timeout: NaN` is a typo, never a wish.
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=False, allow_inf_nan=False
    )


class Retrier(Strict):
    """One ASL-shaped retry rule.

    Unlike ASL, where the first matching retrier is final, retriers here are
    *tiers*: when a matching retrier has used all its attempts, the next
    matching one takes over. That is what lets the recipe's two tiers
    (30 s x2 x3, then 60 s x3 x2) be written as two rules.
    """

    error_equals: list[str] = Field(min_length=1)
    interval_seconds: float = Field(default=1.0, ge=0)
    max_attempts: int = Field(default=3, ge=0)
    backoff_rate: float = Field(default=2.0, ge=1.0)
    max_delay_seconds: float | None = Field(default=None, gt=0)
    jitter: Literal["full", "none"] = "none"

    @field_validator("error_equals")
    @classmethod
    def _known_errors(cls, names: list[str]) -> list[str]:
        known = [e.value for e in ErrorName]
        for name in names:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                fix = f"did you mean {close[0]!r}?" if close else "use one of " + ", ".join(known)
                raise ValueError(f"unknown error name {name!r} ({fix})")
        return names


#: Signals a task may ask for as its "checkpoint now" request (never TERM/KILL/INT).
CheckpointSignal = Literal["SIGUSR1", "SIGUSR2", "SIGHUP", "SIGWINCH", "SIGURG", "none"]


class GlobalConfig(Strict):
    """The recipe's ``global_config`` plus run-wide defaults for the task extensions."""

    checkpoint_interval: Duration | None = None
    max_retry_attempts: int = Field(default=3, ge=0)
    spot_strategy: SpotStrategy = SpotStrategy.DIVERSIFIED
    # extensions
    max_parallel: int | None = Field(default=None, ge=1)
    on_failure: OnFailure = OnFailure.FAIL
    max_interruptions: int = Field(default=10, ge=0)
    retry_interval: Duration = 30.0
    kill_grace: Duration = 10.0
    keep_checkpoints: int = Field(default=2, ge=0)
    keep_checkpoints_on_success: bool = False
    checkpoint_signal: CheckpointSignal = "SIGUSR1"
    memory_escalation: float = Field(default=1.0, ge=1.0)


class TaskSpec(Strict):
    """One task of the workflow: the recipe's fields first, then the extensions."""

    id: str = Field(pattern=TASK_ID_PATTERN)
    name: str | None = None
    type: Literal["batch", "multi_node"] = "batch"
    container_image: str | None = None
    command: list[str] | str
    environment: dict[str, EnvValue] = Field(default_factory=dict)
    vcpus: float = Field(default=1, gt=0)
    memory: int = Field(default=1024, gt=0, description="MiB")
    nodes: int = Field(default=1, ge=1)
    depends_on: list[str] = Field(default_factory=list)
    retry_attempts: int | None = Field(default=None, ge=0)
    backoff_multiplier: float = Field(default=2.0, ge=1.0)
    checkpoint_enabled: bool = False
    spot_enabled: bool = True
    # extensions
    estimated_runtime: Duration | None = None
    timeout: Duration | None = Field(default=None)
    gpus: int = Field(default=0, ge=0)
    max_interruptions: int | None = Field(default=None, ge=0)
    retry: list[Retrier] | None = None
    on_failure: OnFailure | None = None
    kill_grace: Duration | None = None
    checkpoint_interval: Duration | None = None
    #: How long one checkpoint takes to write and save: with a pool's interruption rate,
    #: ``plan`` turns it into a suggested interval (Daly).
    checkpoint_cost: Duration | None = None
    checkpoint_signal: CheckpointSignal | None = None
    keep_checkpoints: int | None = Field(default=None, ge=0)
    keep_checkpoints_on_success: bool | None = None
    #: After ``Task.OutOfMemory`` the next attempt asks for ``memory`` times this (1: never).
    memory_escalation: float | None = Field(default=None, ge=1.0)
    #: Free-form text labels (``import wfformat`` keeps the original command here).
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("command")
    @classmethod
    def _command_not_empty(cls, command: list[str] | str) -> list[str] | str:
        empty = not command.strip() if isinstance(command, str) else not command or not command[0]
        if empty:
            raise ValueError(
                "is empty (give a list like [python, run.py], or a string to run with sh -c)"
            )
        return command

    @field_validator("environment")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        if env and not all(map(_ENV_NAME.match, env)):
            bad = next(key for key in env if not _ENV_NAME.match(key))
            raise ValueError(
                f"variable name {bad!r} is not valid (use letters, digits and underscores, "
                "not starting with a digit)"
            )
        return env

    @field_validator("timeout")
    @classmethod
    def _timeout_positive(cls, timeout: float | None) -> float | None:
        if timeout is not None and timeout <= 0:
            raise ValueError("must be more than 0 seconds (leave it out for no timeout)")
        return timeout

    @model_validator(mode="after")
    def _one_retry_style(self) -> TaskSpec:
        # backoff_multiplier has a default, so only an explicit one conflicts with retry.
        old_style = self.retry_attempts is not None or "backoff_multiplier" in self.model_fields_set
        if self.retry is not None and old_style:
            raise ValueError(
                "has both retry and retry_attempts/backoff_multiplier (keep one: retry for "
                "ASL-style rules, or retry_attempts with backoff_multiplier)"
            )
        return self

    @property
    def display_name(self) -> str:
        return self.name or self.id


class WorkflowSpec(Strict):
    """A whole workflow file."""

    name: str = Field(min_length=1)
    description: str = ""
    global_config: GlobalConfig = Field(default_factory=GlobalConfig)
    tasks: list[TaskSpec] = Field(min_length=1)
