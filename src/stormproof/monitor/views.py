"""The views of a home's runs, kept whole and brought up to date with only the new rows.

A run is loaded once, the first time it is asked for, from the view its driver keeps in
the store (``view_store.whole_view``: the summary, every task's record, and the rows
after them; a fold of the whole log only for a run with no stored view). After that a
request reads just the rows appended since (``EventLog.read(after_seq=…)``) and asks the
store whether the run is driven. Not thread-safe: ``serve`` keeps it (and its store
connection) on one thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from stormproof.runtime.home import check_run_name
from stormproof.runtime.view import RunView
from stormproof.runtime.view_query import run_summary_json, shown_state
from stormproof.runtime.view_store import whole_view
from stormproof.store.base import EventLog, RunInfo


class RunViews:
    def __init__(
        self, store: EventLog, clock: Callable[[], float] = time.time, writable: bool = False
    ) -> None:
        """``writable``: a run with no stored view has the one folded here saved."""
        self.store = store
        self.clock = clock
        self.writable = writable
        self._views: dict[str, tuple[RunInfo, RunView]] = {}

    def get(self, name: str) -> tuple[RunInfo, RunView]:
        """The run's record and its view as of now; ``RunNotFound`` if there is none."""
        check_run_name(name)
        known = self._views.get(name)
        if known is None:
            return self._load(self.store.get_run(name))
        return known[0], self._refresh(known[1])

    def all(self) -> list[tuple[RunInfo, RunView]]:
        out = []
        for info in self.store.list_runs():
            known = self._views.get(info.name)
            out.append(self._load(info) if known is None else (known[0], self._refresh(known[1])))
        return out

    def summaries(self) -> list[dict[str, object]]:
        now = self.clock()
        return [run_summary_json(info, view, now) for info, view in self.all()]

    def _load(self, info: RunInfo) -> tuple[RunInfo, RunView]:
        view = whole_view(self.store, info, self.writable)
        view.state = shown_state(view, self.store.is_driven(info.name))
        self._views[info.name] = (info, view)
        return info, view

    def _refresh(self, view: RunView) -> RunView:
        view.apply(self.store.read(view.name, view.last_seq))
        view.dirty.clear()  # nothing is saved from here: the set would only grow
        view.state = shown_state(view, self.store.is_driven(view.name))
        return view
