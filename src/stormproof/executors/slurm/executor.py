"""``executor: slurm``: every attempt is one Slurm batch job, named by its attempt id.

How it keeps its promises (``docs/slurm.md`` is the user's side):

* **Submit in parallel, return at once.** ``submit`` hands the attempt to a small pool of
  threads that make its directory, write its script (``script``) and call ``sbatch``; up to
  ``submit_parallel`` calls are in flight, so a 10,000-task fan-out is not 10,000 forks in a
  row, and the driver's loop never waits on slurmctld.
* **Learn from the shared filesystem first.** Each job's script writes ``<name>.S`` when it
  starts and ``<name>.X`` (its exit code) when the command ends, in the run's status
  directory; one listing per poll (skipped while the directory is unchanged) reports starts
  and successes without a call to slurmctld.
* **One ``squeue`` per poll cycle, for all of the run's jobs**, filtered by the run's
  ``--comment``, at an interval that starts at ``poll_interval``, grows by half each quiet
  cycle up to ``max_poll_interval``, and drops back when something happened that only Slurm
  could tell (a job gone without a status, a preemption) or while an answer is awaited (a
  non-zero status to classify, a kill). ``sacct`` only for jobs ``squeue`` no longer shows,
  in one call per cycle. Kills and signals go out as one ``scancel`` per batch.
* **Slurm never re-runs an attempt**: jobs are ``--no-requeue``; a job requeued anyway is
  cancelled and reported; a second job for one attempt does not run its command (the claim in
  ``script``) and is cancelled when seen. Retries are the core's.
* **Resume**: ``recover`` finds the run's jobs by name in one ``squeue`` call (and by the ids
  it journalled, and the status files, for jobs that ended), adopts those pending or running
  and submits nothing again.

States become events in ``states``; Slurm's commands and their errors live in ``commands``.
"""

from __future__ import annotations

import contextlib
import os
import signal as signals
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from stormproof.core.defs import PoolDef
from stormproof.core.events import AttemptStarted, AttemptSubmitFailed, Event
from stormproof.errors import ConfigError
from stormproof.executors._files import create_attempt
from stormproof.executors.base import AttemptJob, ExecutorUnavailable
from stormproof.executors.slurm import partitions, script, states
from stormproof.executors.slurm.commands import (
    Slurm,
    SlurmError,
    SlurmMissing,
    SlurmRefused,
    SlurmUnreachable,
)
from stormproof.executors.slurm.options import SlurmOptions, run_comment
from stormproof.executors.slurm.states import JobRecord
from stormproof.spec.model import WorkflowSpec

#: How often the status directory is listed even when its mtime says nothing changed (the
#: mtime ticks coarsely, and network filesystems cache it).
RESCAN_S = 1.0
#: Pause between two looks at the status directory while ``poll`` waits.
NAP_S = 0.05
#: An unreachable slurmctld is retried this long before the run stops (resume carries on).
UNREACHABLE_S = 600.0
JOURNAL = "jobs"


@dataclass
class _Attempt:
    job: AttemptJob
    job_id: str | None = None
    submitting: Future[str] | None = None
    started: bool = False
    #: The code in the job's ``.X`` file, once read.
    status: int | None = None
    #: stormproof asked to kill it; ``grace_s`` is kept until the job id is known.
    killed: bool = False
    kill_grace_s: float | None = None
    record: JobRecord | None = None
    ended: bool = False


class SlurmExecutor:
    """See the module docstring. Options: ``SlurmOptions`` (recorded from ``slurm:``)."""

    #: Slurm decides which node runs a job: the core chooses the partition (pool) only.
    delegates_placement: ClassVar[bool] = True

    def __init__(self, run_dir: Path, options: Mapping[str, Any] | None = None) -> None:
        self.options = SlurmOptions.from_dict(options)
        self.run_dir = Path(run_dir).resolve()
        self.state_dir = self.run_dir / "slurm"
        self.status_dir = self.state_dir / "status"
        self.comment = run_comment(self.run_dir)
        self.slurm = Slurm.from_environment(self.options.slurm_conf)
        self._attempts: dict[str, _Attempt] = {}
        self._live: dict[str, _Attempt] = {}  # not ended yet: what polls look at
        self._submitting: dict[str, _Attempt] = {}  # sbatch queued or in flight
        self._hard_kills: dict[str, float] = {}  # attempt id -> when its scancel is due
        self._owners: dict[str, str] = {}  # Slurm job id -> attempt id, for every job we know
        self._events: list[Event] = []
        self._pool: ThreadPoolExecutor | None = None
        #: (signal, to the whole job: --full) -> job ids, sent at the next flush
        self._signals: dict[tuple[int, bool], list[str]] = {}
        self._cancels: list[str] = []
        self._interval = self.options.poll_interval_s
        self._next_query = 0.0
        self._unreachable_since: float | None = None
        self._completion_log: bool | None = None  # sacct -c: no accounting database
        self._dir_mtime = -1
        self._last_scan = 0.0
        self._seen: set[str] = set()

    @classmethod
    def describe_pools(
        cls, pools: tuple[PoolDef, ...], options: Mapping[str, Any]
    ) -> tuple[PoolDef, ...]:
        """The run's pools sized from their partitions, after the checks a run makes before it
        submits anything (``partitions.describe_pools``)."""
        return partitions.describe_pools(pools, options)

    @classmethod
    def check_workflow(
        cls, spec: WorkflowSpec, pools: Sequence[PoolDef], options: Mapping[str, Any]
    ) -> None:
        """Refuse a task no partition it may use can hold, time limits included."""
        partitions.check_workflow(spec, pools, options)

    # ------------------------------------------------------------------ the seam
    def prepare(self) -> None:
        """Make the status directory the jobs write to, and make sure slurmctld answers
        (``scontrol ping`` answers at once): a run or a resume that cannot reach it stops
        here with one line, before its log changes (``resume`` again once it answers)."""
        self.status_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.slurm.ping()
        except SlurmError as err:
            raise ConfigError(f"executor: slurm: {err}") from None

    def submit(self, job: AttemptJob) -> None:
        """Queue the attempt for ``sbatch``; idempotent per attempt id (also after ``recover``)."""
        if job.attempt_id in self._attempts:
            return
        att = _Attempt(job)
        self._track(att)
        att.submitting = self._threads().submit(self._sbatch, job)
        self._submitting[job.attempt_id] = att

    def kill(self, attempt_id: str, grace_s: float) -> None:
        """SIGTERM to the command's step now, ``scancel`` after ``grace_s`` (batched)."""
        att = self._attempts.get(attempt_id)
        if att is None or att.ended:
            return
        att.killed = True
        if att.job_id is None:
            if att.submitting is not None and att.submitting.cancel():
                self._end(att, states.ended(attempt_id, time.time(), None, None, killed=True))
            else:
                att.kill_grace_s = grace_s  # sbatch is in flight: kill once it answers
            return
        self._kill_job(att, grace_s)

    def withdraw(self, attempt_id: str) -> None:
        """Slurm holds no successors for stormproof: nothing to withdraw."""

    def signal(self, attempt_id: str, signum: int) -> None:
        """One signal to the command's step (``scancel --signal``), e.g. a checkpoint request."""
        att = self._attempts.get(attempt_id)
        if att is not None and not att.ended and att.started and att.job_id is not None:
            self._signal_job(att, int(signum))

    def poll(self, timeout_s: float) -> list[Event]:
        """Events that happened, waiting up to ``timeout_s`` for the first one."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            self._collect_submissions()
            self._scan_status()
            now = time.monotonic()
            if now >= self._next_query and self._watching():
                self._query()
            self._flush(time.monotonic())
            now = time.monotonic()
            if self._events or now >= deadline:
                events, self._events = self._events, []
                return events
            time.sleep(min(NAP_S, deadline - now))

    def recover(self, jobs: Sequence[AttemptJob]) -> list[Event]:
        """Adopt the run's jobs still pending or running; report those that ended.

        One ``squeue`` finds them by name (and the run's comment); the journal of job ids and
        the status files cover the jobs ``squeue`` has forgotten (``sacct`` says how those
        ended). A job Slurm never had gets nothing: the runtime submits it, once.
        """
        if not jobs:
            return []
        self.status_dir.mkdir(parents=True, exist_ok=True)
        try:
            records = [r for r in self.slurm.squeue_mine() if r.comment == self.comment]
        except SlurmError as err:  # before the run's log changed: resume again later
            raise ConfigError(f"executor: slurm: {err}") from None
        by_name: dict[str, list[JobRecord]] = {}
        for record in records:
            by_name.setdefault(record.name, []).append(record)
        journal = self._read_journal()
        now = time.time()
        forgotten: list[_Attempt] = []
        for job in jobs:
            att = self._adopt(job, by_name.get(job.attempt_id, []), journal.get(job.attempt_id))
            if att is None:
                continue
            self._track(att)
            if att.record is None and att.status is None:
                forgotten.append(att)
            else:
                self._settle_recovered(att, now)
        self._ask_accounting(forgotten, now)
        self._flush(time.monotonic())
        events, self._events = self._events, []
        return events

    def close(self, final: bool = False) -> None:
        """Stop watching; running jobs carry on unless ``final`` (the run is over), when every
        job of the run still in Slurm's queue is cancelled, so nothing is left behind."""
        pool, self._pool = self._pool, None
        if pool is not None:
            for att in list(self._submitting.values()):
                if att.submitting is not None and att.submitting.cancel():
                    self._live.pop(att.job.attempt_id, None)  # never submitted: resume does
                    self._submitting.pop(att.job.attempt_id, None)
            pool.shutdown(wait=True)
            with contextlib.suppress(ExecutorUnavailable):
                self._collect_submissions()
        if final:
            self._cancels += [a.job_id for a in self._live.values() if a.job_id]
        with contextlib.suppress(SlurmError):
            self._flush(time.monotonic())

    # ------------------------------------------------------------------ submitting
    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self.options.submit_parallel, thread_name_prefix="sbatch"
            )
        return self._pool

    def _sbatch(self, job: AttemptJob) -> str:
        """In a worker thread: the attempt's files, then ``sbatch``; the job id.

        An unreachable controller is retried (with backoff) for ``UNREACHABLE_S``; a retry
        after a lost answer may leave a second job, which the claim keeps from running.
        """
        attempt_dir = os.path.abspath(job.attempt_dir)
        create_attempt(attempt_dir)
        self.status_dir.mkdir(parents=True, exist_ok=True)
        text = script.script_text(
            job, self.status_dir, self.options.srun_args, script.cpus_per_task(job.vcpus)
        )
        path = script.write_script(job, text)
        args = self.options.sbatch_args_for(job, self.comment)
        delay_s, give_up = 1.0, time.monotonic() + UNREACHABLE_S
        while True:
            try:
                return self.slurm.sbatch(args, path)
            except SlurmUnreachable:
                if time.monotonic() > give_up:
                    raise
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 30.0)

    def _track(self, att: _Attempt) -> None:
        self._attempts[att.job.attempt_id] = att
        self._live[att.job.attempt_id] = att

    def _collect_submissions(self) -> None:
        """Take the answers of finished ``sbatch`` calls (on the loop's thread)."""
        for att in list(self._submitting.values()):
            fut = att.submitting
            if fut is None or not fut.done() or fut.cancelled():
                continue
            att.submitting = None
            del self._submitting[att.job.attempt_id]
            aid = att.job.attempt_id
            try:
                self._own(att, fut.result())
            except OSError as err:
                why = f"cannot write its script or logs: {err}"
                self._end(att, AttemptSubmitFailed(time.time(), aid, why))
                continue
            except SlurmRefused as err:
                self._end(att, AttemptSubmitFailed(time.time(), aid, f"sbatch refused it: {err}"))
                continue
            except (SlurmMissing, SlurmUnreachable) as err:
                raise ExecutorUnavailable(str(err)) from None
            self._journal(aid, str(att.job_id))
            if att.kill_grace_s is not None:
                self._kill_job(att, att.kill_grace_s)

    def _journal(self, attempt_id: str, job_id: str) -> None:
        """Which job id each attempt got: how ``recover`` finds jobs ``squeue`` forgot."""
        with open(self.state_dir / JOURNAL, "a", encoding="utf-8") as fh:
            fh.write(f"{attempt_id} {job_id}\n")

    def _read_journal(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        with contextlib.suppress(FileNotFoundError):
            for line in (self.state_dir / JOURNAL).read_text(encoding="utf-8").splitlines():
                aid, _, job_id = line.partition(" ")
                if job_id:
                    out.setdefault(aid, []).append(job_id.strip())
        return out

    # ------------------------------------------------------------------ killing
    def _kill_job(self, att: _Attempt, grace_s: float) -> None:
        assert att.job_id is not None
        att.kill_grace_s = None
        if grace_s <= 0 or not att.started:
            self._cancels.append(att.job_id)  # nothing runs yet to give a grace to
        else:
            self._signal_job(att, int(signals.SIGTERM))
            self._hard_kills[att.job.attempt_id] = time.monotonic() + grace_s
        self._soon()

    def _signal_job(self, att: _Attempt, signum: int) -> None:
        """Queue a signal for the command: to its step, or (run in the batch script) the job."""
        assert att.job_id is not None
        key = (signum, not script.runs_as_step(att.job))
        self._signals.setdefault(key, []).append(att.job_id)

    def _flush(self, now: float) -> None:
        """Send the signals and cancellations gathered since the last flush, one call each.

        If slurmctld does not answer, they stay queued for the next flush.
        """
        for aid, due in list(self._hard_kills.items()):
            att = self._live.get(aid)
            if att is None:
                del self._hard_kills[aid]
            elif due <= now and att.job_id:
                del self._hard_kills[aid]
                self._cancels.append(att.job_id)
        try:
            while self._signals:
                key = min(self._signals)
                signum, full = key
                job_ids = sorted(set(self._signals[key]))
                self.slurm.scancel(job_ids, signal=str(signum), full=full)
                del self._signals[key]
            if self._cancels:
                self.slurm.scancel(sorted(set(self._cancels)))
                self._cancels = []
                self._soon()
        except SlurmUnreachable:
            return

    # ------------------------------------------------------------------ the status directory
    def _scan_status(self) -> None:
        """New ``.S`` / ``.X`` files: starts and exit codes, without asking slurmctld."""
        try:
            mtime = os.stat(self.status_dir).st_mtime_ns
        except FileNotFoundError:
            return
        now = time.monotonic()
        if mtime == self._dir_mtime and now - self._last_scan < RESCAN_S:
            return
        self._dir_mtime, self._last_scan = mtime, now
        for name in os.listdir(self.status_dir):
            if name in self._seen:
                continue
            parsed = script.attempt_of(name)
            if parsed is None:
                continue
            att = self._live.get(parsed[0])
            if att is None:
                continue
            if parsed[1] == script.STARTED:
                if self._read_start(att):
                    self._seen.add(name)
            elif self._read_exit(att):
                self._seen.add(name)

    def _read_start(self, att: _Attempt) -> bool:
        started = script.read_started(self._status_path(att, script.STARTED))
        if started is None:
            return False
        job_id, nodes, at = started
        self._start(att, job_id, nodes, at)
        return True

    def _start(self, att: _Attempt, job_id: str, nodes: str, at: float) -> None:
        if att.started:
            return
        att.started = True
        if att.job_id is not None and att.job_id != job_id:
            self._cancels.append(att.job_id)  # a duplicate claimed first: follow the claimer
        self._own(att, job_id)
        aid = att.job.attempt_id
        hosts = script.expand_hostlist(nodes)
        self._events.append(AttemptStarted(at=at, attempt_id=aid, handle=job_id, nodes=hosts))

    def _read_exit(self, att: _Attempt) -> bool:
        exited = script.read_exited(self._status_path(att, script.EXITED))
        if exited is None:
            return False
        att.status, at = exited
        if not att.started:
            self._read_start(att)
        if att.status == 0 or att.killed:
            self._end(att, states.ended(att.job.attempt_id, at, att.record, att.status, att.killed))
        else:
            self._soon()  # a failure, or a preemption? Slurm's state tells
        return True

    def _status_path(self, att: _Attempt, kind: str) -> Path:
        return self.status_dir / (script.status_name(att.job.attempt_id) + kind)

    # ------------------------------------------------------------------ asking Slurm
    def _watching(self) -> bool:
        return len(self._live) > len(self._submitting)  # some have a job id

    def _soon(self) -> None:
        """Ask ``squeue`` again after the shortest interval: an answer is awaited."""
        self._interval = self.options.poll_interval_s
        self._next_query = min(self._next_query, time.monotonic() + self._interval)

    def _query(self) -> None:
        """One ``squeue`` for every job of the run; what it shows becomes events."""
        now = time.monotonic()
        try:
            records = self.slurm.squeue_mine()
        except SlurmUnreachable as err:
            self._unreachable_since = self._unreachable_since or now
            if now - self._unreachable_since > UNREACHABLE_S:
                raise ExecutorUnavailable(f"for {UNREACHABLE_S:.0f} s: {err}") from None
            self._next_query = now + self.options.poll_interval_s
            return
        except SlurmError as err:
            raise ExecutorUnavailable(str(err)) from None
        self._unreachable_since = None
        ours = {r.job_id: r for r in records if r.comment == self.comment}
        news = self._apply(ours)
        awaited = any(a.killed or a.status not in (None, 0) for a in self._live.values())
        if news or awaited:
            self._interval = self.options.poll_interval_s
        else:
            self._interval = min(self._interval * 1.5, self.options.max_poll_interval_s)
        self._next_query = time.monotonic() + self._interval

    def _apply(self, ours: dict[str, JobRecord]) -> bool:
        """Compare Slurm's view with ours; ``True`` if it told something the files did not."""
        at = time.time()
        news = False
        forgotten: list[_Attempt] = []
        for att in list(self._live.values()):
            if att.job_id is None:
                continue
            record = ours.get(att.job_id)
            if record is None:
                forgotten.append(att)
                continue
            att.record = record
            news |= self._follow(att, record, at)
        self._cancel_strays(ours)
        if forgotten:
            news = True
            self._ask_accounting(forgotten, at)
        return news

    def _follow(self, att: _Attempt, record: JobRecord, at: float) -> bool:
        aid = att.job.attempt_id
        if record.requeued:
            self._cancels.append(record.job_id)
            self._end(att, states.requeued(aid, at, record))
            return True
        if record.live:
            if record.state in states.STARTED and not att.started and not self._read_start(att):
                self._start(att, record.job_id, record.nodes, at)
            return False
        if att.status is None:
            self._read_exit(att)  # the file may be there before the listing shows it
            if att.ended:
                return False
        if not att.started:
            self._read_start(att)
        event = states.ended(aid, at, record, att.status, att.killed)
        self._end(att, event)
        return att.status is None or att.status != 0

    def _cancel_strays(self, ours: dict[str, JobRecord]) -> None:
        """Live jobs of this run that no attempt owns (a duplicate ``sbatch``), or whose
        attempt was settled without its status (Slurm showed the job again after losing it):
        cancelled, so nothing runs or waits that nobody watches. A job whose command wrote its
        status is left to finish its last lines."""
        pending = self._submitting.keys()
        for record in ours.values():
            if not record.live:
                continue
            owner = self._attempts.get(self._owners.get(record.job_id, ""))
            if owner is None:
                if record.name not in pending:
                    self._cancels.append(record.job_id)
            elif owner.ended and owner.status is None and owner.job_id == record.job_id:
                self._cancels.append(record.job_id)

    def _ask_accounting(self, attempts: list[_Attempt], at: float) -> None:
        """Jobs ``squeue`` has forgotten: their status files, else one ``sacct`` for all."""
        unknown = []
        for att in attempts:
            if att.status is None:
                self._read_exit(att)
            if att.ended:
                continue
            if att.status is not None:
                self._end(att, states.ended(att.job.attempt_id, at, None, att.status, att.killed))
            else:
                unknown.append(att)
        if not unknown:
            return
        records = {r.job_id: r for r in self._sacct([a.job_id or "" for a in unknown])}
        for att in unknown:
            record = records.get(att.job_id or "")
            if not att.started:
                self._read_start(att)
            self._end(att, states.ended(att.job.attempt_id, at, record, None, att.killed))

    def _sacct(self, job_ids: list[str]) -> list[JobRecord]:
        """``sacct`` for these jobs; from the jobcomp file where there is no database."""
        if self._completion_log is None:
            try:
                return self.slurm.sacct(job_ids, completion_log=False)
            except SlurmRefused:
                self._completion_log = True  # "accounting storage is disabled"
            except SlurmError:
                return []
        try:
            return self.slurm.sacct(job_ids, completion_log=bool(self._completion_log))
        except SlurmError:
            return []

    def _own(self, att: _Attempt, job_id: str) -> None:
        att.job_id = job_id
        self._owners[job_id] = att.job.attempt_id

    def _end(self, att: _Attempt, event: Event) -> None:
        att.ended = True
        self._hard_kills.pop(att.job.attempt_id, None)
        self._submitting.pop(att.job.attempt_id, None)
        self._live.pop(att.job.attempt_id, None)
        self._events.append(event)

    # ------------------------------------------------------------------ recovering
    def _adopt(
        self, job: AttemptJob, records: list[JobRecord], journalled: list[str] | None
    ) -> _Attempt | None:
        """Our view of one attempt after a restart, or ``None`` if Slurm never had it."""
        att = _Attempt(job)
        started = script.read_started(self._status_path(att, script.STARTED))
        exited = script.read_exited(self._status_path(att, script.EXITED))
        claimer = started[0] if started else None
        live = [r for r in records if r.live]
        chosen = next((r for r in records if r.job_id == claimer), None)
        chosen = chosen or (live[0] if live else (records[0] if records else None))
        for extra in live:
            if extra is not chosen:
                self._cancels.append(extra.job_id)  # a duplicate: never two jobs per attempt
        if chosen is not None:
            self._own(att, chosen.job_id)
            att.record = chosen
        elif claimer or journalled:
            self._own(att, claimer or (journalled or [""])[-1])
        elif exited is None:
            return None  # never submitted (or submitted and still unknown to Slurm)
        if exited is not None:
            att.status = exited[0]
        return att

    def _settle_recovered(self, att: _Attempt, at: float) -> None:
        """An adopted attempt Slurm (or its status file) knows: running, or ended how."""
        record = att.record
        if record is not None and record.requeued:
            self._follow(att, record, at)
        elif record is not None and record.live:
            if record.state in states.STARTED and not self._read_start(att):
                self._start(att, record.job_id, record.nodes, at)
            # a pending job: nothing to report; the runtime's submit of it is a no-op
        else:
            if not self._read_start(att) and record is not None and record.nodes:
                self._start(att, record.job_id, record.nodes, at)
            self._end(att, states.ended(att.job.attempt_id, at, record, att.status, att.killed))
