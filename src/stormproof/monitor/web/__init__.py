"""``stormproof serve``: the dashboard's pages, the JSON API behind them, and ``/metrics``."""
