"""What the executor is told about one attempt: ``AttemptJob``, the same on every call.

The driver asks for it when the core launches an attempt and again on resume, for every
attempt the log says is live: both must describe the same attempt (its directory, its
command, its environment), so it is built from the run's recorded context and the core's
placement alone, never from anything that changes between the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stormproof.checkpoints import protocol
from stormproof.executors.base import AttemptJob
from stormproof.runtime import containers
from stormproof.runtime.compile import expand
from stormproof.runtime.home import Home
from stormproof.runtime.home import attempt_dir as attempt_path
from stormproof.runtime.runs import RunContext
from stormproof.spec.model import TaskSpec

#: Environment variable that asks the local executor to hold the attempt to its memory.
ENV_MEMORY_LIMIT = "STORMPROOF_MEMORY_LIMIT_MIB"


@dataclass
class AttemptJobs:
    """Builds each attempt's ``AttemptJob`` for one run."""

    run: str
    specs: Sequence[TaskSpec]
    #: Each task's time limit (the compiled task's, which defaults apply to).
    timeouts: Sequence[float | None]
    #: Each pool's market (``spot``, ``on_demand``), by pool name.
    markets: dict[str, str]
    tasks_dir: Path
    data_dir: Path
    workflow_dir: Path
    checkpoint_signal: str
    values_base: dict[str, str]
    #: The container runtime and network when the run has one, else ``None``.
    container: tuple[str, str] | None = None
    container_options: Sequence[str] = ()

    @classmethod
    def for_run(
        cls, home: Home, ctx: RunContext, timeouts: Sequence[float | None], markets: dict[str, str]
    ) -> AttemptJobs:
        runtime = ctx.container.get("runtime")
        options: Any = ctx.container.get("options") or ()
        return cls(
            run=ctx.name,
            specs=ctx.spec.tasks,
            timeouts=timeouts,
            markets=markets,
            tasks_dir=home.tasks_dir(ctx.name),
            data_dir=home.data_dir(ctx.name),
            workflow_dir=Path(ctx.workflow_dir),
            checkpoint_signal=ctx.spec.global_config.checkpoint_signal,
            values_base={
                "STORMPROOF_RUN": ctx.name,
                "STORMPROOF_WORKFLOW_DIR": ctx.workflow_dir,
                "STORMPROOF_DATA_DIR": str(home.data_dir(ctx.name)),
                "STORMPROOF_RUN_DIR": str(home.run_dir(ctx.name)),
            },
            container=(
                None if not runtime else (str(runtime), str(ctx.container.get("network", "host")))
            ),
            container_options=tuple(options),
        )

    def job(
        self,
        i: int,
        number: int,
        instances: tuple[str, ...],
        memory_mib: int = 0,
        pool: str = "",
        after: str = "",
    ) -> AttemptJob:
        """The executor's view of attempt ``number`` of task ``i``; the same on every call."""
        spec = self.specs[i]
        memory = memory_mib or spec.memory
        values = dict(self.values_base)
        values.update(
            STORMPROOF_TASK=spec.id,
            STORMPROOF_ATTEMPT=str(number),
            STORMPROOF_ATTEMPT_ID=f"{spec.id}/{number}",
            STORMPROOF_INSTANCES=",".join(instances),
            STORMPROOF_POOL=pool,
        )
        env = {k: expand(v, values) for k, v in spec.environment.items()}
        env.update(values)
        if "memory" in spec.model_fields_set:
            # Only a declared memory is enforced: the 1 GiB default must not kill anyone.
            env[ENV_MEMORY_LIMIT] = str(memory)
        attempt_dir = attempt_path(self.tasks_dir, spec.id, number)
        if spec.checkpoint_enabled:
            name = spec.checkpoint_signal or self.checkpoint_signal
            env[protocol.ENV_CHECKPOINT_DIR] = str(attempt_dir / "checkpoint")
            env[protocol.ENV_CHECKPOINT_SIGNAL] = name
        command: list[str] | str
        if isinstance(spec.command, str):
            command = expand(spec.command, values)
        else:
            command = [expand(part, values) for part in spec.command]
        if self.container is not None and spec.container_image:
            command = self._in_container(command, spec, attempt_dir, env, memory)
        return AttemptJob(
            run=self.run,
            attempt_id=f"{spec.id}/{number}",
            task_id=spec.id,
            number=number,
            command=command,
            env=env,
            attempt_dir=attempt_dir,
            vcpus=spec.vcpus,
            memory_mib=memory,
            gpus=spec.gpus,
            nodes=spec.nodes,
            instances=instances,
            after=after,
            pool=pool,
            market=self.markets.get(pool, ""),
            timeout_s=self.timeouts[i],
            image=spec.container_image,
        )

    def _in_container(
        self,
        command: list[str] | str,
        spec: TaskSpec,
        attempt_dir: Path,
        env: dict[str, str],
        memory: int,
    ) -> list[str]:
        """The command line that runs the attempt in the task's image (``runtime.containers``)."""
        assert self.container is not None
        runtime, network = self.container
        return containers.wrap(
            command,
            runtime=runtime,
            image=spec.container_image or "",
            network=network,
            name=f"stormproof-{self.run}-{spec.id}-{env['STORMPROOF_ATTEMPT']}",
            env_names=env,
            workdir=attempt_dir / "work",
            binds=(attempt_dir, self.data_dir),
            read_only=(self.workflow_dir,),
            gpus=spec.gpus,
            memory_mib=memory if "memory" in spec.model_fields_set else None,
            image_dir=self.workflow_dir,
            options=self.container_options or (),
        )
