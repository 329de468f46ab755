"""``executor: dask``: workflows on a Dask cluster (``docs/dask.md``).

Importing this package needs ``dask.distributed``, an optional dependency: without it the
entry point's import fails with one line that names the extra to install.
"""

from __future__ import annotations

from stormproof.errors import ConfigError

try:
    from stormproof.executors.dask.executor import DaskExecutor
except ImportError as exc:  # only a missing Dask; any other import error is ours to see
    if (exc.name or "").split(".")[0] not in ("dask", "distributed"):
        raise
    raise ConfigError(
        "executor 'dask' needs dask.distributed, which is not installed here: "
        "pip install 'stormproof[dask]'"
    ) from None

__all__ = ["DaskExecutor"]
