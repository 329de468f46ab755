"""The views of a home's runs, kept folded and brought up to date with only the new rows.

A finished 10,000-task run is folded once (the first time it is asked for); after that a
request reads just the rows appended since (``EventLog.read(after_seq=…)``) and asks the
store whether the run is driven. Not thread-safe: ``serve`` keeps it (and its store
connection) on one thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from stormproof.runtime.home import check_run_name
from stormproof.runtime.view import RunView, run_summary_json, shown_state, view_for_run
from stormproof.store.base import EventLog, RunInfo


class RunViews:
    def __init__(self, store: EventLog, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._views: dict[str, tuple[RunInfo, RunView]] = {}

    def get(self, name: str) -> tuple[RunInfo, RunView]:
        """The run's record and its view as of now; ``RunNotFound`` if there is none."""
        check_run_name(name)
        known = self._views.get(name)
        if known is None:
            info = self.store.get_run(name)
            known = self._views[name] = (info, view_for_run(info))
        return known[0], self._refresh(known[1])

    def all(self) -> list[tuple[RunInfo, RunView]]:
        out = []
        for info in self.store.list_runs():
            known = self._views.get(info.name)
            if known is None:
                known = self._views[info.name] = (info, view_for_run(info))
            out.append((known[0], self._refresh(known[1])))
        return out

    def summaries(self) -> list[dict[str, object]]:
        now = self.clock()
        return [run_summary_json(info, view, now) for info, view in self.all()]

    def _refresh(self, view: RunView) -> RunView:
        view.apply(self.store.read(view.name, view.last_seq))
        view.state = shown_state(view, self.store.is_driven(view.name))
        return view
