"""Series a test controls, exported by prometheus_client and scraped by the real Prometheus."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from devstack.process import free_port
from devstack.prometheus import PrometheusServer
from modelrollout.observation import QueryResult
from modelrollout.prometheus_provider import PrometheusProvider


class SeriesFeed:
    """An exporter on its own registry and port; `scrape()` points Prometheus at it (every 1s)."""

    def __init__(self, prometheus: PrometheusServer) -> None:
        self.prometheus = prometheus
        self.provider = PrometheusProvider(prometheus.url, timeout_s=5)
        self.registry = CollectorRegistry()
        self.target = f"127.0.0.1:{free_port()}"
        self._gauges: dict[str, Gauge] = {}
        self._server, self._thread = start_http_server(int(self.target.rsplit(":", 1)[1]), addr="127.0.0.1",
                                                       registry=self.registry)

    def set(self, name: str, value: float, **labels: str) -> None:
        if name not in self._gauges:
            self._gauges[name] = Gauge(name, name, sorted(labels), registry=self.registry)
        self._gauges[name].labels(**labels).set(value)

    def remove(self, name: str, **labels: str) -> None:
        """Stop exporting one series, so Prometheus has no data for it (not a zero)."""
        self._gauges[name].remove(*(labels[k] for k in sorted(labels)))

    def scrape(self, rule_files: Sequence[Path] = ()) -> None:
        self.prometheus.reload([self.target], scrape_interval="1s", rule_files=rule_files)

    def wait_for(self, promql: str, done: Callable[[QueryResult], bool], timeout: float = 20.0) -> QueryResult:
        """Poll until `done(result)`; bounded, and the last answer is in the failure message."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.provider.query(promql)
            if done(result):
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"{promql!r} not as expected after {timeout}s: {result}")
            time.sleep(0.25)

    def close(self) -> None:
        self.prometheus.reload([], scrape_interval="1s")
        self._server.shutdown()
        self._server.server_close()
