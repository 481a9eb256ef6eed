"""Adapter tests get a Prometheus of their own per module: range queries over days would otherwise
see series other test modules exported earlier in the session (same names, other instances)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.prometheus import PrometheusServer, start_prometheus


@pytest.fixture(scope="module")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = start_prometheus(tmp_path_factory.mktemp("prometheus-module"))
    yield server
    server.stop()
