from tests.aws.fixtures import hosts, imds, moto, moto_session, project, seaweed

__all__ = ["hosts", "imds", "moto", "moto_session", "project", "seaweed"]
