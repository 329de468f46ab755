"""``stormproof.yaml``: the one optional configuration file, and its environment overrides.

Rules (DESIGN §7):

* **Optional.** With no file everything is embedded and local: the local
  executor, SQLite, ``./.stormproof/``, and one pool that is this machine.
* **Strict.** Unknown fields are errors with a suggestion, because a typo in a
  price or a pool size must not silently become a default and a wrong bill.
* **Errors name the file, the line, the place and the fix**, compiler style::

      stormproof.yaml:4: pools[1].market: 'spott' is not one of spot, on_demand
      (did you mean 'spot'?)

  (one line in the terminal). Every problem in the file is reported at once,
  never a traceback.
* **Environment wins over the file** for the few settings a scheduler job or a
  CI run needs to flip without editing it: ``STORMPROOF_EXECUTOR``,
  ``STORMPROOF_STORE``, ``STORMPROOF_HOME``, ``STORMPROOF_MAX_PARALLEL``. An
  empty variable counts as unset, so ``STORMPROOF_HOME= stormproof run`` does
  what it looks like.

The package: ``loading`` reads the file, ``model`` is the whole of it, ``sections`` and
``executors`` its parts, ``fields`` and ``places`` what they share.
"""

from __future__ import annotations

from stormproof.config.executors import (
    AWS_EXECUTORS,
    BATCH_SPOT_STRATEGIES,
    SBATCH_OWN,
    AwsConfig,
    SlurmConfig,
)
from stormproof.config.fields import (
    CONFIG_FILE_NAME,
    CONTAINER_RUNTIMES,
    ENV_EXECUTOR,
    ENV_HOME,
    ENV_MAX_PARALLEL,
    ENV_STORE,
    MAX_INSTANCES,
    PARTITION_PATTERN,
    POOL_NAME_PATTERN,
    SettingError,
)
from stormproof.config.loading import load_config
from stormproof.config.model import Config, local_machine, local_pool
from stormproof.config.sections import (
    ALERT_SETTINGS,
    AlertConfig,
    BreakerConfig,
    CheckpointTiersConfig,
    FleetConfig,
    PolicyConfig,
    PoolConfig,
)

__all__ = [
    "ALERT_SETTINGS",
    "AWS_EXECUTORS",
    "BATCH_SPOT_STRATEGIES",
    "CONFIG_FILE_NAME",
    "CONTAINER_RUNTIMES",
    "ENV_EXECUTOR",
    "ENV_HOME",
    "ENV_MAX_PARALLEL",
    "ENV_STORE",
    "MAX_INSTANCES",
    "PARTITION_PATTERN",
    "POOL_NAME_PATTERN",
    "SBATCH_OWN",
    "AlertConfig",
    "AwsConfig",
    "BreakerConfig",
    "CheckpointTiersConfig",
    "Config",
    "FleetConfig",
    "PolicyConfig",
    "PoolConfig",
    "SettingError",
    "SlurmConfig",
    "load_config",
    "local_machine",
    "local_pool",
]
