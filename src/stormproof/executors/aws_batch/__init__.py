"""``executor: aws_batch``: attempts as AWS Batch jobs (see ``executor``)."""

from stormproof.executors.aws_batch.executor import AwsBatchExecutor

__all__ = ["AwsBatchExecutor"]
