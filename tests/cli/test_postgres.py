"""Real runs on the PostgreSQL event store, through the real CLI, against a real server.

A run reused from by ``run --reuse`` and deleted by ``clean``; two real orchestrator
processes on one run (one killed with -9, or stopped with
SIGSTOP until the other took its lease over), the server stopped in the middle of
a run and started again, and the errors a user meets (server down, wrong
password, no such database) as one clear line and exit 2.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from stormproof.errors import ConfigError
from tests.store._postgres import (
    PASSWORD_USER,
    PostgresServer,
    free_port,
    fresh_schema,
    start_server,
)

from .conftest import Cli, read_line, wait_for
from .test_rerun_real import plan_json, reuse_workflow

pytestmark = pytest.mark.slow

#: A chain of ``n`` tasks, each leaving its id in the run's data dir (its side effect).
CHAIN = """
name: chain
tasks:
{tasks}
"""


def chain(n: int, sleep_s: float) -> str:
    lines = []
    for i in range(n):
        cmd = f'sleep {sleep_s}; echo t{i} >> "$STORMPROOF_DATA_DIR/effects"'
        deps = [f"t{i - 1}"] if i else []
        lines.append(f"  - {{id: t{i}, command: '{cmd}', depends_on: {json.dumps(deps)}}}")
    return CHAIN.format(tasks="\n".join(lines))


def effects(cli: Cli, run: str) -> list[str]:
    path = cli.data_dir / run / "data" / "effects"
    return path.read_text().split() if path.exists() else []


def each_once(cli: Cli, run: str, n: int) -> None:
    """Every task's side effect happened exactly once, and each task has one attempt."""
    assert Counter(effects(cli, run)) == Counter(f"t{i}" for i in range(n))
    status = cli.status(run)
    assert status["state"] == "succeeded"
    assert [len(t["attempts"]) for t in status["tasks"].values()] == [1] * n


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = start_server()
    try:
        yield server
    finally:
        server.remove()


def use_store(cli: Cli, url: str, lease: str = "2s") -> None:
    cli.write("stormproof.yaml", f"store: {url}\nlease: {lease}\n")


@pytest.fixture
def pg_cli(cli: Cli, postgres: PostgresServer) -> Cli:
    """``cli`` with ``store:`` pointing at a fresh schema of the module's server."""
    use_store(cli, postgres.url(fresh_schema(postgres)))
    return cli


def test_a_run_is_stored_in_postgresql_and_read_back(pg_cli: Cli) -> None:
    pg_cli.write("wf.yaml", chain(3, 0.1))
    proc = pg_cli("run", "wf.yaml", "--name", "p1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    each_once(pg_cli, "p1", 3)
    assert not (pg_cli.cwd / ".stormproof" / "stormproof.db").exists()
    listing = pg_cli("status")
    assert "runs in postgresql://postgres@127.0.0.1:" in listing.stdout
    rows = json.loads(pg_cli("history", "p1", "--json").stdout)
    kinds = [r["kind"] for r in rows]
    assert kinds[0] == "RunStarted" and kinds.count("LaunchAttempt") == 3
    # the driver left the run's view in the server: status reads a page of it
    from stormproof.store.postgres import PostgresEventLog

    url = (pg_cli.cwd / "stormproof.yaml").read_text().split("store: ", 1)[1].split("\n")[0]
    with PostgresEventLog(url) as log:
        stored = log.load_view("p1", limit=0)
    assert stored is not None and stored.upto_seq == rows[-1]["seq"]
    page = json.loads(
        pg_cli("status", "p1", "--state", "succeeded", "--limit", "1", "--json").stdout
    )
    assert list(page["tasks"]) == ["t0"] and page["page"]["total"] == 3
    assert page["counts"] == {"succeeded": 3}


def test_a_second_orchestrator_waits_then_takes_over_from_one_killed_with_9(pg_cli: Cli) -> None:
    """The lease test of issue 14: two real orchestrators on one run, the first killed."""
    n = 6
    pg_cli.write("wf.yaml", chain(n, 0.6))
    first = pg_cli.start("run", "wf.yaml", "--name", "k1")
    wait_for(lambda: len(effects(pg_cli, "k1")) >= 1, what="the first task")
    second = pg_cli.start("resume", "k1")
    said = read_line(second.stderr)
    assert said.startswith(f"run k1 is being driven by pid {first.pid} (its lease lapses in ")
    assert said.endswith(" s unless renewed); waiting to take it over (Ctrl-C to leave)…")
    done_before = len(effects(pg_cli, "k1"))
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    assert second.wait(timeout=60) == 0, second.communicate()
    assert done_before < n, "the first orchestrator should not have finished the run"
    each_once(pg_cli, "k1", n)
    kinds = [r["kind"] for r in json.loads(pg_cli("history", "k1", "--json").stdout)]
    assert kinds.count("RunResumed") == 1


def test_an_orchestrator_whose_lease_was_taken_over_stops_without_acting(pg_cli: Cli) -> None:
    """SIGSTOP the first orchestrator past its lease: the second takes the run over; woken,
    the first learns it at its next flush or renewal and stops, carrying out nothing."""
    n = 6
    pg_cli.write("wf.yaml", chain(n, 0.6))
    first = pg_cli.start("run", "wf.yaml", "--name", "s1")
    wait_for(lambda: len(effects(pg_cli, "s1")) >= 1, what="the first task")
    second = pg_cli.start("resume", "s1")
    assert "waiting to take it over" in read_line(second.stderr)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        history = lambda: json.loads(pg_cli("history", "s1", "--json").stdout)  # noqa: E731
        wait_for(lambda: any(r["kind"] == "RunResumed" for r in history()), what="the takeover")
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait(timeout=30) == 2
    _, stderr = first.communicate()
    assert "run 's1' was taken over by another orchestrator" in stderr
    assert "this one stops now and acts on nothing more" in stderr
    assert "Traceback" not in stderr
    assert second.wait(timeout=60) == 0, second.communicate()
    each_once(pg_cli, "s1", n)


def test_run_reuse_finds_earlier_results_in_postgresql_and_clean_forgets_them(
    pg_cli: Cli,
) -> None:
    wf = reuse_workflow(pg_cli)
    assert pg_cli("run", "wf.yaml", "--name", "r0", "-q").returncode == 0
    wf.write_text(wf.read_text().replace("cat p", "cat  p"))  # sim's command changes
    proc = pg_cli("run", "wf.yaml", "--reuse", "--name", "r1", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(effects(pg_cli, "r1")) == ["note", "plot", "sim"]  # prep, side reused
    cleaned = pg_cli("clean", "r0")
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    plan = plan_json(pg_cli, "run", "wf.yaml", "--reuse")
    assert {t["task"]: t["from_run"] for t in plan["tasks"] if t["verdict"] == "reused"} == {
        "prep": "r1", "sim": "r1", "plot": "r1", "side": "r1"
    }  # fmt: skip


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server of this test's own, to stop and start again."""
    server = start_server()
    try:
        yield server
    finally:
        server.remove()


def test_the_server_gone_mid_run_stops_it_resumably_and_resume_carries_on(
    cli: Cli, own_server: PostgresServer
) -> None:
    n = 5
    use_store(cli, own_server.url())
    cli.write("wf.yaml", chain(n, 0.5))
    run = cli.start("run", "wf.yaml", "--name", "g1")
    wait_for(lambda: len(effects(cli, "g1")) >= 1, what="the first task")
    own_server.stop()
    assert run.wait(timeout=30) == 130
    _, stderr = run.communicate()
    assert "run g1 stopped: lost the connection to PostgreSQL at postgresql://postgres@" in stderr
    assert "stormproof resume g1" in stderr
    assert "Traceback" not in stderr
    down = cli("resume", "g1")
    assert down.returncode == 2
    assert down.stderr.startswith("error: cannot reach PostgreSQL at postgresql://postgres@")
    assert "start the server" in down.stderr and "Traceback" not in down.stderr
    own_server.start()
    back = cli("resume", "g1", timeout=120)
    assert back.returncode == 0, back.stdout + back.stderr
    each_once(cli, "g1", n)


def test_what_a_user_can_get_wrong_is_one_clear_line(cli: Cli, postgres: PostgresServer) -> None:
    postgres.execute(f"DROP ROLE IF EXISTS {PASSWORD_USER}")
    postgres.execute(f"CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD 'right-password'")
    port, closed = postgres.port, free_port()
    cases = {
        f"postgresql://postgres@127.0.0.1:{closed}/postgres": (
            f"cannot reach PostgreSQL at postgresql://postgres@127.0.0.1:{closed}/postgres "
            "(Connection refused)"
        ),
        f"postgresql://postgres@127.0.0.1:{port}/no_such_db": (
            'database "no_such_db" does not exist; create it'
        ),
        f"postgresql://{PASSWORD_USER}:wrong-password@127.0.0.1:{port}/postgres": (
            "refused the login: password authentication failed for user"
        ),
        f"postgresql://nobody@127.0.0.1:{port}/postgres": 'role "nobody" does not exist',
        "postgresql://postgres@127.0.0.1:notaport/db": "is not a PostgreSQL URL",
    }
    for url, expected in cases.items():
        cli.write("stormproof.yaml", f"store: {url}\n")
        proc = cli("status")
        assert proc.returncode == 2, (url, proc.stdout, proc.stderr)
        assert expected in proc.stderr, (url, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert "wrong-password" not in proc.stderr


def test_a_postgresql_store_without_psycopg_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stormproof.cli.session import Session

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "stormproof.store.postgres", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STORMPROOF_STORE", "postgresql://db.example.org/sp")
    session = Session.open(None, None)
    with pytest.raises(ConfigError) as caught:
        session.store  # noqa: B018 - opening it is the point
    assert str(caught.value) == (
        "store 'postgresql' needs the Python package 'psycopg', which is not installed: "
        "pip install 'stormproof[postgres]'"
    )


def test_cancel_of_a_run_whose_orchestrator_died_cancels_it_once_the_lease_lapses(
    pg_cli: Cli,
) -> None:
    pg_cli.write("wf.yaml", "name: long\ntasks:\n  - {id: nap, command: [sleep, '60']}\n")
    first = pg_cli.start("run", "wf.yaml", "--name", "c1")
    wait_for(lambda: (pg_cli.data_dir / "c1" / "tasks" / "nap").exists(), what="launch")
    os.kill(first.pid, signal.SIGKILL)  # its lease is still current for up to 2 s
    first.wait(timeout=10)
    cancel = pg_cli("cancel", "c1", timeout=60)
    assert cancel.returncode == 1, cancel.stdout + cancel.stderr
    assert "asked the orchestrator of c1 to cancel" in cancel.stdout
    status = pg_cli.status("c1")
    assert status["state"] == "cancelled"
    assert status["tasks"]["nap"]["attempts"][0]["state"] == "cancelled"


def test_checkpoints_of_a_run_are_looked_for_where_the_run_recorded_them(
    pg_cli: Cli, tmp_path: Path
) -> None:
    from stormproof.checkpoints.open import open_checkpoint_store
    from stormproof.store.postgres import PostgresEventLog

    recorded = tmp_path / "elsewhere"
    source = tmp_path / "src"
    source.mkdir()
    (source / "state.txt").write_text("step 7\n")
    open_checkpoint_store(str(recorded), tmp_path).save("cp1", "sim", 1, 1, source, 1.0)
    url = (pg_cli.cwd / "stormproof.yaml").read_text().split()[1]
    with PostgresEventLog(url) as store:
        store.create_run("cp1", "wf", {"checkpoints": {"warm": str(recorded)}}, 1.0)
    listed = pg_cli("checkpoints", "list", "cp1", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(c["task"], c["seq"]) for c in json.loads(listed.stdout)] == [("sim", 1)]
