"""What the user chose for an import (``stormproof import wfformat`` options), and the defaults.

Apart from ``convert`` because the task documents (``task_documents``) depend on these too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Real runtimes times this is how long the stand-in commands sleep: a 10-minute task, 0.6 s.
DEFAULT_TIME_FACTOR = 0.001
DEFAULT_VCPUS = 1
DEFAULT_MEMORY_MIB = 1024

#: Smallest allowed value of each numeric option (a cap of 0 would make tasks invalid).
_OPTION_MINIMA = {
    "time_factor": 0.0,
    "default_runtime": 0.0,
    "max_vcpus": 1e-9,
    "max_memory_mib": 1,
}


@dataclass(frozen=True)
class ImportOptions:
    """What the user chose on the command line; the defaults are the command's defaults."""

    #: Stand-in commands sleep ``runtime * time_factor`` seconds (0: they return at once).
    time_factor: float = DEFAULT_TIME_FACTOR
    #: Seconds for tasks the file has no runtime for; ``None``: such tasks are an error.
    default_runtime: float | None = None
    #: Caps, so a trace from a 48-core node can run on a laptop (the originals go to labels).
    max_vcpus: float | None = None
    max_memory_mib: int | None = None
    #: The workflow's name; ``None``: the file's ``name``, else ``fallback_name``.
    name: str | None = None

    def __post_init__(self) -> None:
        # The command line checks these too, with friendlier words; this guards other callers.
        for field_name, least in _OPTION_MINIMA.items():
            value = getattr(self, field_name)
            if value is not None and not (math.isfinite(value) and value >= least):
                raise ValueError(f"{field_name} must be a finite number >= {least}, not {value!r}")
