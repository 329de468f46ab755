"""Successors through the real CLI, shim and log: SIGTERM mid-run, resume, each task once."""

from __future__ import annotations

import json
import signal

from stormproof.executors._files import Layout, read_journal
from tests.cli.conftest import Cli, wait_for

CHAINS, LENGTH = 6, 5


def chains_workflow() -> str:
    """Six independent chains on two slots: four ready tasks wait, so successors queue."""
    lines = ["name: chains", "tasks:"]
    for c in range(CHAINS):
        for k in range(LENGTH):
            tid = f"c{c}-{k}"
            deps = [f"c{c}-{k - 1}"] if k else []
            cmd = f'sleep 0.3; echo {tid} >> "$STORMPROOF_DATA_DIR/effects"'
            lines.append(
                f"  - {{id: {tid}, command: '{cmd}', vcpus: 1, depends_on: {json.dumps(deps)}}}"
            )
    return "\n".join(lines) + "\n"


def effects(cli: Cli, run: str) -> list[str]:
    path = cli.data_dir / run / "data" / "effects"
    return path.read_text().split() if path.exists() else []


def test_sigterm_then_resume_with_successors_runs_every_task_once(cli: Cli) -> None:
    cli.write(
        "stormproof.yaml", "pools:\n  - {name: local, market: on_demand, vcpus: 2, memory: 4096}\n"
    )
    cli.write("wf.yaml", chains_workflow())
    proc = cli.start("run", "wf.yaml", "--name", "s1")
    wait_for(lambda: len(effects(cli, "s1")) >= 6, what="a few tasks")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 130
    assert cli.status("s1")["state"] == "stopped"
    resumed = cli("resume", "s1", timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    done = effects(cli, "s1")
    every = [f"c{c}-{k}" for c in range(CHAINS) for k in range(LENGTH)]
    assert sorted(done) == sorted(every)  # each task's command ran exactly once
    history = json.loads(cli("history", "s1", "--json").stdout)
    launches = [r["data"] for r in history if r["kind"] == "LaunchAttempt"]
    assert any(d["after"] for d in launches), "no successor was ever queued"
    ended = {
        r["data"]["attempt_id"]: r["data"]["state"] for r in history if r["kind"] == "AttemptEnded"
    }
    tasks_ended = [r["data"]["task_id"] for r in history if r["kind"] == "TaskEnded"]
    assert sorted(tasks_ended) == sorted(every)  # every task ends once
    st = cli.status("s1")
    assert st["state"] == "succeeded"
    journal = read_journal(Layout.for_run(cli.data_dir / "s1").journal)
    for task, view in st["tasks"].items():
        ran = [a for a in view["attempts"] if a["state"] != "dropped"]
        assert len(ran) == 1, f"{task}: {view['attempts']}"
        assert journal[f"{task}/{ran[0]['number']}"].status is not None
        for a in view["attempts"]:
            if a["state"] == "dropped":  # never started: no exit status anywhere
                assert ended[f"{task}/{a['number']}"] == "dropped"
                record = journal.get(f"{task}/{a['number']}")
                assert record is None or record.status is None
