"""Watching runs: the dashboard and JSON API (``web``), ``/metrics``, alerts and the report.

Everything here reads a run through the ``EventLog`` Protocol (so it works with every store)
and never drives one; the one exception is alerting, which the driver itself runs so that
what fired is in the run's own log (``alerts``).
"""
