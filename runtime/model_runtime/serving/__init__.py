"""Serving: the inference server, the served model loaded from the registry, and its Prometheus metrics."""
