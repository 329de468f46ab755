"""stormproof.yaml for ``executor: slurm``: the ``slurm:`` section, ``pools[].partition``, and
the settings that would do nothing on another executor (errors, naming the line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stormproof.config import load_config
from stormproof.errors import ConfigError

ISSUE = """\
executor: slurm
pools: [{name: spot, market: spot, partition: spot, price: 0.01},
        {name: ondemand, market: on_demand, partition: ondemand, price: 0.04}]
"""
#: The same pools with a shape, as the local executor needs.
SHAPED = ISSUE.replace("price: 0.01}", "price: 0.01, vcpus: 4, memory: 4096}").replace(
    "price: 0.04}", "price: 0.04, vcpus: 4, memory: 4096}"
)


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> object:
    (tmp_path / "stormproof.yaml").write_text(text)
    return load_config(None, tmp_path, environ or {})


def error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, environ)
    return str(info.value)


def test_the_issue_s_config_works_as_written_and_records_the_partitions(tmp_path: Path) -> None:
    (tmp_path / "stormproof.yaml").write_text(ISSUE)
    config = load_config(None, tmp_path, {})
    options = config.executor_options()
    assert options["partitions"] == {"spot": "spot", "ondemand": "ondemand"}
    assert (options["account"], options["poll_interval_s"], options["max_poll_interval_s"]) == (
        None,
        2.0,
        30.0,
    )


def test_the_slurm_section(tmp_path: Path) -> None:
    text = ISSUE + (
        "slurm:\n  account: physics\n  qos: long\n  sbatch_args: --constraint=ib --exclusive\n"
        "  poll_interval: 5s\n  max_poll_interval: 2m\n  slurm_conf: etc/slurm.conf\n"
    )
    (tmp_path / "stormproof.yaml").write_text(text)
    options = load_config(None, tmp_path, {}).executor_options()
    assert options["sbatch_args"] == ["--constraint=ib", "--exclusive"]
    assert (options["account"], options["qos"]) == ("physics", "long")
    assert (options["poll_interval_s"], options["max_poll_interval_s"]) == (5.0, 120.0)
    assert options["slurm_conf"] == str(tmp_path / "etc" / "slurm.conf")


def test_settings_that_would_do_nothing_elsewhere_are_errors(tmp_path: Path) -> None:
    flat = error(tmp_path, SHAPED.replace("executor: slurm", "executor: local"))
    assert "stormproof.yaml:2: pools[0].partition: only used with executor: slurm" in flat
    assert "stormproof.yaml:3: pools[1].partition: only used with executor: slurm" in flat
    assert "stormproof.yaml:2: slurm: only used with executor: slurm" in error(
        tmp_path, "executor: local\nslurm: {account: x}\n"
    )


def test_the_executor_from_the_environment_decides(tmp_path: Path) -> None:
    """``STORMPROOF_EXECUTOR`` wins over the file, for these checks too."""
    as_local = SHAPED.replace("executor: slurm", "executor: local")
    assert load(tmp_path, as_local, {"STORMPROOF_EXECUTOR": "slurm"})
    flat = error(tmp_path, SHAPED, {"STORMPROOF_EXECUTOR": "local"})
    assert "only used with executor: slurm (this configuration runs on 'local')" in flat


def test_sbatch_options_stormproof_sets_itself_are_refused(tmp_path: Path) -> None:
    flat = error(tmp_path, ISSUE + "slurm: {sbatch_args: [--exclusive, -Jname]}\n")
    assert flat.startswith("stormproof.yaml:4: slurm.sbatch_args: '-Jname': stormproof sets -J")
    flat = error(tmp_path, ISSUE + "slurm: {sbatch_args: '--output=x.log'}\n")
    assert "'--output=x.log': stormproof sets --output itself" in flat


def test_polling_intervals_are_checked(tmp_path: Path) -> None:
    flat = error(tmp_path, ISSUE + "slurm: {poll_interval: 10s, max_poll_interval: 5s}\n")
    assert "max_poll_interval (5s) is shorter than poll_interval (10s)" in flat


def test_place_names_the_line_of_a_setting(tmp_path: Path) -> None:
    (tmp_path / "stormproof.yaml").write_text(ISSUE + "slurm:\n  account: physics\n")
    config = load_config(None, tmp_path, {})
    assert config.place(("pools", 1, "partition")) == "stormproof.yaml:3: pools[1].partition"
    assert config.place(("slurm", "account")) == "stormproof.yaml:5: slurm.account"
