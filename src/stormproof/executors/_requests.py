"""The shim's protocol: what each request of a client does.

Protocol: one JSON array per line, each way.

    client -> shim   ["hello", version, env, client_pid]     answered by ["H", version, shim_pid]
                     ["submit", attempt_id, attempt_dir, command, env(, memory_limit(, after))]
                     ["kill", attempt_id, grace_s]
                     ["signal", attempt_id, signal_number]    one signal, no kill after it
                     ["drop"]                      drop every held successor (the driver stops)
                     ["withdraw", attempt_id]      drop it if held; if it started, nothing
                     ["recover", request_no, [[attempt_id, attempt_dir], ...]]
                                                   answered by ["R", request_no, [event, ...]]
                     ["shutdown"]
    shim -> client   ["S", at, attempt_id, pid]               started
                     ["X", at, attempt_id, exit_code(, oom(, cpu_s, max_rss_kib))]
                                                   exited (128+N for signal N); oom 1: killed
                                                   for its memory; then its usage (wait4)
                     ["L", at, attempt_id, reason]            lost
                     ["F", at, attempt_id, message]           could not be submitted
                     ["D", at, attempt_id, reason]            a held successor dropped unstarted

An attempt's events go only to the client that submitted or recovered it last, so a
reconnecting orchestrator gets each fact once: from ``recover``, or later as an event. A
submit of an attempt this shim, or an earlier shim of the run, launched already is never
launched twice: the client becomes its owner and hears its state.

Kept apart from ``_shim`` so that the shim reads as its loop and what it does with processes;
this module only turns messages into those actions, through ``Host``. A malformed message is
logged and ignored, and a request that fails is logged: neither may take the shim, and with
it every attempt of the run, down.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from stormproof.executors._adoption import Adoption
from stormproof.executors._attempt import AttemptRecord
from stormproof.executors._successors import HeldSuccessors
from stormproof.executors._wire import Client

PROTOCOL_VERSION = 2  # 2: the client makes attempt dirs and logs; statuses in the journal


class Host(Protocol):
    """What ``Requests`` needs of the shim."""

    attempts: dict[str, AttemptRecord]
    adoption: Adoption
    successors: HeldSuccessors
    shutdown_requested: bool

    def send(self, client: Client | None, message: str, hold: bool = False) -> None: ...

    def launch(
        self,
        client: Client,
        attempt_id: str,
        attempt_dir: str,
        command: Any,
        env: dict[str, str],
        memory_limit: int = 0,
    ) -> None: ...

    def kill(self, rec: AttemptRecord, grace_s: float) -> None: ...

    def signal_group(self, rec: AttemptRecord, sig: int) -> bool: ...

    def log(self, message: str) -> None: ...


class Requests:
    """Each request's handler, by the request's name."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.ops: dict[str, Callable[[Client, list[Any]], None]] = {
            "hello": self._hello,
            "submit": self._submit,
            "kill": self._kill,
            "signal": self._signal,
            "recover": self._recover,
            "shutdown": self._shutdown,
            "drop": self._drop,
            "withdraw": self._withdraw,
        }

    def handle_line(self, client: Client, line: bytes) -> None:
        try:
            msg = orjson.loads(line)
            op = self.ops[msg[0]]
        except (ValueError, KeyError, IndexError, TypeError):
            self.host.log(f"ignoring a malformed message: {line[:200]!r}")
            return
        try:
            op(client, msg)
        except Exception:  # one bad request must never take the shim and every attempt down
            self.host.log(f"failed to handle {line[:200]!r}:\n{traceback.format_exc()}")

    def _hello(self, client: Client, msg: list[Any]) -> None:
        client.env = {str(k): str(v) for k, v in msg[2].items()}
        self.host.send(client, f'["H",{PROTOCOL_VERSION},{os.getpid()}]')

    def _shutdown(self, client: Client, msg: list[Any]) -> None:
        self.host.shutdown_requested = True

    def _recover(self, client: Client, msg: list[Any]) -> None:
        events = []
        for attempt_id, attempt_dir in msg[2]:
            rec = self._known(str(attempt_id), str(attempt_dir))
            if rec is not None:
                rec.owner = client
                state = rec.state_event()
                if state is not None:  # a held one says nothing: the client submits it again
                    events.append(state)
        self.host.send(client, f'["R",{int(msg[1])},[{",".join(events)}]]')

    def _known(self, attempt_id: str, attempt_dir: str) -> AttemptRecord | None:
        host = self.host
        return host.attempts.get(attempt_id) or host.adoption.from_disk(attempt_id, attempt_dir)

    def _submit(self, client: Client, msg: list[Any]) -> None:
        host = self.host
        attempt_id, attempt_dir, command, env = msg[1:5]
        memory_limit = int(msg[5]) if len(msg) > 5 else 0
        after = str(msg[6]) if len(msg) > 6 else ""
        rec = host.attempts.get(attempt_id)
        if rec is None and attempt_id in host.adoption.earlier:
            rec = host.adoption.from_disk(attempt_id, attempt_dir)
        if rec is not None:  # launched already: adopt it instead of launching it twice
            if rec.owner is not client:
                rec.owner = client
                state = rec.state_event()
                if state is not None:
                    host.send(client, state)
            return
        try:
            env = {**client.env, **env}
            pred = host.attempts.get(after) if after else None
            if pred is not None and pred.final is None:
                host.successors.hold(
                    client, attempt_id, attempt_dir, command, env, memory_limit, pred
                )
                return
            host.launch(client, attempt_id, attempt_dir, command, env, memory_limit)
        except Exception as exc:  # whatever it was, the orchestrator must hear of this attempt
            host.log(f"{attempt_id}: launch failed:\n{traceback.format_exc()}")
            rec = host.attempts.get(attempt_id)
            if rec is None:
                self._refuse(client, attempt_id, attempt_dir, f"cannot start: {exc!r}")
            elif rec.final is None and not rec.pid and rec.held is None:
                host.send(client, rec.end("F", time.time(), f"cannot start: {exc!r}"))

    def _refuse(self, client: Client, attempt_id: str, attempt_dir: str, message: str) -> None:
        rec = AttemptRecord(attempt_id, attempt_dir, owner=client)
        self.host.attempts[attempt_id] = rec
        self.host.send(client, rec.end("F", time.time(), message))

    def _kill(self, client: Client, msg: list[Any]) -> None:
        rec = self.host.attempts.get(msg[1])
        if rec is not None and rec.held is not None:
            self.host.successors.drop(rec, "killed while it waited for its predecessor")
            return
        grace_s = float(msg[2])
        if rec is not None:
            self.host.kill(rec, grace_s)

    def _drop(self, client: Client, msg: list[Any]) -> None:
        """The driver stops: no held successor may start with nobody watching."""
        self.host.successors.drop_all("the run stopped before its predecessor ended")

    def _withdraw(self, client: Client, msg: list[Any]) -> None:
        rec = self.host.attempts.get(msg[1])
        if rec is not None and rec.held is not None:
            self.host.successors.drop(rec, "withdrawn: a place is free elsewhere")

    def _signal(self, client: Client, msg: list[Any]) -> None:
        """Deliver one signal (a checkpoint request) to the attempt's group; no kill follows."""
        rec = self.host.attempts.get(msg[1])
        if rec is not None and rec.final is None:
            self.host.signal_group(rec, int(msg[2]))
