from tests.aws.fixtures import hosts, imds, moto, moto_session, project
from tests.checkpoints.conftest import seaweed

__all__ = ["hosts", "imds", "moto", "moto_session", "project", "seaweed"]
