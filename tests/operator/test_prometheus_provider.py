"""The Prometheus adapter against a real Prometheus scraping series the test controls."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from devstack.process import free_port
from devstack.prometheus import PrometheusServer
from devstack.series import SeriesFeed
from modelrollout.prometheus_provider import PrometheusProvider


@pytest.fixture(scope="module")
def feed(prometheus_server: PrometheusServer) -> Iterator[SeriesFeed]:
    feed = SeriesFeed(prometheus_server)
    feed.set("feed_probe", 1.5, symbol="BTCUSDC", variant="candidate")
    feed.set("feed_probe", math.nan, symbol="ETHUSDC", variant="candidate")
    feed.set("feed_probe", 7.0, symbol="ETHUSDC", variant="baseline")
    feed.scrape()
    feed.wait_for("count(feed_probe)", lambda r: r.values.get("*") == 3.0)
    yield feed
    feed.close()


def test_values_are_keyed_by_symbol_and_nan_is_kept(feed: SeriesFeed) -> None:
    result = feed.provider.query('feed_probe{variant="candidate"}')
    assert result.error is None
    assert set(result.values) == {"BTCUSDC", "ETHUSDC"}
    assert result.values["BTCUSDC"] == 1.5
    assert math.isnan(result.values["ETHUSDC"])
    assert result.query == 'feed_probe{variant="candidate"}'


def test_a_series_without_symbol_is_keyed_star(feed: SeriesFeed) -> None:
    assert feed.provider.query("count(feed_probe)").values == {"*": 3.0}


def test_two_series_for_one_symbol_is_an_error(feed: SeriesFeed) -> None:
    result = feed.provider.query('feed_probe{symbol="ETHUSDC"}')
    assert result.values == {}
    assert result.error is not None and "must aggregate by (symbol)" in result.error
    assert feed.provider.query('max by (symbol) (feed_probe{symbol="ETHUSDC"})').values == {"ETHUSDC": 7.0}


def test_no_matching_series_is_no_data_not_an_error(feed: SeriesFeed) -> None:
    result = feed.provider.query('feed_probe{symbol="SOLUSDC"}')
    assert (result.values, result.error) == ({}, None)


def test_a_promql_syntax_error_is_an_error_naming_the_url(feed: SeriesFeed) -> None:
    result = feed.provider.query('avg_over_time(feed_probe{symbol=~"BTCUSDC"}[5m)')
    assert result.values == {}
    assert result.error is not None
    assert result.error.startswith(f"Prometheus at {feed.prometheus.url}: ")
    assert "400" in result.error and "parse error" in result.error


@pytest.mark.parametrize("promql", ["1 + 1", "feed_probe[1m]", '"text"'])
def test_a_result_that_is_not_an_instant_vector_is_an_error(feed: SeriesFeed, promql: str) -> None:
    result = feed.provider.query(promql)
    assert result.error is not None and "must return an instant vector" in result.error


def test_an_unreachable_prometheus_is_an_error_at_once() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    started = time.monotonic()
    result = PrometheusProvider(url, timeout_s=2).query("up")
    assert time.monotonic() - started < 2.0  # no retry backoff
    assert result.error is not None and result.error.startswith(f"Prometheus at {url}: ConnectionError")


def test_a_prometheus_that_never_answers_is_an_error_within_the_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never replies
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        result = PrometheusProvider(url, timeout_s=1).query("up")
        elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 2.0
    assert result.error is not None and "timed out" in result.error.lower()


class _RecordingPrometheus(BaseHTTPRequestHandler):
    """Answers every instant query with one sample and remembers the Authorization header."""

    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"symbol": "BTCUSDC"}, "value": [time.time(), "2"]}]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_bearer_token_is_sent_only_when_given() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingPrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert PrometheusProvider(url, timeout_s=2, bearer_token="s3cret").query("up").values == {"BTCUSDC": 2.0}
        assert PrometheusProvider(url, timeout_s=2).query("up").values == {"BTCUSDC": 2.0}
    finally:
        server.shutdown()
        server.server_close()
    assert _RecordingPrometheus.seen == ["Bearer s3cret", None]
