"""The per-trade PromQL the product recommends (and the demo's gates use), over the chart's
recording rules on the real exporter scraped by the real Prometheus: a candidate that trades
exactly as the baseline, but only since the middle of the baseline's history, reads the same
statistics over a window that starts two seconds after its first trade; and a
trigger's per-trade figure over a window in which the exporter process restarted is still the
window's own trades, with no counter reset."""

from __future__ import annotations

import itertools
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, start_http_server

from devstack.process import free_port
from devstack.prometheus import CHART_RULE_FILES, PrometheusServer, start_prometheus
from model_runtime.outcomes.exporter import OUTCOME_COUNTERS, JournalCollector
from model_runtime.outcomes.journal import ClosedTrade, create_journal, record_trades
from modelrollout.gates import render_query
from modelrollout.outcome_queries import per_trade_queries, recorded_counter
from modelrollout.prometheus_provider import PrometheusProvider

pytestmark = pytest.mark.slow
CANDIDATE_FROM = 6.0  # seconds into the run
WINDOW = "8s"


class Journal:
    """A journal, its collector served on /metrics and refreshed every second, and a writer of trades."""

    def __init__(self, path: Path) -> None:
        self.engine = sa.create_engine(f"sqlite:///{path}")
        create_journal(self.engine)
        self.collector = JournalCollector(self.engine, timedelta(seconds=10), timedelta(seconds=10))
        registry = CollectorRegistry()
        registry.register(self.collector)
        self.target = f"127.0.0.1:{free_port()}"
        self.server, _ = start_http_server(int(self.target.rsplit(":", 1)[1]), addr="127.0.0.1", registry=registry)
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.written: list[ClosedTrade] = []

    def refresh(self) -> None:
        while not self.stop.is_set():
            self.collector.refresh()
            self.stop.wait(1.0)

    def write(self) -> None:
        rng = random.Random(7)
        while not self.stop.is_set():
            now = datetime.now(UTC)
            variants = ["baseline"] + (["candidate"] if time.monotonic() - self.started > CANDIDATE_FROM else [])
            trades = [ClosedTrade(symbol="ETHUSDC", variant=variant, opened_at=now - timedelta(seconds=1),
                                  closed_at=now, side="long", pnl_net=pnl)
                      # bursts and lulls, like a market: some ticks close nothing
                      for pnl in (rng.gauss(2.0, 10.0) for _ in range(rng.choice([0, 0, 1, 8])))
                      for variant in variants]
            record_trades(self.engine, trades)
            self.written += trades
            self.stop.wait(0.25)

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.engine.dispose()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    journal = Journal(tmp_path / "journal.db")
    threads = [threading.Thread(target=f, daemon=True) for f in (journal.refresh, journal.write)]
    for thread in threads:
        thread.start()
    yield journal
    journal.close()
    for thread in threads:
        thread.join(timeout=5)


@pytest.fixture
def prometheus(tmp_path: Path, journal: Journal) -> Iterator[PrometheusServer]:
    server = start_prometheus(tmp_path / "prometheus", [journal.target], rule_files=CHART_RULE_FILES)
    yield server
    server.stop()


def test_a_candidate_with_the_baselines_trades_reads_the_same_per_trade_statistics(
        journal: Journal, prometheus: PrometheusServer) -> None:
    time.sleep(CANDIDATE_FROM + 2.0 + float(WINDOW.removesuffix("s")) - (time.monotonic() - journal.started))
    provider = PrometheusProvider(prometheus.url, timeout_s=5)
    statistic = {}
    for name in ("expectancy", "stddev", "count", "sortino"):
        for variant in ("baseline", "candidate"):
            query = render_query(per_trade_queries(variant)[name], symbols=["ETHUSDC"], window=WINDOW,
                                 variant=variant)
            result = provider.query(query)
            assert result.error is None, result.error
            statistic[name, variant] = result.values.get("ETHUSDC")
    for name in ("expectancy", "stddev", "count", "sortino"):
        assert statistic[name, "baseline"] is not None, statistic
        assert statistic[name, "candidate"] == pytest.approx(statistic[name, "baseline"], rel=1e-9), name
    assert statistic["count", "baseline"] == int(statistic["count", "baseline"]) > 5  # whole trades, no extrapolation
    candidate = [t.pnl_net for t in journal.written if t.variant == "candidate"]
    spread = statistics.stdev(candidate)  # the window's spread is of the same order as the run's
    assert 0.3 * spread < statistic["stddev", "candidate"] < 3 * spread


class ExporterProcess:
    """`python -m model_runtime.outcomes.exporter` on a fixed port, which can be restarted."""

    def __init__(self, db_url: str, log_path: Path) -> None:
        self.db_url, self.log_path = db_url, log_path
        self.target = f"127.0.0.1:{free_port()}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "model_runtime.outcomes.exporter", "--window", "1h", "--max-staleness", "1h",
             "--refresh-interval", "1s", "--host", "127.0.0.1", "--port", self.target.rsplit(":", 1)[1]],
            env={"MODELROLLOUT_JOURNAL_DB_URL": self.db_url, "PATH": "/usr/bin:/bin"}, stdout=log, stderr=log)
        log.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            assert self.process.wait(timeout=15) == 0
        self.process = None


def trade_for(seconds: float, engine: sa.Engine, rng: random.Random) -> list[ClosedTrade]:
    """Candidate trades closing now, a few every quarter second for `seconds`; returns them."""
    written: list[ClosedTrade] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = datetime.now(UTC)
        trades = [ClosedTrade(symbol="ETHUSDC", variant="candidate", opened_at=now - timedelta(seconds=1),
                              closed_at=now, side="long", pnl_net=rng.gauss(-1.0, 10.0))
                  for _ in range(rng.choice([0, 1, 3]))]
        record_trades(engine, trades)
        written += trades
        time.sleep(0.25)
    return written


def read_the_window(provider: PrometheusProvider, window_start: float) -> tuple[str, dict[str, float | None]]:
    """The candidate's count and expectancy over a window from `window_start` (monotonic) to now.

    A scrape that fails (its 1 s timeout, on a starved machine) leaves the exporter's series, and so
    the recorded counters, stale until the next scrape: one look at that instant, now or at the
    window's start, reads no data, as a trigger's does then (no data, never a verdict). So a look
    without a count is asked again for up to 20 s, with the window's start moved up to 2 s later
    into the 6 s quiet gap it starts in (never earlier: the counters lag the journal by a refresh,
    a scrape and a rule evaluation), so every window tried has the same trades. A counter reset
    inside the window reads no count in every one of them."""
    deadline = time.monotonic() + 20
    for attempt in itertools.count():
        later = attempt % 3
        seconds = f"{round(time.monotonic() - window_start) - later}s"
        figures = {}
        for name in ("count", "expectancy"):
            result = provider.query(render_query(per_trade_queries("candidate")[name], symbols=["ETHUSDC"],
                                                 window=seconds, variant="candidate"))
            assert result.error is None, result.error
            figures[name] = result.values.get("ETHUSDC")
        if figures["count"] is not None or time.monotonic() > deadline:
            return seconds, figures
        time.sleep(0.5)
    raise AssertionError("unreachable")


def test_a_trigger_reads_the_windows_trades_across_an_exporter_restart(postgres_journal_url: str,
                                                                        tmp_path: Path) -> None:
    """History, a quiet gap, trades, the exporter restarts, more trades: the window that starts
    in the gap reads exactly the trades after it. With counters that restart at 0 the growth
    went negative and the trigger read no data for as long as its window held the restart."""
    engine = sa.create_engine(postgres_journal_url)
    create_journal(engine)
    exporter = ExporterProcess(postgres_journal_url, tmp_path / "exporter.log")
    exporter.start()
    prometheus = start_prometheus(tmp_path / "prometheus", [exporter.target], rule_files=CHART_RULE_FILES)
    provider = PrometheusProvider(prometheus.url, timeout_s=5)
    rng = random.Random(11)
    try:
        history = trade_for(3.0, engine, rng)
        time.sleep(3.0)
        window_start = time.monotonic()  # the middle of a 6 s quiet gap
        time.sleep(3.0)
        before = trade_for(4.0, engine, rng)
        exporter.stop()
        exporter.start()
        after = trade_for(4.0, engine, rng)
        window = before + after
        total = len(history) + len(window)
        deadline = time.monotonic() + 60
        while provider.query(recorded_counter("trades_closed_total") + '{symbol="ETHUSDC",variant="candidate"}').values.get(
                "ETHUSDC") != total:  # the recording rule the gate queries read has seen every trade
            assert time.monotonic() < deadline, "Prometheus never saw every trade"
            time.sleep(0.5)

        seconds, figures = read_the_window(provider, window_start)
        failed_scrapes = provider.query("count_over_time(up[2m]) - sum_over_time(up[2m])").values
        assert figures["count"] == len(window) > 10, (figures, seconds, f"failed scrapes: {failed_scrapes}")
        assert figures["expectancy"] == pytest.approx(statistics.fmean(t.pnl_net for t in window), rel=1e-9)
        for name, _, _ in OUTCOME_COUNTERS:
            resets = provider.query(f'resets({name}_total{{symbol="ETHUSDC",variant="candidate"}}[{seconds}])')
            assert resets.error is None and resets.values == {"ETHUSDC": 0.0}, (name, resets)
    finally:
        exporter.stop()
        prometheus.stop()
        engine.dispose()
