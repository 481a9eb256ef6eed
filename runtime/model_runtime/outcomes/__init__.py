"""Outcomes: the trade journal and its exporter, which turns closed trades into Prometheus metrics."""
