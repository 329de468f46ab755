"""The building blocks of the configuration's sections: names and patterns, the strict base
model (unknown fields are errors), validators whose messages suggest the close choice, and
``SettingError``, which an executor raises about one setting."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
)

from stormproof.config.places import setting_path
from stormproof.core.defs import (
    Market,
)
from stormproof.errors import ConfigError
from stormproof.spec.model import parse_duration

CONFIG_FILE_NAME = "stormproof.yaml"
#: Pool names appear in file names, metric labels and the event log: a safe alphabet.
POOL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
CONTAINER_RUNTIMES = ("none", "apptainer", "docker", "podman")
#: A Slurm partition name as ``sbatch --partition`` takes it (no commas: one partition).
PARTITION_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
#: Most instances one pool (or a fleet's target, in units) may ask for.
MAX_INSTANCES = 100_000
ENV_EXECUTOR = "STORMPROOF_EXECUTOR"
ENV_STORE = "STORMPROOF_STORE"
ENV_HOME = "STORMPROOF_HOME"
ENV_MAX_PARALLEL = "STORMPROOF_MAX_PARALLEL"


class SettingError(ConfigError):
    """What an executor found wrong with one setting after loading (a batch system's answer:
    no such partition, an account refused); ``Config.for_executor`` adds its file and line."""

    def __init__(self, loc: tuple[int | str, ...], problem: str) -> None:
        super().__init__(f"{setting_path(loc)}: {problem}")
        self.loc = loc
        self.problem = problem


def suggestion(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a close choice exists, else nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def one_of(*choices: str) -> Callable[[Any], Any]:
    """A validator with the message we want (pydantic's enum message has no suggestion)."""

    def check(value: Any) -> Any:
        if isinstance(value, Market):
            value = value.value
        if value in choices:
            return value
        hint = suggestion(value, choices) if isinstance(value, str) else ""
        raise ValueError(f"{value!r} is not one of {', '.join(choices)}{hint}")

    return check


def parse_container(value: Any) -> Any:
    # `container:` left empty or `~` means no runtime, like `none`.
    return "none" if value is None else one_of(*CONTAINER_RUNTIMES)(value)


def none_as_empty_list(value: Any) -> Any:
    # `pools:` with every entry commented out is YAML null: the user means "none".
    return [] if value is None else value


def none_as_empty_mapping(value: Any) -> Any:
    return {} if value is None else value


def optional_duration(value: Any) -> Any:
    return None if value is None else parse_duration(value)


def parse_instance_types(value: Any) -> Any:
    """``[c5.large, c5.xlarge]`` (weight 1 each) or ``{c5.large: 1, c5.xlarge: 2}``."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        if len(set(value)) != len(value):
            raise ValueError(f"an instance type is listed twice in {value!r}")
        return dict.fromkeys(value, 1.0)
    raise ValueError(
        "expected a list of EC2 instance types like [c5.large, c5.xlarge], or a mapping of "
        "type to weight like {c5.large: 1, c5.xlarge: 2}"
    )


class StrictSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


EXAMPLES: dict[str, str] = {
    "name": "a name like spot-c5",
    "market": "spot or on_demand",
    "vcpus": "the vCPUs of one instance, like 4",
    "memory": "the MiB of memory of one instance, like 8192",
    "price": "USD per instance-hour, like 0.068",
    "max_jobs": "the jobs at most outstanding in the pool, like 100",
    "count": "how many instances, like 4",
    "target_capacity": "capacity units on spot, like 8",
}
