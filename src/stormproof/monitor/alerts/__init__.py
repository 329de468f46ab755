"""Alerts: rules evaluated from a run's log rows, delivered through apprise.

* ``rules``: the pure evaluation. A row in, the alerts it fires out; what already fired
  is folded from the log itself (``AlertRaised`` rows), so a resume never fires twice.
* ``deliver``: apprise in a background thread, retried with backoff, every try logged.
* ``deadline``: the simulator's estimate of the remaining work, on a timer, off the loop.
* ``hook``: what the driver holds: it appends the alerts to the log in the same
  transaction as the rows that caused them (outbox), then hands them to delivery.
"""
