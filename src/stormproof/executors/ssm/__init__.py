"""``executor: ssm``: attempts as SSM Run Commands on ``capacity: aws``'s instances."""

from stormproof.executors.ssm.executor import SsmExecutor

__all__ = ["SsmExecutor"]
