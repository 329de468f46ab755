"""A user's daily commands, for real: ``logs -f``, ``history --task``, ``status --watch``
into a pipe, a task in backoff in ``status``, ``clean``, and what the end of ``run`` says."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime

import pytest

from .conftest import Cli, wait_for

pytestmark = pytest.mark.slow

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d")


def test_logs_follow_prints_output_as_it_comes_across_retries(cli: Cli) -> None:
    cli.write(
        "wf.yaml",
        """
name: chatty
tasks:
  - id: talk
    command: 'echo "try $STORMPROOF_ATTEMPT"; sleep 3; echo "late $STORMPROOF_ATTEMPT";
              [ "$STORMPROOF_ATTEMPT" -ge 2 ]'
    retry: [{error_equals: [Task.Failed], interval_seconds: 0.5, max_attempts: 2}]
""",
    )
    run = cli.start("run", "wf.yaml", "--name", "f1", "-q")
    # -f follows the attempt running when it starts (here the first, which lasts 3 s)
    wait_for(lambda: (cli.data_dir / "f1" / "tasks" / "talk").exists(), what="the first attempt")
    started = time.monotonic()
    follow = cli("logs", "f1", "talk", "-f", "--stream", "stdout", timeout=60)
    assert follow.returncode == 0, follow.stderr
    assert time.monotonic() - started > 3  # it waited for the retry, not just the first lines
    lines = [line for line in follow.stdout.splitlines() if not line.startswith("──")]
    assert lines == ["try 1", "late 1", "try 2", "late 2"]
    assert run.wait(timeout=30) == 0
    one = cli("logs", "f1", "talk", "-f", "--attempt", "1", "--stream", "stdout")
    assert [x for x in one.stdout.splitlines() if not x.startswith("──")] == ["try 1", "late 1"]


TWO = """
name: two
tasks:
  - {id: a, command: 'echo a'}
  - {id: b, command: 'sleep 0.5', depends_on: [a]}
"""


def test_history_of_one_task_with_local_iso_times_and_rounded_money(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    cli.write("wf.yaml", TWO)
    cli.write(
        "stormproof.yaml",
        "pools: [{name: od, market: on_demand, vcpus: 4, memory: 8192, price: 0.123456789}]\n",
    )
    assert cli("run", "wf.yaml", "--name", "h1", "-q").returncode == 0
    rows = json.loads(cli("history", "h1", "--task", "b", "--json").stdout)
    tasks = {r["data"].get("task_id") for r in rows if r["category"] == "decision"}
    assert tasks == {"b"}  # a's own decisions are left out; the events that caused b's stay
    assert {"TaskReady", "LaunchAttempt", "AttemptEnded", "TaskEnded"} <= {r["kind"] for r in rows}
    assert all(datetime.fromisoformat(r["time"]).timestamp() == pytest.approx(r["at"], abs=1e-3)
               for r in rows)  # fmt: skip
    (ended,) = [r for r in rows if r["kind"] == "AttemptEnded"]
    exact = ended["data"]["cost_usd"]
    assert exact > 0 and round(exact, 4) != exact  # --json keeps the exact figure
    human = cli("history", "h1", "--task", "b").stdout
    assert ISO.search(human), human
    assert f"cost_usd=${exact:.4f} " in human
    assert "task_id=a" not in human
    missing = cli("history", "h1", "--task", "c")
    assert missing.returncode == 2 and "no task 'c'" in missing.stderr


def test_status_watch_into_a_pipe_prints_a_line_per_change(cli: Cli) -> None:
    cli.write("wf.yaml", TWO.replace("echo a", "sleep 2"))
    run = cli.start("run", "wf.yaml", "--name", "w1", "-q")
    wait_for(lambda: (cli.data_dir / "w1").exists(), what="the run")
    watch = cli("status", "w1", "--watch", timeout=60)
    assert run.wait(timeout=30) == 0
    assert watch.returncode == 0
    lines = watch.stdout.splitlines()
    assert all(ISO.match(line) for line in lines), lines
    assert any(line.endswith("w1 b: running -> succeeded") for line in lines), lines
    assert lines[-1].endswith("w1 succeeded: 2 succeeded")
    assert "\x1b[" not in watch.stdout  # no redraws in a log file


def test_status_says_when_a_task_in_backoff_retries(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # the table's rows on one line each
    cli.write(
        "wf.yaml",
        """
name: slowretry
tasks:
  - {id: flaky, command: 'exit 1', retry: [{error_equals: [States.ALL], interval_seconds: 60}]}
""",
    )
    cli.start("run", "wf.yaml", "--name", "b1", "-q")
    wait_for(lambda: (cli.data_dir / "b1" / "tasks").exists(), what="the run")
    wait_for(lambda: cli.status("b1")["tasks"]["flaky"]["state"] == "backoff", what="backoff")
    task = cli.status("b1")["tasks"]["flaky"]
    ended = task["attempts"][0]["ended"]
    assert task["retry_at"] == pytest.approx(ended + 60, abs=1)
    human = cli("status", "b1").stdout
    when = datetime.fromtimestamp(task["retry_at"]).strftime("%H:%M:%S")
    (row,) = [line for line in human.splitlines() if "flaky" in line]
    assert f"retries at {when} (in " in row
    assert cli("cancel", "b1").returncode == 1


def test_run_ends_saying_where_results_and_logs_are(cli: Cli) -> None:
    cli.write("wf.yaml", TWO)
    proc = cli("run", "wf.yaml", "--name", "e1")
    assert proc.returncode == 0
    assert f"results: {cli.data_dir / 'e1' / 'data'}" in proc.stdout
    assert "stormproof logs e1 TASK" in proc.stdout and str(cli.data_dir / "e1" / "tasks") in (
        proc.stdout
    )


def test_clean_deletes_old_runs_keeps_the_newest_and_never_a_running_one(cli: Cli) -> None:
    cli.write("wf.yaml", TWO)
    for name in ("c1", "c2", "c3"):
        assert cli("run", "wf.yaml", "--name", name, "-q").returncode == 0
    cli.write("long.yaml", "name: long\ntasks:\n  - {id: nap, command: [sleep, '30']}\n")
    cli.start("run", "long.yaml", "--name", "live", "-q")
    wait_for(lambda: (cli.data_dir / "live" / "tasks" / "nap").exists(), what="the long run")

    dry = cli("clean", "--keep-last", "2", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would delete c2" in dry.stdout and "would delete c1" in dry.stdout
    assert (cli.data_dir / "c1").exists()
    assert "would" not in cli("clean", "--older-than", "1h").stdout  # nothing is that old

    refused = cli("clean", "live")
    assert refused.returncode == 2 and "live: it is running" in refused.stderr
    gone = cli("clean", "--older-than", "0s", "--keep-last", "1")
    assert gone.returncode == 0, gone.stderr
    assert "keeping live: it is running" not in gone.stdout  # the newest: kept by --keep-last
    assert not (cli.data_dir / "c1").exists() and not (cli.data_dir / "c3").exists()
    listed = {r["name"] for r in json.loads(cli("status", "--json").stdout)}
    assert listed == {"live"}
    busy = cli("clean", "--older-than", "0s")
    assert "keeping live: it is running" in busy.stdout
    assert (cli.data_dir / "live").exists()
    assert cli("cancel", "live").returncode == 1
