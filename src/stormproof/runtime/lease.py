"""The driver's side of its run's lease: wait for it, keep it, act only while it holds.

One orchestrator drives a run (DESIGN §4). The store grants the lease and checks
its fencing token on every flush (``store/base.py``); what the driver does about
it is here, in one place:

* **Waiting.** A second orchestrator on a run (a ``resume`` of a run being driven,
  a standby on another machine) waits, says who holds the run and until when
  (again whenever the holder changes), and takes over when the holder lets go,
  dies (SQLite: at once; PostgreSQL: when its lease lapses) or stops renewing.
* **Keeping.** ``LeaseKeeper.keep`` renews the lease once a third of its duration
  has passed since the last renewal *began*. The driver calls it every loop
  iteration (at least every ``IDLE_WAKE_S``) and after every flush, before it
  acts on what it flushed. So the driver never acts on a lease with less than
  two thirds of its duration left by its own clock, and one that stalled longer
  (stopped, swapped out, cut off from the database) renews first, or learns with
  ``LeaseLost`` that another orchestrator has the run and acts on nothing more.
  A lease that never lapses (SQLite's lock) needs no renewal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Final

from stormproof.errors import RunLocked
from stormproof.store.base import EventLog, Lease, LeaseHolder

#: How often a waiting orchestrator asks again for the lease.
WAIT_POLL_S: Final = 0.5
#: A lease is renewed once this share of its duration has passed since the last renewal.
RENEW_AFTER: Final = 1 / 3

OnWait = Callable[[LeaseHolder], None]


class LeaseKeeper:
    """Renews a held lease on time; the driver's only way to touch it."""

    def __init__(
        self, lease: Lease, renewed_at: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.lease = lease
        self._renewed_at = renewed_at  # when the renewal (or the taking) last began
        self._clock = clock

    @property
    def token(self) -> int:
        return self.lease.token

    def surely_held(self) -> bool:
        """Whether the lease cannot have lapsed yet by this process's clock (it may have been
        taken over all the same if the store's clock runs fast: the token decides)."""
        duration_s = self.lease.duration_s
        return duration_s is None or self._clock() - self._renewed_at < duration_s

    def keep(self) -> None:
        """Renew if a third of the lease has passed: ``LeaseLost`` if another holder has the
        run, ``StoreFault`` if the store cannot be reached."""
        duration_s = self.lease.duration_s
        if duration_s is None:
            return
        began = self._clock()
        if began - self._renewed_at >= duration_s * RENEW_AFTER:
            self.lease.renew()
            self._renewed_at = began


@contextmanager
def hold_lease(
    store: EventLog,
    run: str,
    on_wait: OnWait | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[LeaseKeeper]:
    """Hold ``run``'s lease for the block; with ``on_wait``, wait for it rather than raise
    ``RunLocked``, calling ``on_wait`` whenever the holder it waits for changes."""
    told: tuple[int | None, str, int] | None = None
    with ExitStack() as stack:
        while True:
            asked_at = clock()
            try:
                lease = stack.enter_context(store.driver_lease(run))
            except RunLocked as exc:
                if on_wait is None:
                    raise
                holder = exc.holder if isinstance(exc.holder, LeaseHolder) else _UNKNOWN
                if (holder.pid, holder.host, holder.token) != told:
                    told = (holder.pid, holder.host, holder.token)
                    on_wait(holder)
                sleep(WAIT_POLL_S)
                continue
            break
        yield LeaseKeeper(lease, asked_at, clock)


_UNKNOWN: Final = LeaseHolder(None, "", 0, None)
