"""The Dask executor against a real scheduler and real workers (no driver, no core).

Each test starts its own cluster: a scheduler, ``spot-1`` (``pool-spot``) and ``ondemand-1``
(``pool-ondemand``), 2 vCPUs and 2 threads each.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from stormproof.checkpoints import protocol
from stormproof.core.events import (
    AttemptExited,
    AttemptLost,
    AttemptPreempted,
    AttemptStarted,
    AttemptSubmitFailed,
)
from stormproof.executors.base import AttemptJob
from stormproof.executors.dask import DaskExecutor
from stormproof.executors.dask.status import read_status
from tests.executors.dask._cluster import SPOT, DaskCluster
from tests.executors.dask.helpers import (
    NOTICE_S,
    collect,
    executor,
    finals,
    job,
    options,
    pid_alive,
    run_to_end,
    started,
    wait_for,
)

#: Writes its pid, then waits; on SIGTERM commits a checkpoint and exits 143.
CHECKPOINTER = r"""
import os, signal, sys, time
def stop(signum, frame):
    d = os.environ["STORMPROOF_CHECKPOINT_DIR"]
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "state"), "w") as f:
        f.write("step 7\n")
    open(os.path.join(d, ".commit"), "w").close()
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
open("pid", "w").write(str(os.getpid()))
time.sleep(120)
"""


def test_an_attempt_runs_in_its_work_dir_with_its_environment_and_logs(
    dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    a = job(run_dir, "a", ["sh", "-c", 'pwd; echo "$GREETING"; echo oops >&2; exit 3'],
            env={"GREETING": "hi"})  # fmt: skip
    b = job(run_dir, "b", "echo from a shell string", pool="ondemand")
    c = job(run_dir, "c", ["no-such-command-anywhere"])
    with executor(run_dir, options(dask_cluster)) as ex:
        events = run_to_end(ex, [a, b, c])
    ends = finals(events)
    assert isinstance(ends["a/1"], AttemptExited) and ends["a/1"].exit_code == 3
    assert (a.attempt_dir / "stdout.log").read_text() == f"{a.work_dir}\nhi\n"
    assert (a.attempt_dir / "stderr.log").read_text() == "oops\n"
    assert isinstance(ends["b/1"], AttemptExited) and ends["b/1"].exit_code == 0
    assert (b.attempt_dir / "stdout.log").read_text() == "from a shell string\n"
    assert isinstance(ends["c/1"], AttemptExited) and ends["c/1"].exit_code == 127
    assert "no-such-command-anywhere" in (c.attempt_dir / "stderr.log").read_text()
    starts = started(events)
    assert starts["a/1"].nodes == ("spot-1",) and starts["b/1"].nodes == ("ondemand-1",)
    # every start comes before its end, and the status file says the same as the event
    order = [(type(e).__name__, e.attempt_id) for e in events]
    assert order.index(("AttemptStarted", "a/1")) < order.index(("AttemptExited", "a/1"))
    status = read_status(str(a.attempt_dir))
    assert status is not None and (status.code, status.node) == (3, "spot-1")


#: Holds 400 MiB resident (more than a Dask worker's own peak), then spends 0.3 s of CPU.
HUNGRY = """
import time
block = b"x" * (400 << 20)
start = time.process_time()
while time.process_time() - start < 0.3:
    pass
"""
#: Holds some 60 MiB resident (50 MiB, and the interpreter).
MODEST = "block = b'x' * (50 << 20)"
#: Starts a worker from a process that peaked at 600 MiB: the worker's own ``ru_maxrss``
#: carries that across its exec (as under a large launcher, or a long pytest session).
BIG_PARENT = (
    "import os, sys; block = b'x' * (600 << 20); del block; "
    "os.execv(sys.executable, [sys.executable, '-m', 'distributed.cli.dask_worker', "
    "*sys.argv[1:]])"
)


def test_an_attempt_reports_its_cpu_time_and_its_peak_memory_above_the_workers(
    dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    marked = {"vcpus": 2, "memory": 2048, "pool-big": 1}
    dask_cluster.start_worker("big-1", marked, argv=[sys.executable, "-c", BIG_PARENT])
    opts = options(dask_cluster)
    opts["pools"]["big"] = {"resource": "pool-big"}
    run_dir = tmp_path / "run"
    hungry = job(run_dir, "hungry", [sys.executable, "-c", HUNGRY], pool="big")
    small = job(run_dir, "small", ["true"], pool="big")
    modest = job(run_dir, "modest", [sys.executable, "-c", MODEST], pool="big")
    with executor(run_dir, opts) as ex:
        ends = finals(run_to_end(ex, [hungry, small, modest]))
    big, tiny = ends["hungry/1"], ends["small/1"]
    assert isinstance(big, AttemptExited) and big.exit_code == 0
    assert big.cpu_s is not None and big.cpu_s >= 0.3
    assert big.max_rss_mib is not None and 400 <= big.max_rss_mib < 600
    # `true` peaks below its worker: its ru_maxrss is the worker's (inherited at the fork),
    # so its own peak is unknown and not reported as the worker's
    assert isinstance(tiny, AttemptExited) and tiny.exit_code == 0
    assert tiny.cpu_s is not None and tiny.cpu_s < 0.3
    assert tiny.max_rss_mib is None
    # ~60 MiB: less than a Dask worker's own peak, more than the spawner's it was forked from
    assert isinstance(ends["modest/1"], AttemptExited)
    modest_mib = ends["modest/1"].max_rss_mib
    assert modest_mib is not None and 50 <= modest_mib < 100
    status = read_status(str(hungry.attempt_dir))
    assert status is not None and status.max_rss_mib == big.max_rss_mib


def test_a_two_vcpu_attempt_never_shares_a_two_vcpu_worker(
    dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    span = ["sh", "-c", "date +%s.%N > start; sleep 0.6; date +%s.%N > end"]
    wide = [job(run_dir, f"wide{i}", span, vcpus=2.0, memory_mib=512) for i in range(3)]
    narrow = [job(run_dir, f"narrow{i}", span, vcpus=1.0, memory_mib=512) for i in range(2)]
    with executor(run_dir, options(dask_cluster)) as ex:
        events = run_to_end(ex, wide)
        events += run_to_end(ex, narrow)
    assert all(isinstance(e, AttemptExited) and e.exit_code == 0 for e in finals(events).values())

    def interval(j: object) -> tuple[float, float]:
        work = j.work_dir  # type: ignore[attr-defined]
        return float((work / "start").read_text()), float((work / "end").read_text())

    spans = sorted(interval(j) for j in wide)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, f"two 2-vCPU attempts overlapped on one 2-vCPU worker: {spans}"
    (s1, e1), (s2, e2) = (interval(j) for j in narrow)
    assert s2 < e1 and s1 < e2, "two 1-vCPU attempts should have shared the worker"


def test_a_gpu_attempt_runs_only_where_a_gpu_is_free(
    dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    dask_cluster.start_worker("gpu-1", {**SPOT, "gpus": 1})
    run_dir = tmp_path / "run"
    span = ["sh", "-c", "date +%s.%N > start; sleep 0.5; date +%s.%N > end"]
    jobs = [job(run_dir, f"g{i}", span, vcpus=1.0, memory_mib=256, gpus=1) for i in range(2)]
    with executor(run_dir, options(dask_cluster)) as ex:
        events = run_to_end(ex, jobs)
    assert {e.nodes for e in started(events).values()} == {("gpu-1",)}

    def interval(j: object) -> tuple[float, float]:
        work = j.work_dir  # type: ignore[attr-defined]
        return float((work / "start").read_text()), float((work / "end").read_text())

    (_, first_end), (second_start, _) = sorted(interval(j) for j in jobs)
    assert second_start >= first_end, (
        "two 1-GPU attempts shared a worker with one GPU (it has vCPUs for both)"
    )


def test_a_worker_killed_under_its_attempt_loses_it_and_the_command_dies_with_it(
    dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    j = job(run_dir, "long", ["sh", "-c", "echo $$ > pid; sleep 1 & wait; exec sleep 120"])
    with executor(run_dir, options(dask_cluster)) as ex:
        ex.submit(j)
        collect(ex, lambda evs: "long/1" in started(evs))
        pid_file = j.work_dir / "pid"
        wait_for(pid_file.exists, what="the command's pid")
        pid = int(pid_file.read_text())
        dask_cluster.kill_worker("spot-1")
        events = collect(ex, lambda evs: "long/1" in finals(evs))
    lost = finals(events)["long/1"]
    assert isinstance(lost, AttemptLost), lost
    assert "spot-1" in lost.reason and "without being retired" in lost.reason
    wait_for(lambda: not pid_alive(pid), timeout_s=10, what="the command to die with its worker")
    assert read_status(str(j.attempt_dir)) is None


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return int(stat[stat.rfind(b")") + 2 :].split()[1])


def test_kill_9_of_the_spawner_kills_its_attempt_reports_it_lost_and_the_next_gets_a_new_one(
    dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    j = job(run_dir, "long", ["sh", "-c", "echo $$ > pid; sleep 1 & wait; exec sleep 120"])
    after = job(run_dir, "after", ["sh", "-c", "echo $PPID > parent"])
    with executor(run_dir, options(dask_cluster)) as ex:
        ex.submit(j)
        collect(ex, lambda evs: "long/1" in started(evs))
        pid_file = j.work_dir / "pid"
        wait_for(pid_file.exists, what="the command's pid")
        pid = int(pid_file.read_text())
        spawner = parent_of(pid)  # the worker's spawner started it
        os.kill(spawner, signal.SIGKILL)
        events = collect(ex, lambda evs: "long/1" in finals(evs))
        lost = finals(events)["long/1"]
        assert isinstance(lost, AttemptLost), lost
        assert "spawner" in lost.reason and "spot-1" in lost.reason
        wait_for(lambda: not pid_alive(pid), timeout_s=10, what="the command to be killed")
        ends = finals(run_to_end(ex, [after]))  # the worker starts a new spawner
    assert isinstance(ends["after/1"], AttemptExited) and ends["after/1"].exit_code == 0
    new = int((after.work_dir / "parent").read_text())
    assert new != spawner and not pid_alive(spawner)


def test_a_retired_worker_gives_its_attempt_the_notice_to_checkpoint_then_it_is_preempted(
    dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    ckpt = run_dir / "tasks" / "sim" / "1" / "checkpoint"
    j = job(run_dir, "sim", ["python3", "-c", CHECKPOINTER],
            env={protocol.ENV_CHECKPOINT_DIR: str(ckpt)})  # fmt: skip
    with executor(run_dir, options(dask_cluster)) as ex:
        ex.submit(j)
        collect(ex, lambda evs: "sim/1" in started(evs))
        wait_for((j.work_dir / "pid").exists, what="the command's start")
        asked = time.monotonic()
        dask_cluster.retire("spot-1")  # what a deployment does on a preemption notice
        events = collect(ex, lambda evs: "sim/1" in finals(evs))
        took = time.monotonic() - asked
    end = finals(events)["sim/1"]
    assert isinstance(end, AttemptPreempted), end
    assert "retired" in end.reason and "spot-1" in end.reason
    assert (ckpt / "state").read_text() == "step 7\n" and (ckpt / protocol.COMMIT).exists()
    assert took < NOTICE_S, "the attempt's end is known once its command stopped"
    status = read_status(str(j.attempt_dir))
    assert status is not None and (status.verdict, status.code) == ("retired", 143)


def test_a_kill_sends_sigterm_then_sigkill_after_the_grace(
    dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    polite = job(run_dir, "polite", ["sh", "-c", "trap 'exit 7' TERM; sleep 60 & wait"])
    stubborn = job(run_dir, "stubborn", ["sh", "-c", "trap '' TERM; sleep 60 & wait; sleep 60"])
    with executor(run_dir, options(dask_cluster)) as ex:
        for j in (polite, stubborn):
            ex.submit(j)
        collect(ex, lambda evs: {"polite/1", "stubborn/1"} <= started(evs).keys())
        time.sleep(0.3)  # the traps are set
        asked = time.monotonic()
        ex.kill("polite/1", 30.0)
        ex.kill("stubborn/1", 1.0)
        events = collect(ex, lambda evs: {"polite/1", "stubborn/1"} <= finals(evs).keys())
        took = time.monotonic() - asked
    ends = finals(events)
    assert isinstance(ends["polite/1"], AttemptExited) and ends["polite/1"].exit_code == 7
    assert isinstance(ends["stubborn/1"], AttemptExited) and ends["stubborn/1"].exit_code == 137
    assert 1.0 <= took < 10.0


def test_an_attempt_over_its_memory_limit_is_killed_out_of_memory(
    dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    hog = "x = bytearray(400 << 20); import time; time.sleep(30)"
    j = job(run_dir, "hog", ["python3", "-c", hog], memory_mib=100,
            env={"STORMPROOF_MEMORY_LIMIT_MIB": "100"})  # fmt: skip
    with executor(run_dir, options(dask_cluster)) as ex:
        events = run_to_end(ex, [j])
    end = finals(events)["hog/1"]
    assert isinstance(end, AttemptExited) and (end.exit_code, end.out_of_memory) == (137, True)
    assert "over its limit of 100 MiB" in (j.attempt_dir / "stderr.log").read_text()


def test_an_attempt_outlives_its_orchestrator_and_the_next_one_adopts_it_by_key(
    dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    """The first executor's client goes without a word (as with kill -9); its attempts run on
    (fire_and_forget), and the next executor adopts the running one and settles the one that
    ended meanwhile from its status file; neither command runs a second time."""
    run_dir = tmp_path / "run"
    count = "echo ran >> {0}; sleep {1}"
    short = job(run_dir, "short", ["sh", "-c", count.format(tmp_path / "short.count", 0.5)])
    long = job(run_dir, "long", ["sh", "-c", count.format(tmp_path / "long.count", 4)])
    opts = options(dask_cluster)
    with executor(run_dir, opts) as first:
        first.submit(short)
        first.submit(long)
        collect(first, lambda evs: {"short/1", "long/1"} <= started(evs).keys())
        assert first._conn is not None
        first._conn.client.close()  # gone: no cancel, no goodbye
        first._conn = None
    wait_for(lambda: read_status(str(short.attempt_dir)) is not None, what="short's end")
    with executor(run_dir, opts) as second:
        recovered = second.recover([short, long])
        assert isinstance(finals(recovered).get("short/1"), AttemptExited)
        adopted = started(recovered)["long/1"]
        assert isinstance(adopted, AttemptStarted) and adopted.nodes == ("spot-1",)
        for j in (short, long):
            second.submit(j)  # the runtime may submit again: a no-op
        events = collect(second, lambda evs: "long/1" in finals(evs), timeout_s=30)
    end = finals(events)["long/1"]
    assert isinstance(end, AttemptExited) and end.exit_code == 0
    assert (tmp_path / "short.count").read_text() == "ran\n"
    assert (tmp_path / "long.count").read_text() == "ran\n"


def test_a_key_that_dask_runs_again_never_runs_its_command_twice(
    dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    """Dask forgot the finished task; an executor that knows nothing submits the key again:
    the wrapper finds the attempt's claim, runs nothing, and the status file settles it."""
    run_dir = tmp_path / "run"
    once = job(run_dir, "once", ["sh", "-c", f"echo ran >> {tmp_path / 'count'}; exit 4"])
    with executor(run_dir, options(dask_cluster)) as first:
        run_to_end(first, [once])
    with executor(run_dir, options(dask_cluster)) as second:
        events = run_to_end(second, [once])
    end = finals(events)["once/1"]
    assert isinstance(end, AttemptExited) and end.exit_code == 4
    assert (tmp_path / "count").read_text() == "ran\n"
    claim = json.loads((once.attempt_dir / "dask.attempt").read_text().splitlines()[0])
    assert claim["node"] == "spot-1"


def test_a_pool_runs_only_on_workers_that_carry_its_marker(
    dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    dask_cluster.start_worker("spot-2", SPOT)
    run_dir = tmp_path / "run"
    jobs = [job(run_dir, f"s{i}", ["sleep", "0.3"], vcpus=2.0) for i in range(4)]
    jobs += [job(run_dir, f"o{i}", ["sleep", "0.3"], pool="ondemand", vcpus=2.0) for i in range(2)]
    with executor(run_dir, options(dask_cluster)) as ex:
        events = run_to_end(ex, jobs)
    nodes = {aid: e.nodes for aid, e in started(events).items()}
    assert {nodes[f"s{i}/1"][0] for i in range(4)} <= {"spot-1", "spot-2"}
    assert {nodes[f"o{i}/1"] for i in range(2)} == {("ondemand-1",)}


def test_a_pool_marked_by_a_name_prefix_takes_its_workers_also_those_that_join_later(
    dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    plain = {"vcpus": 2, "memory": 2048}  # no pool marker: only their names say the pool
    dask_cluster.start_worker("edge-1", plain)
    opts = options(dask_cluster)
    opts["pools"]["edge"] = {"resource": "pool-edge", "name_prefix": "edge-"}
    run_dir = tmp_path / "run"
    with executor(run_dir, opts) as ex:
        first = run_to_end(ex, [job(run_dir, "a", ["true"], pool="edge")])
        dask_cluster.retire("edge-1")
        waiting = [job(run_dir, f"b{i}", ["true"], pool="edge") for i in range(3)]
        for j in waiting:
            ex.submit(j)
        early = ex.poll(1.0)  # sent, and no worker of the pool to take them
        dask_cluster.start_worker("edge-2", plain)  # joins while they wait
        ids = {j.attempt_id for j in waiting}
        later = collect(ex, lambda evs: ids <= finals(evs).keys(), timeout_s=30)
    assert started(first)["a/1"].nodes == ("edge-1",)
    assert early == []
    assert {e.nodes for e in started(later).values()} == {("edge-2",)}
    assert all(isinstance(e, AttemptExited) and e.exit_code == 0 for e in finals(later).values())
    info = dask_cluster.client.scheduler_info(n_workers=-1)["workers"].values()
    marked = {str(w["name"]) for w in info if "pool-edge" in w["resources"]}
    assert marked == {"edge-2"}  # the others (spot-1, ondemand-1) never got the marker


def test_the_orchestrator_makes_the_attempts_files_before_a_worker_takes_it(
    dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    opts = options(dask_cluster)
    opts["pools"]["later"] = {"resource": "pool-later", "vcpus": 2, "memory": 2048}
    run_dir = tmp_path / "run"
    waiting = job(run_dir, "waiting", ["true"], pool="later")  # no worker has the marker
    blocked = job(run_dir, "blocked", ["true"])
    (run_dir / "tasks").mkdir(parents=True)
    (run_dir / "tasks" / "blocked").write_text("a file where the task's directory goes")
    with executor(run_dir, opts) as ex:
        ex.submit(waiting)
        ex.submit(blocked)
        events = ex.poll(1.0)
        assert (waiting.attempt_dir / "work").is_dir()
        assert (waiting.attempt_dir / "stdout.log").exists()
        assert (waiting.attempt_dir / "stderr.log").exists()
        assert not (waiting.attempt_dir / "dask.attempt").exists()  # nothing claimed it
    failed = finals(events)["blocked/1"]
    assert isinstance(failed, AttemptSubmitFailed), failed
    assert "cannot create the attempt's directory" in failed.message


def test_ends_that_come_within_the_gathering_time_are_given_in_one_poll(tmp_path: Path) -> None:
    """No cluster: the worker events are put where the client's thread puts them."""
    ex = DaskExecutor(tmp_path / "run", {"scheduler": "tcp://127.0.0.1:9"})
    first, second = (job(tmp_path / "run", name, ["true"]) for name in ("first", "second"))
    for j in (first, second):
        ex._track(j)

    def end(j: AttemptJob) -> tuple[str, dict[str, object]]:
        status = {"code": 0, "verdict": "exited", "worker": "w", "node": "n", "at": 1.0}
        return "run", {"e": "X", "key": ex._key(j.attempt_id), "started_at": 1.0, **status}

    def report() -> None:
        ex._inbox.put(end(first))
        time.sleep(0.005)  # the second end comes a moment later, well within the 20 ms
        ex._inbox.put(end(second))

    reporter = threading.Thread(target=report)
    reporter.start()
    events = ex.poll(5.0)
    reporter.join()
    assert set(finals(events)) == {"first/1", "second/1"}
    assert ex.poll(0.0) == []
