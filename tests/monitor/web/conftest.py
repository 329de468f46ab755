"""The AWS emulators and the real S3 server, for the log pane of a run on AWS
(``test_aws_logs``); only the tests that ask for them start them."""

from tests.aws.fixtures import (
    agents,
    ec2_project,
    imds,
    locked_seaweed,
    moto,
    moto_session,
    seaweed,
)

__all__ = ["agents", "ec2_project", "imds", "locked_seaweed", "moto", "moto_session", "seaweed"]
