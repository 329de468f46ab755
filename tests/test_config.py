"""stormproof.yaml: defaults, the file, errors that name the line and the fix, env overrides."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from stormproof.config import Config, load_config, local_machine
from stormproof.core.defs import Market, PoolDef, Resources
from stormproof.errors import ConfigError

GOOD = """\
executor: local            # local | slurm | dask | aws_batch
store: postgresql://stormproof@db/stormproof
checkpoints: s3://bucket/prefix
pools:
  - {name: spot-c5,   market: spot,      instance: c5.xlarge, vcpus: 4, memory: 8192,
     price: 0.068, count: 4}
  - name: ondemand
    market: on_demand
    instance: c5.xlarge
    vcpus: 4
    memory: 8192
    price: 0.17
    count: 2
policy: {fallback_after_interruptions: 2, deadline: 36h}
alerts:
  - {on: workflow_failed, notify: "slack://hooks/x"}
  - {on: interruption_rate, above: 5, per: 10m, notify: "mailto://ops@example.org"}
container: apptainer
"""


def write(tmp_path: Path, text: str, name: str = "stormproof.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error(tmp_path: Path, text: str) -> str:
    write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(None, tmp_path, {})
    return str(info.value)


def test_no_file_means_all_defaults_and_this_machine(tmp_path: Path) -> None:
    config = load_config(None, tmp_path, {})
    assert config == Config()
    assert config.source is None
    assert (config.executor, config.store, config.container) == ("local", "sqlite", "none")
    assert config.container_runtime is None
    assert config.home_dir(tmp_path) == tmp_path / ".stormproof"
    memory_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    assert config.pool_defs() == (
        PoolDef(
            name="local",
            market=Market.ON_DEMAND,
            capacity=Resources(vcpus=float(os.cpu_count() or 1), memory_mib=memory_mib, gpus=0),
            count=1,
            price_usd_per_h=0.0,
            instance_type="local",
        ),
    )
    assert local_machine().memory_mib == memory_mib


def test_the_design_example_loads(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    config = load_config(None, tmp_path, {})
    assert config.source == path
    assert config.store == "postgresql://stormproof@db/stormproof"
    assert config.checkpoints == "s3://bucket/prefix"
    assert config.policy.deadline == 36 * 3600
    assert config.policy.fallback_after_interruptions == 2
    failed, rate = config.alerts
    assert (failed.on, failed.notify) == ("workflow_failed", ["slack://hooks/x"])
    assert (rate.on, rate.above, rate.per) == ("interruption_rate", 5, 600)
    assert rate.notify == ["mailto://ops@example.org"]
    assert config.container_runtime == "apptainer"
    spot, on_demand = config.pool_defs()
    assert spot == PoolDef("spot-c5", Market.SPOT, Resources(4, 8192, 0), 4, 0.068, "c5.xlarge")
    assert on_demand.market is Market.ON_DEMAND and on_demand.count == 2
    pool = config.pools[0]
    assert (pool.weight, pool.interruption_rate, pool.gpus) == (1.0, None, 0)


def test_given_path_is_relative_to_cwd(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf", "executor: slurm\n", "site.yaml")
    assert load_config(Path("conf/site.yaml"), tmp_path, {}).executor == "slurm"
    with pytest.raises(ConfigError, match=r"^conf/nope\.yaml: no such configuration file"):
        load_config(Path("conf/nope.yaml"), tmp_path, {})


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    write(tmp_path, "# nothing yet\n")
    assert load_config(None, tmp_path, {}).model_dump() == Config().model_dump()


def test_unknown_field_with_suggestion_and_line(tmp_path: Path) -> None:
    text = "executor: local\npools:\n  - name: a\n    market: spot\n    vcpus: 2\n    memory: 512\n"
    text += "    prise: 0.1\n"
    assert error(tmp_path, text) == (
        "stormproof.yaml:7: pools[0].prise: unknown field (did you mean 'price'?)"
    )
    assert error(tmp_path, "exector: slurm\n") == (
        "stormproof.yaml:1: exector: unknown field (did you mean 'executor'?)"
    )
    message = error(tmp_path, "zzz: 1\n")
    assert message.startswith("stormproof.yaml:1: zzz: unknown field (known fields: executor,")


def test_bad_market_with_suggestion(tmp_path: Path) -> None:
    text = (
        "pools:\n"
        "  - {name: a, market: spot, vcpus: 2, memory: 512}\n"
        "  - {name: b, market: spott, vcpus: 2, memory: 512}\n"
    )
    assert error(tmp_path, text) == (
        "stormproof.yaml:3: pools[1].market: 'spott' is not one of spot, on_demand "
        "(did you mean 'spot'?)"
    )


def test_negative_price_and_zero_vcpus_say_what_is_expected(tmp_path: Path) -> None:
    text = "pools:\n  - {name: a, market: spot, vcpus: 0, memory: 512, price: -0.5}\n"
    assert error(tmp_path, text) == "\n".join(
        [
            "stormproof.yaml: 2 problems",
            "  - stormproof.yaml:2: pools[0].vcpus: must be more than 0, got 0 "
            "(the vCPUs of one instance, like 4)",
            "  - stormproof.yaml:2: pools[0].price: must be at least 0, got -0.5 "
            "(USD per instance-hour, like 0.068)",
        ]
    )


def test_missing_pool_fields_say_what_to_give(tmp_path: Path) -> None:
    message = error(tmp_path, "pools:\n  - {name: a, market: spot, vcpus: 2}\n")
    assert message == (
        "stormproof.yaml:2: pools[0].memory: required field is missing: "
        "give the MiB of memory of one instance, like 8192"
    )


def test_duplicate_pool_names(tmp_path: Path) -> None:
    text = (
        "pools:\n"
        "  - {name: a, market: spot, vcpus: 2, memory: 512}\n"
        "  - {name: b, market: spot, vcpus: 2, memory: 512}\n"
        "  - {name: a, market: on_demand, vcpus: 2, memory: 512}\n"
    )
    assert error(tmp_path, text) == (
        "stormproof.yaml:1: pools: pool name 'a' is used twice (pools[0] and pools[2]); "
        "give each pool its own name"
    )


def test_unsafe_pool_name(tmp_path: Path) -> None:
    message = error(tmp_path, "pools:\n  - {name: ../x, market: spot, vcpus: 2, memory: 512}\n")
    assert message.startswith("stormproof.yaml:2: pools[0].name: '../x' is not a safe name")


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    message = error(tmp_path, "executor: local\npools:\n  - {name: a, market: spot\nstore: x\n")
    assert message == (
        "stormproof.yaml:4:6: not valid YAML: expected ',' or '}', but got ':' "
        "(while parsing a flow mapping at line 3)"
    )
    message = error(tmp_path, "executor: local\n  store: sqlite\n")
    assert message.startswith("stormproof.yaml:2:")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert error(tmp_path, "- a\n- b\n") == (
        "stormproof.yaml: expected settings like `executor: local` at the top level, got a list"
    )


def test_wrong_types(tmp_path: Path) -> None:
    assert error(tmp_path, "pools: {name: a}\n") == (
        "stormproof.yaml:1: pools: expected a list (lines starting with '- '), got a mapping"
    )
    assert error(tmp_path, "policy: {max_parallel: many}\n") == (
        "stormproof.yaml:1: policy.max_parallel: expected a whole number, got 'many'"
    )
    assert error(tmp_path, "policy: {deadline: soon}\n") == (
        "stormproof.yaml:1: policy.deadline: expected a duration like 600, '10m' or '2h30m', "
        "got 'soon'"
    )
    assert error(tmp_path, "container: dockr\n") == (
        "stormproof.yaml:1: container: 'dockr' is not one of none, apptainer, docker, podman "
        "(did you mean 'docker'?)"
    )


def test_settings_left_empty_mean_none(tmp_path: Path) -> None:
    write(tmp_path, "container:\npools:\n  # - {name: a, market: spot, vcpus: 2, memory: 512}\n")
    config = load_config(None, tmp_path, {})
    assert config.container == "none"
    assert config.pools == []
    assert [p.name for p in config.pool_defs()] == ["local"]
    write(tmp_path, "policy:\nalerts:\n")
    assert load_config(None, tmp_path, {}).model_dump() == Config().model_dump()


def test_env_overrides_win_over_the_file(tmp_path: Path) -> None:
    write(tmp_path, "executor: local\nstore: sqlite\nhome: /srv/sp\npolicy: {max_parallel: 2}\n")
    env = {
        "STORMPROOF_EXECUTOR": "slurm",
        "STORMPROOF_STORE": "postgresql://db/sp",
        "STORMPROOF_HOME": "/scratch/sp",
        "STORMPROOF_MAX_PARALLEL": "16",
        "STORMPROOF_OTHER": "ignored",
    }
    config = load_config(None, tmp_path, env)
    assert (config.executor, config.store, config.home) == (
        "slurm", "postgresql://db/sp", "/scratch/sp"
    )  # fmt: skip
    assert config.policy.max_parallel == 16
    assert config.source == tmp_path / "stormproof.yaml"
    assert config.home_dir(tmp_path) == Path("/scratch/sp")


def test_env_overrides_without_a_file_and_empty_values(tmp_path: Path) -> None:
    config = load_config(None, tmp_path, {"STORMPROOF_EXECUTOR": "", "STORMPROOF_HOME": "h"})
    assert config.executor == "local"
    assert config.home_dir(tmp_path) == tmp_path / "h"


@pytest.mark.parametrize("value", ["0", "-3", "lots", "2.5"])
def test_bad_max_parallel_env(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, tmp_path, {"STORMPROOF_MAX_PARALLEL": value})
    assert str(info.value) == (
        f"STORMPROOF_MAX_PARALLEL={value!r}: expected a whole number of at least 1, like 8 "
        "(or unset it)"
    )


def test_spot_settings_load_with_durations(tmp_path: Path) -> None:
    text = (
        "pools:\n"
        "  - {name: s, market: spot, vcpus: 2, memory: 512, notice: 30s, trace: t.json,\n"
        "     time_scale: 600, trace_offset: 2h, interruption_rate: 0.2}\n"
        "policy:\n"
        "  fallback_after_interruptions: 2\n"
        "  last_attempt_on_demand: true\n"
        "  launch_retry: 1m\n"
        "  breaker: {threshold: 4, window: 15m, cooldown: 2m, max_cooldown: 1h, min_healthy: 2}\n"
    )
    (tmp_path / "stormproof.yaml").write_text(text)
    config = load_config(None, tmp_path, {})
    pool = config.pools[0]
    assert (pool.notice, pool.time_scale, pool.trace_offset) == (30.0, 600.0, 7200.0)
    rule = config.policy.breaker_rule()
    assert (rule.threshold, rule.window_s, rule.cooldown_s, rule.max_cooldown_s) == (
        4,
        900.0,
        120.0,
        3600.0,
    )
    assert rule.min_healthy == 2 and config.policy.launch_retry == 60.0


def test_bad_spot_settings_name_the_place(tmp_path: Path) -> None:
    text = "pools:\n  - {name: s, market: spot, vcpus: 2, memory: 512, time_scale: 0}\n"
    assert "pools[0].time_scale: must be more than 0" in error(tmp_path, text)
    text = "policy:\n  breaker: {treshold: 2}\n"
    assert error(tmp_path, text) == (
        "stormproof.yaml:2: policy.breaker.treshold: unknown field (did you mean 'threshold'?)"
    )
    text = "pools:\n  - {name: s, market: spot, vcpus: 2, memory: 512, notice: soon}\n"
    assert "pools[0].notice: expected a duration like 600" in error(tmp_path, text)


FLEET = """\
pools:
  - {name: large, market: spot, instance: c5.large, vcpus: 2, memory: 4096, weight: 1}
  - {name: xlarge, market: spot, instance: c5.xlarge, vcpus: 4, memory: 8192, weight: 2}
  - {name: od, market: on_demand, vcpus: 4, memory: 8192, count: 3}
fleet: {target_capacity: 4}
"""


def test_a_fleet_target_capacity_is_diversified_over_the_spot_pools_by_weight(
    tmp_path: Path,
) -> None:
    write(tmp_path, FLEET)
    config = load_config(None, tmp_path, {})
    counts = {p.name: p.count for p in config.pool_defs()}
    # the recipe's Spot Fleet: 4 units, c5.large counts 1, c5.xlarge 2; on-demand keeps its count
    assert counts == {"large": 2, "xlarge": 1, "od": 3}
    write(tmp_path, FLEET.replace("target_capacity: 4", "target_capacity: 9"))
    counts = {p.name: p.count for p in load_config(None, tmp_path, {}).pool_defs()}
    assert counts == {"large": 5, "xlarge": 2, "od": 3}


def test_bad_fleet_settings_name_the_place_and_the_fix(tmp_path: Path) -> None:
    text = FLEET.replace("weight: 2}", "weight: 2, count: 3}")
    assert error(tmp_path, text) == (
        "stormproof.yaml:3: pools[1].count: not with fleet.target_capacity, which decides how "
        "many instances each spot pool gets (by its weight); remove count from pool 'xlarge', "
        "or remove fleet"
    )
    text = (
        "pools:\n  - {name: od, market: on_demand, vcpus: 4, memory: 8192}\n"
        "fleet:\n  target_capacity: 2\n"
    )
    assert error(tmp_path, text) == (
        "stormproof.yaml:4: fleet.target_capacity: no pool has market: spot, so the fleet has "
        "nothing to spread its capacity over; add a spot pool under pools, or remove fleet"
    )
    assert "fleet.target_capacity: must be at least 1, got 0" in error(
        tmp_path, FLEET.replace("target_capacity: 4", "target_capacity: 0")
    )
    # a few zeros too many is an error at once, not a plan that never ends
    assert "fleet.target_capacity: must be at most 100000, got 1000000000" in error(
        tmp_path, FLEET.replace("target_capacity: 4", "target_capacity: 1000000000")
    )
    assert "pools[2].count: must be at most 100000, got 3000000000" in error(
        tmp_path, FLEET.replace("count: 3", "count: 3000000000")
    )
    assert "fleet.target: unknown field (known fields: target_capacity)" in error(
        tmp_path, FLEET.replace("target_capacity: 4", "target: 4")
    )
    assert "pools[0].weight: must be more than 0" in error(
        tmp_path, FLEET.replace("weight: 1}", "weight: 0}")
    )


def test_successors_default_to_three_on_the_local_executor_only(tmp_path: Path) -> None:
    from stormproof.runtime.compile import policy_dict

    config = load_config(None, tmp_path, {})
    assert config.policy.successors is None
    assert policy_dict(config.policy, "local")["successors"] == 3
    assert policy_dict(config.policy, "slurm")["successors"] == 0
    write(tmp_path, "policy: {successors: 0}\n")
    assert policy_dict(load_config(None, tmp_path, {}).policy, "local")["successors"] == 0


def test_bad_successors_are_one_clear_line(tmp_path: Path) -> None:
    assert error(tmp_path, "policy: {successors: -1}\n") == (
        "stormproof.yaml:1: policy.successors: must be at least 0, got -1"
    )
    assert error(tmp_path, "policy: {successors: 9}\n") == (
        "stormproof.yaml:1: policy.successors: must be at most 8, got 9"
    )


def test_a_pool_with_an_interruption_source_takes_no_successors(tmp_path: Path) -> None:
    write(
        tmp_path,
        "pools:\n"
        "  - {name: steady, market: on_demand, vcpus: 2, memory: 1024}\n"
        "  - {name: rated, market: on_demand, vcpus: 2, memory: 1024, interruption_rate: 0.1}\n",
    )
    steady, rated = load_config(None, tmp_path, {}).pool_defs()
    assert not steady.interruptible and rated.interruptible


def test_max_jobs_is_an_error_where_the_environment_chooses_the_local_executor(
    tmp_path: Path,
) -> None:
    write(tmp_path, "executor: slurm\npools:\n  - {name: a, market: spot, max_jobs: 5}\n")
    with pytest.raises(ConfigError) as info:
        load_config(None, tmp_path, {"STORMPROOF_EXECUTOR": "local"})
    assert str(info.value) == "\n".join(
        [
            "stormproof.yaml: 3 problems",
            "  - stormproof.yaml:3: pools[0].vcpus: required field is missing: "
            "give the vCPUs of one instance, like 4",
            "  - stormproof.yaml:3: pools[0].memory: required field is missing: "
            "give the MiB of memory of one instance, like 8192",
            "  - stormproof.yaml:3: pools[0].max_jobs: does nothing on executor 'local', which "
            "places attempts on the pool's instances itself; remove max_jobs (it bounds the "
            "jobs a batch system holds, for an executor that delegates placement, like slurm)",
        ]
    )
    # the same file is fine for the executor it names, and its pools become delegated there
    config = load_config(None, tmp_path, {})
    (pool,) = config.for_executor(
        "slurm",
        True,
        lambda ps: tuple(replace(p, capacity=Resources(8, 4096), count=3) for p in ps),
    ).pool_defs()
    assert (pool.delegated, pool.max_jobs, pool.count, pool.capacity.vcpus) == (True, 5, 3, 8)


def test_fleet_with_a_batch_system_is_config_that_does_nothing(tmp_path: Path) -> None:
    text = (
        "pools:\n  - {name: a, market: spot, vcpus: 4, memory: 512}\nfleet: {target_capacity: 2}\n"
    )
    write(tmp_path, text)
    config = load_config(None, tmp_path, {})
    with pytest.raises(ConfigError) as info:
        config.for_executor("slurm", True, lambda pools: pools)
    assert str(info.value).startswith(
        "stormproof.yaml:3: fleet: does nothing on executor 'slurm', whose batch system places"
    )


def test_price_per_is_instance_hour_or_vcpu_hour(tmp_path: Path) -> None:
    text = "pools:\n  - {name: a, market: spot, vcpus: 4, memory: 512, price_per: cpu_hour}\n"
    assert error(tmp_path, text) == (
        "stormproof.yaml:2: pools[0].price_per: 'cpu_hour' is not one of instance_hour, "
        "vcpu_hour (did you mean 'vcpu_hour'?)"
    )


def test_a_postgresql_store_takes_a_lease_duration(tmp_path: Path) -> None:
    write(tmp_path, "store: postgresql://db/sp\nlease: 1m\n")
    assert load_config(None, tmp_path, {}).lease == 60.0
    write(tmp_path, "store: postgres://db/sp\n")
    assert load_config(None, tmp_path, {}).lease is None  # the store's default (30 s)


def test_a_lease_that_does_nothing_or_cannot_work_is_an_error(tmp_path: Path) -> None:
    assert error(tmp_path, "store: sqlite\nlease: 30s\n") == (
        "stormproof.yaml:2: lease: only a PostgreSQL store's lease lapses; store 'sqlite' holds "
        "a run by a lock that ends with its orchestrator and never lapses, so remove lease (or "
        "use store: postgresql://…)"
    )
    assert error(tmp_path, "store: postgresql://db/sp\nlease: 0.5s\n") == (
        "stormproof.yaml:2: lease: a lease lasts from 1 s to 1 day, like 30s: its holder renews "
        "it every third of it"
    )
    write(tmp_path, "store: postgresql://db/sp\nlease: 30s\n")
    with pytest.raises(ConfigError) as info:
        load_config(None, tmp_path, {"STORMPROOF_STORE": "sqlite"})
    assert str(info.value).startswith(f"{tmp_path / 'stormproof.yaml'}: lease: only a PostgreSQL")


def test_alert_rules_load_with_their_settings_and_are_recorded_resolved(tmp_path: Path) -> None:
    write(
        tmp_path,
        "pools:\n"
        "  - {name: spot, market: spot, vcpus: 1, memory: 512}\n"
        "policy: {deadline: 2h}\n"
        "alerts:\n"
        "  - {on: task_failed, notify: json://127.0.0.1:9/x}\n"
        "  - {on: breaker_open, pool: spot, notify: [json://a/b, 'mailto://u:p@h']}\n"
        "  - {on: cost_above, above: 12.5, notify: json://a/b}\n"
        "  - {on: deadline_at_risk, every: 30s, notify: json://a/b}\n",
    )
    config = load_config(None, tmp_path, {})
    rules = config.alert_rules()
    assert [r["on"] for r in rules] == [
        "task_failed",
        "breaker_open",
        "cost_above",
        "deadline_at_risk",
    ]
    assert rules[1]["notify"] == ["json://a/b", "mailto://u:p@h"] and rules[1]["pool"] == "spot"
    assert rules[2]["above"] == 12.5
    assert (rules[3]["deadline_s"], rules[3]["every_s"]) == (7200, 30)


@pytest.mark.parametrize(
    ("alert", "message"),
    [
        ("{on: task_faild, notify: json://a/b}", "alerts[0].on: 'task_faild' is not one of"),
        ("{on: task_faild, notify: json://a/b}", "(did you mean 'task_failed'?)"),
        ("{on: task_failed}", "alerts[0].notify: required field is missing"),
        ("{on: task_failed, notify: slack}", "'slack' is not an apprise URL"),
        ("{on: task_failed, notify: []}", "expected an apprise URL"),
        (
            "{on: task_failed, above: 3, notify: json://a/b}",
            "alerts[0].above: task_failed does not use above",
        ),
        (
            "{on: interruption_rate, above: 5, notify: json://a/b}",
            "interruption_rate needs per: a duration",
        ),
        ("{on: interruption_rate, per: 10m, notify: json://a/b}", "interruption_rate needs above"),
        (
            "{on: breaker_open, pool: spto, notify: json://a/b}",
            "no pool is named 'spto' (did you mean 'spot'?)",
        ),
        ("{on: deadline_at_risk, notify: json://a/b}", "deadline_at_risk needs a deadline"),
        (
            "{on: cost_above, above: 1, notifyy: json://a/b}",
            "alerts[0].notifyy: unknown field (did you mean 'notify'?)",
        ),
    ],
)
def test_bad_alert_rules_are_errors_with_file_line_and_fix(
    tmp_path: Path, alert: str, message: str
) -> None:
    text = (
        "pools:\n  - {name: spot, market: spot, vcpus: 1, memory: 512}\nalerts:\n  - "
        + alert
        + "\n"
    )
    problem = error(tmp_path, text)
    assert message in problem
    assert "stormproof.yaml:4: alerts[0]" in problem


def test_settings_that_would_do_nothing_are_refused_each_with_its_line(tmp_path: Path) -> None:
    text = (
        "container_network: none\n"
        "container_options: [--pull=never]\n"
        "checkpoint_tiers: {cold_after: 7d}\n"
        "pools:\n"
        "  - {name: s, market: spot, vcpus: 2, memory: 512, time_scale: 60, trace_offset: 1h}\n"
    )
    message = error(tmp_path, text)
    assert "5 problems" in message
    assert "stormproof.yaml:1: container_network: does nothing without `container:`" in message
    assert "stormproof.yaml:2: container_options: does nothing without `container:`" in message
    assert "stormproof.yaml:3: checkpoint_tiers.cold_after: does nothing without" in message
    assert "stormproof.yaml:5: pools[0].time_scale: does nothing without interruption_rate" in (
        message
    )
    assert "stormproof.yaml:5: pools[0].trace_offset: does nothing without trace" in message


def test_the_same_settings_load_where_they_act(tmp_path: Path) -> None:
    (tmp_path / "stormproof.yaml").write_text(
        "container: podman\ncontainer_network: none\ncontainer_options: [--pull=never]\n"
        "checkpoint_tiers: {cold: /tmp/cold, cold_after: 7d}\n"
        "pools:\n  - {name: s, market: spot, vcpus: 2, memory: 512, interruption_rate: 0.1,"
        " time_scale: 60}\n"
    )
    config = load_config(None, tmp_path, {})
    assert config.container_settings() == {
        "runtime": "podman",
        "network": "none",
        "options": ["--pull=never"],
    }
