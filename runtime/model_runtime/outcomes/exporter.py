"""`model-runtime journal-exporter`: the trade journal's outcomes as Prometheus metrics.

Every `--refresh-interval` it reads the closed trades of the last `--window` from the journal
(any SQLAlchemy URL: SQLite by default, `postgresql+psycopg://...` in production) and serves,
per symbol and variant, on /metrics:

    expectancy_net_realized   mean net PnL per closed trade in the window
    expectancy_net_stddev     its sample standard deviation (two trades or more)
    n_trades                  closed trades in the window
    sortino_ratio             mean over downside deviation (needs a losing trade)
    live_f1_buy               F1 of the buy class, once outcomes are known

and counters, totals over every closed trade in the journal (`OutcomeTotals`), from which PromQL
gets any window's per-trade statistics:

    trades_closed_total, trade_pnl_net_profit_total, trade_pnl_net_loss_total,
    trade_pnl_net_squared_total, trade_pnl_net_loss_squared_total

    expectancy over w = growth of (profit - loss) / growth of trades,  growth of c = c - c offset w

(not increase(c[w]): its edge extrapolation differs per young counter and skews the ratios;
docs/semantics.md has the details; the chart records these per symbol and variant, and
modelrollout.outcome_queries writes the gate queries over them).

A gauge averaged over time weighs every scrape alike; these weigh every trade alike, over
exactly [now - w, now] for candidate and baseline. The totals are the journal's, not the
process's: the first refresh counts every closed trade in the journal, later ones add only the
rows that are new (ids above the highest seen, and closes within `--window`, each id once), so
a restarted exporter resumes the very values the one before it served (the sums are exact, so
the order of counting does not change a bit) and Prometheus sees no reset; a refresh costs the
window plus the new rows, never the journal's length. A trade counts once, whenever it reaches
the journal; the only ones a running exporter misses until its next restart are rows both
committed after a higher id was read and closed more than `--window` before that (a long
transaction writing old trades), or closed, by an update, more than `--window` in the past.
A malformed row is never counted. Every variant of VARIANTS starts at 0 for each symbol the
journal has shown, so a candidate's first trades are an increase, not the series' first sample.

A series that is empty, late (newest close older than `--max-staleness`) or has a malformed
row has no sample at all, so the operator's gates go inconclusive rather than judge a made-up
zero. A database error is logged, every outcome sample disappears until the next good read
(`journal_exporter_up` 0; the counters keep their values), and the exporter keeps running.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, Field, field_validator

from model_runtime.outcomes.journal import (
    ClosedTrade,
    MalformedRow,
    OutcomeStats,
    OutcomeTotals,
    SeriesKey,
    outcome_stats,
    read_closed,
)

log = logging.getLogger(__name__)

DB_URL_ENV = "MODELROLLOUT_JOURNAL_DB_URL"
DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

# (metric name, help, the OutcomeStats field it exports)
OUTCOME_METRICS: tuple[tuple[str, str, str], ...] = (
    ("expectancy_net_realized", "Mean net PnL per closed trade over the journal window.", "expectancy"),
    ("expectancy_net_stddev", "Sample standard deviation of the net PnL per closed trade over the window.", "stddev"),
    ("n_trades", "Closed trades in the journal window.", "n_trades"),
    ("sortino_ratio", "Mean net PnL per trade over its downside deviation (target 0) in the window.", "sortino"),
    ("live_f1_buy", "F1 of the buy class over the window's trades with a known outcome.", "f1_buy"),
)

# (counter name, help, the OutcomeTotals field it exports)
OUTCOME_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("trades_closed", "Closed trades in the journal.", "trades"),
    ("trade_pnl_net_profit", "Sum of the net PnL of the journal's winning trades.", "profit"),
    ("trade_pnl_net_loss", "Sum of minus the net PnL of the journal's losing trades.", "loss"),
    ("trade_pnl_net_squared", "Sum of squared net PnL of the journal's closed trades.", "squared"),
    ("trade_pnl_net_loss_squared", "Sum of squared net PnL of the journal's losing trades.", "loss_squared"),
)
VARIANTS = ("baseline", "candidate")  # the variants a rollout compares: present from a symbol's first trade


def parse_duration(text: str) -> timedelta:
    """`30s`, `15m`, `48h`, `7d` (the same forms the ModelRollout spec uses)."""
    match = DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"bad duration {text!r}: expected a positive number and s, m, h or d, e.g. 48h")
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


class ExporterConfig(BaseModel):
    db_url: str = Field(min_length=1)
    window: timedelta
    max_staleness: timedelta
    refresh_interval: timedelta
    host: str
    port: int = Field(ge=0, le=65535)

    @field_validator("window", "max_staleness", "refresh_interval", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class Snapshot:
    """What the last refresh found; the collector serves it until the next one."""

    stats: dict[SeriesKey, OutcomeStats] = field(default_factory=dict)
    totals: dict[SeriesKey, OutcomeTotals] = field(default_factory=dict)
    up: bool = False
    malformed_rows: int = 0
    refreshed_at: datetime | None = None


@dataclass(frozen=True)
class Tally:
    """The counters' state: totals over the journal's closed trades, and what a refresh needs to
    count only the new ones."""

    totals: dict[SeriesKey, OutcomeTotals] = field(default_factory=dict)
    max_id: int | None = None
    """The highest row id read so far (None: the journal was never read in full)."""
    recent: dict[int, datetime] = field(default_factory=dict)
    """Ids of counted trades that a window read can see again, with their close time."""


class JournalCollector(Collector):
    """Serves the latest snapshot; `refresh()` replaces it from the database."""

    def __init__(self, engine: sa.Engine, window: timedelta, max_staleness: timedelta,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.window = window
        self.max_staleness = max_staleness
        self.clock = clock
        self.snapshot = Snapshot()
        self._lock = threading.Lock()
        self._tally = Tally()

    def _read(self, now: datetime) -> tuple[list[ClosedTrade | MalformedRow], list[MalformedRow], Tally]:
        """(the window's rows, malformed rows read, the tally with every new trade counted once).

        The first read counts the whole journal; later ones read the window and the rows written
        since (ids above the highest seen), and skip the ids already counted.
        """
        since = now - self.window
        old = self._tally
        totals, recent, max_id = dict(old.totals), dict(old.recent), old.max_id
        window: list[ClosedTrade | MalformedRow] = []
        malformed: list[MalformedRow] = []
        with self.engine.connect() as connection:
            for row_id, row, in_window in read_closed(connection, since, now, after_id=old.max_id,
                                                      everything=old.max_id is None):
                max_id = row_id if max_id is None else max(max_id, row_id)
                if in_window:
                    window.append(row)
                if isinstance(row, MalformedRow):
                    malformed.append(row)
                    continue
                for variant in VARIANTS:
                    totals.setdefault((row.symbol, variant), OutcomeTotals())
                if row_id in recent:
                    continue
                totals[row.key] = totals.get(row.key, OutcomeTotals()).plus(row.pnl_net)
                recent[row_id] = row.closed_at
        recent = {i: closed for i, closed in recent.items() if closed >= since}
        return window, malformed, Tally(totals=totals, max_id=max_id, recent=recent)

    def refresh(self) -> Snapshot:
        now = self.clock()
        try:
            rows, malformed, tally = self._read(now)
        except sa.exc.SQLAlchemyError as error:
            # No URL in the message (it may carry a password); the exception says what failed.
            first_line = next(iter(str(error).splitlines()), "")
            log.error("cannot read the trade journal: %s: %s", type(error).__name__, first_line)
            snapshot = Snapshot(totals=dict(self._tally.totals), up=False, refreshed_at=now)
        else:
            self._tally = tally
            stats, in_window = outcome_stats(rows, now, self.max_staleness)
            for row in malformed:
                log.warning("malformed journal row for %s: %s", "/".join(row.key) if row.key else "unknown series",
                            row.reason)
            snapshot = Snapshot(stats=stats, totals=dict(tally.totals), up=True, malformed_rows=len(in_window),
                                refreshed_at=now)
        with self._lock:
            self.snapshot = snapshot
        return snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            snapshot = self.snapshot
        for name, help_text, attribute in OUTCOME_METRICS:
            family = GaugeMetricFamily(name, help_text, labels=["symbol", "variant"])
            for (symbol, variant), stats in sorted(snapshot.stats.items()):
                value = getattr(stats, attribute)
                if value is not None:
                    family.add_metric([symbol, variant], float(value))
            yield family
        for name, help_text, attribute in OUTCOME_COUNTERS:
            counter = CounterMetricFamily(name, help_text, labels=["symbol", "variant"])
            for (symbol, variant), totals in sorted(snapshot.totals.items()):
                counter.add_metric([symbol, variant], float(getattr(totals, attribute)))
            yield counter
        yield GaugeMetricFamily("journal_exporter_up", "1 when the last read of the trade journal succeeded.",
                                value=1.0 if snapshot.up else 0.0)
        yield GaugeMetricFamily("journal_exporter_malformed_rows",
                                "Malformed rows in the window at the last read; their series have no samples.",
                                value=float(snapshot.malformed_rows))
        if snapshot.refreshed_at is not None:
            yield GaugeMetricFamily("journal_exporter_last_refresh_timestamp_seconds",
                                    "Unix time of the last read attempt.", value=snapshot.refreshed_at.timestamp())


def parse_args(argv: list[str]) -> ExporterConfig:
    parser = argparse.ArgumentParser(prog="model-runtime journal-exporter", description=__doc__.split("\n\n")[0])
    parser.add_argument("--db-url", default=os.environ.get(DB_URL_ENV, "sqlite:///journal.db"),
                        help=f"SQLAlchemy URL of the journal (default: ${DB_URL_ENV}, else sqlite:///journal.db)")
    parser.add_argument("--window", default="48h", help="rolling window of closed trades (default 48h)")
    parser.add_argument("--max-staleness", default="2h",
                        help="a series whose newest close is older than this has no samples (default 2h)")
    parser.add_argument("--refresh-interval", default="15s", help="how often the journal is read (default 15s)")
    parser.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")  # noqa: S104
    parser.add_argument("--port", type=int, default=9103, help="port of /metrics (default 9103)")
    args = parser.parse_args(argv)
    try:
        return ExporterConfig(db_url=args.db_url, window=args.window, max_staleness=args.max_staleness,
                              refresh_interval=args.refresh_interval, host=args.host, port=args.port)
    except ValueError as error:
        parser.error(str(error))


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = parse_args(argv)
    engine = sa.create_engine(config.db_url, pool_pre_ping=True)
    collector = JournalCollector(engine, config.window, config.max_staleness)
    registry = CollectorRegistry()
    registry.register(collector)
    server, _ = start_http_server(config.port, addr=config.host, registry=registry)
    log.info("journal exporter on %s:%d reading %s (window %s, max staleness %s)", config.host,
             server.server_port, engine.url.render_as_string(hide_password=True), config.window, config.max_staleness)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set():
        collector.refresh()
        stop.wait(config.refresh_interval.total_seconds())
    server.shutdown()
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
