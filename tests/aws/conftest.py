from tests.aws.fixtures import (
    agents,
    ec2_project,
    hosts,
    imds,
    locked_seaweed,
    moto,
    moto_session,
    project,
    seaweed,
)

__all__ = [
    "agents",
    "ec2_project",
    "hosts",
    "imds",
    "locked_seaweed",
    "moto",
    "moto_session",
    "project",
    "seaweed",
]
