"""``executor: slurm``: attempts as Slurm batch jobs, partitions as pools (``docs/slurm.md``)."""

from stormproof.executors.slurm.executor import SlurmExecutor

__all__ = ["SlurmExecutor"]
