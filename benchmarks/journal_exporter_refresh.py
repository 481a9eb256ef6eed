"""What a refresh of the journal exporter costs on a large journal, on a real PostgreSQL.

The counters are the journal's totals, so an exporter's first refresh counts every closed trade
once (`journal_exporter_first_refresh`); after that a refresh reads only the 48 h window and the
rows new since the last one (`journal_exporter_refresh_median`, 20 refreshes, 10 new trades
before each). The journal: 1,000,000 trades (quick: 50,000), one every 30 s over the past
(about a year), 5 symbols x 2 variants, so the window holds 5,760 of them.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from devstack.bench import emit
from devstack.postgres import start_postgres
from model_runtime.outcomes.exporter import JournalCollector
from model_runtime.outcomes.journal import ClosedTrade, create_journal, record_trades

QUICK = os.environ.get("BENCH_QUICK") == "1"
TRADES = 50_000 if QUICK else 1_000_000
SYMBOLS = ["BTCUSDC", "ETHUSDC", "SOLUSDC", "BNBUSDC", "XRPUSDC"]
REFRESHES = 20


def fill(engine: sa.Engine, trades: int) -> None:
    """One trade every 30 s back from now, written by PostgreSQL itself (generate_series)."""
    with engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO trades (symbol, variant, opened_at, closed_at, side, pnl_net) "
            "SELECT (CAST(:symbols AS text[]))[1 + i % 5], CASE WHEN i % 2 = 0 THEN 'baseline' ELSE 'candidate' END, "
            "now() - i * interval '30 seconds' - interval '1 minute', now() - i * interval '30 seconds', 'long', "
            "(random() - 0.45) * 10 FROM generate_series(1, :n) AS i"), {"n": trades, "symbols": SYMBOLS})
        connection.execute(sa.text("ANALYZE trades"))


def main() -> int:
    server = start_postgres()
    engine = sa.create_engine(server.url)
    try:
        create_journal(engine)
        fill(engine, TRADES)
        print(f"journal of {TRADES} trades written", file=sys.stderr)
        collector = JournalCollector(engine, timedelta(hours=48), timedelta(hours=2))
        started = time.perf_counter()
        collector.refresh()
        emit("journal_exporter_first_refresh", time.perf_counter() - started, "s", 30.0, "lower")
        took = []
        for _ in range(REFRESHES):
            now = datetime.now(UTC)
            record_trades(engine, [ClosedTrade(symbol="BTCUSDC", variant="candidate", opened_at=now - timedelta(
                minutes=1), closed_at=now, side="long", pnl_net=1.0) for _ in range(10)])
            started = time.perf_counter()
            snapshot = collector.refresh()
            took.append(time.perf_counter() - started)
            assert snapshot.up
        emit("journal_exporter_refresh_median", statistics.median(took), "s", 0.5, "lower")
    finally:
        engine.dispose()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
