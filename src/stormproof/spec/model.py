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

#: What ``plan``, ``simulate`` and the scheduler assume a task without ``estimated_runtime``
#: takes: the recipe's own assumption (its parser estimated 30 minutes per stage), said so
#: wherever it is used, so that a dry run of the recipe's sample is not "0 s / $0".
ASSUMED_RUNTIME_S = 1800.0
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


#: No program can receive a NUL byte (exec takes C strings): refused here, not at launch.
_NUL = "holds a NUL byte (\\0), which no program can be given: remove it"

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

    error_equals: list[str] = Field(
        min_length=1, description="Error names this retrier handles, like [Task.Failed]."
    )
    interval_seconds: float = Field(default=1.0, ge=0, description="Wait before the 1st retry.")
    max_attempts: int = Field(default=3, ge=0, description="Retries this retrier allows.")
    backoff_rate: float = Field(
        default=2.0, ge=1.0, description="Each wait is this times the last."
    )
    max_delay_seconds: float | None = Field(
        default=None, gt=0, description="Longest wait, whatever the backoff."
    )
    jitter: Literal["full", "none"] = Field(
        default="none", description="full: wait a random part of the delay (seeded by the run)."
    )

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

    checkpoint_interval: Duration | None = Field(
        default=None, description="Ask checkpointing tasks to checkpoint this often."
    )
    max_retry_attempts: int = Field(
        default=3, ge=0, description="Retries of a task that sets neither retry_attempts nor retry."
    )
    spot_strategy: SpotStrategy = Field(
        default=SpotStrategy.DIVERSIFIED, description="How tasks spread over the spot pools."
    )
    # extensions
    max_parallel: int | None = Field(default=None, ge=1, description="At most N attempts at once.")
    on_failure: OnFailure = Field(
        default=OnFailure.FAIL,
        description="fail: kill what runs; finish: let it end; continue: run what does not depend "
        "on the failed task.",
    )
    max_interruptions: int = Field(
        default=10, ge=0, description="Interruptions a task may take (spot reclaims, lost nodes)."
    )
    retry_interval: Duration = Field(
        default=30.0, description="First wait of the retrier made from retry_attempts."
    )
    kill_grace: Duration = Field(default=10.0, description="From SIGTERM to SIGKILL.")
    keep_checkpoints: int = Field(
        default=2, ge=0, description="Checkpoints kept per task while it runs."
    )
    keep_checkpoints_on_success: bool = Field(
        default=False, description="Keep a task's checkpoints after the workflow succeeds."
    )
    checkpoint_signal: CheckpointSignal = Field(
        default="SIGUSR1", description="The signal that asks a task to checkpoint now."
    )
    memory_escalation: float = Field(
        default=1.0, ge=1.0, description="After Task.OutOfMemory, ask for this times the memory."
    )


class TaskSpec(Strict):
    """One task of the workflow: the recipe's fields first, then the extensions."""

    id: str = Field(
        pattern=TASK_ID_PATTERN,
        description="Unique; letters, digits, '_', '.', '-' (it names files and keys).",
    )
    name: str | None = Field(default=None, description="A name for people.")
    type: Literal["batch", "multi_node"] = Field(
        default="batch", description="multi_node: one attempt spans `nodes` instances."
    )
    container_image: str | None = Field(
        default=None, description="Run the command in this image (with `container:` set)."
    )
    command: list[str] | str = Field(
        description="A list runs without a shell; a string runs under sh -c. "
        "${STORMPROOF_*} names are expanded."
    )
    environment: dict[str, EnvValue] = Field(
        default_factory=dict, description="Variables for the command."
    )
    vcpus: float = Field(default=1, gt=0, description="vCPUs per node.")
    memory: int = Field(default=1024, gt=0, description="MiB per node (enforced when declared).")
    nodes: int = Field(default=1, ge=1, description="Instances one attempt spans.")
    depends_on: list[str] = Field(
        default_factory=list, description="Ids of the tasks that must succeed first."
    )
    retry_attempts: int | None = Field(
        default=None, ge=0, description="Retries (default: global_config.max_retry_attempts)."
    )
    backoff_multiplier: float = Field(
        default=2.0, ge=1.0, description="Each retry waits this times the last."
    )
    checkpoint_enabled: bool = Field(
        default=False, description="The task checkpoints; a new attempt restores the last one."
    )
    spot_enabled: bool = Field(default=True, description="The task may run on spot capacity.")
    # extensions
    estimated_runtime: Duration | None = Field(
        default=None, description="For plan, simulate and deadlines (unset: 30 minutes assumed)."
    )
    timeout: Duration | None = Field(default=None, description="An attempt's longest run.")
    gpus: int = Field(default=0, ge=0, description="GPUs per node.")
    max_interruptions: int | None = Field(
        default=None, ge=0, description="Interruptions the task may take."
    )
    retry: list[Retrier] | None = Field(
        default=None, description="Step Functions-style retriers, tried as tiers."
    )
    on_failure: OnFailure | None = Field(
        default=None, description="What this task's failure does (default: global_config's)."
    )
    kill_grace: Duration | None = Field(default=None, description="From SIGTERM to SIGKILL.")
    checkpoint_interval: Duration | None = Field(
        default=None, description="Ask the task to checkpoint this often."
    )
    checkpoint_cost: Duration | None = Field(
        default=None,
        description="How long one checkpoint takes to write and save: with a pool's "
        "interruption rate, plan suggests an interval (Daly).",
    )
    checkpoint_signal: CheckpointSignal | None = Field(
        default=None, description="The signal that asks the task to checkpoint now."
    )
    keep_checkpoints: int | None = Field(
        default=None, ge=0, description="Checkpoints kept while the task runs."
    )
    keep_checkpoints_on_success: bool | None = Field(
        default=None, description="Keep its checkpoints after the workflow succeeds."
    )
    memory_escalation: float | None = Field(
        default=None,
        ge=1.0,
        description="After Task.OutOfMemory the next attempt asks for memory times this.",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Free-form text labels (import wfformat keeps the original command here).",
    )
    inputs: list[str] = Field(
        default_factory=list,
        description="Files or folders the task reads from outside the run (relative to the "
        "workflow file's folder, or absolute), like its scripts and parameters: their content "
        "is part of its fingerprint, so a change reruns it (run --reuse, redrive).",
    )
    outputs: list[str] = Field(
        default_factory=list,
        description="Files or folders the task leaves in the run's data dir, relative to it: "
        "what run --reuse copies into a new run. A task without outputs is never reused.",
    )

    @field_validator("command")
    @classmethod
    def _command_not_empty(cls, command: list[str] | str) -> list[str] | str:
        empty = not command.strip() if isinstance(command, str) else not command or not command[0]
        if empty:
            raise ValueError(
                "is empty (give a list like [python, run.py], or a string to run with sh -c)"
            )
        if "\0" in (command if isinstance(command, str) else "".join(command)):
            raise ValueError(_NUL)
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
        for name, value in env.items():
            if "\0" in value:
                raise ValueError(f"{name}: {_NUL}")
        return env

    @field_validator("inputs")
    @classmethod
    def _input_paths(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not path.strip() or "\0" in path:
                raise ValueError(f"{path!r} is not a path (give a file like params.yaml)")
        return paths

    @field_validator("outputs")
    @classmethod
    def _output_paths(cls, paths: list[str]) -> list[str]:
        for path in paths:
            parts = path.replace("\\", "/").split("/")
            if not path.strip() or "\0" in path or path.startswith(("/", "~")) or ".." in parts:
                raise ValueError(
                    f"{path!r} is not a path inside the run's data dir: give it relative to "
                    "STORMPROOF_DATA_DIR, like results/x.nc (no '..', not absolute)"
                )
        return paths

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

    @model_validator(mode="after")
    def _checkpoint_settings_need_checkpointing(self) -> TaskSpec:
        # A checkpoint setting on a task that does not checkpoint would do nothing: the
        # driver neither asks it to checkpoint nor keeps or prunes anything for it.
        if self.checkpoint_enabled:
            return self
        inert = [k for k in _CHECKPOINT_SETTINGS if k in self.model_fields_set]
        if inert:
            raise ValueError(
                f"sets {', '.join(inert)} but not checkpoint_enabled: true, so "
                f"{'it does' if len(inert) == 1 else 'they do'} nothing (add "
                "checkpoint_enabled: true, or remove "
                f"{'it' if len(inert) == 1 else 'them'})"
            )
        return self

    @property
    def display_name(self) -> str:
        return self.name or self.id


#: The task settings that act only on a task with ``checkpoint_enabled: true``.
_CHECKPOINT_SETTINGS = (
    "checkpoint_interval",
    "checkpoint_cost",
    "checkpoint_signal",
    "keep_checkpoints",
    "keep_checkpoints_on_success",
)


class WorkflowSpec(Strict):
    """A whole workflow file."""

    name: str = Field(min_length=1, description="The workflow's name; runs are named after it.")
    description: str = Field(default="", description="What it does, for people.")
    global_config: GlobalConfig = Field(
        default_factory=GlobalConfig, description="Run-wide settings and defaults for the tasks."
    )
    tasks: list[TaskSpec] = Field(min_length=1, description="The tasks, in any order.")
