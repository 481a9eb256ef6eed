"""The journal exporter against real databases (SQLite and PostgreSQL): what /metrics says
for a healthy, empty, late, malformed and unreachable journal."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from devstack.process import free_port
from model_runtime.outcomes.exporter import JournalCollector, parse_duration
from model_runtime.outcomes.journal import TRADES, ClosedTrade, create_journal, record_trades

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
OUTCOMES = ("expectancy_net_realized", "expectancy_net_stddev", "n_trades", "sortino_ratio", "live_f1_buy")


def closed(symbol: str, variant: str, pnl: float, age: timedelta, *, predicted: bool | None = None,
           actual: bool | None = None, now: datetime = NOW) -> ClosedTrade:
    return ClosedTrade(symbol=symbol, variant=variant, opened_at=now - age - timedelta(minutes=20),
                       closed_at=now - age, side="long", pnl_net=pnl, predicted_buy=predicted, actual_buy=actual)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition as {(name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(collector: JournalCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    return samples(generate_latest(registry).decode())


def scrape_after_refresh(collector: JournalCollector) -> dict:
    collector.refresh()
    return scrape(collector)


def series(values: dict, name: str) -> dict[tuple[str, str], float]:
    return {(dict(labels)["symbol"], dict(labels)["variant"]): v for (n, labels), v in values.items() if n == name}


@pytest.fixture
def engine(journal_url: str):
    engine = sa.create_engine(journal_url)
    yield engine
    engine.dispose()


def exporter(engine: sa.Engine, window: str = "48h", max_staleness: str = "2h") -> JournalCollector:
    return JournalCollector(engine, parse_duration(window), parse_duration(max_staleness), clock=lambda: NOW)


def test_outcomes_per_symbol_and_variant_over_the_window(engine: sa.Engine) -> None:
    create_journal(engine)
    record_trades(engine, [
        closed("BTCUSDC", "candidate", 4.0, timedelta(hours=1), predicted=True, actual=True),
        closed("BTCUSDC", "candidate", -2.0, timedelta(hours=3), predicted=True, actual=False),
        closed("BTCUSDC", "candidate", 1.0, timedelta(hours=30), predicted=False, actual=True),
        closed("BTCUSDC", "candidate", -50.0, timedelta(hours=49)),  # outside the 48h window
        closed("BTCUSDC", "baseline", 1.0, timedelta(minutes=10)),
        closed("BTCUSDC", "baseline", 2.0, timedelta(minutes=20)),
    ])
    values = scrape_after_refresh(exporter(engine))
    assert series(values, "n_trades") == {("BTCUSDC", "candidate"): 3, ("BTCUSDC", "baseline"): 2}
    assert series(values, "expectancy_net_realized") == {("BTCUSDC", "candidate"): pytest.approx(1.0),
                                                         ("BTCUSDC", "baseline"): pytest.approx(1.5)}
    assert series(values, "expectancy_net_stddev")[("BTCUSDC", "candidate")] == pytest.approx(3.0)
    # downside deviation sqrt(4 / 3); the baseline never lost, so it has no Sortino sample
    assert series(values, "sortino_ratio") == {("BTCUSDC", "candidate"): pytest.approx(1.0 / (4 / 3) ** 0.5)}
    # tp 1, fp 1, fn 1 -> F1 0.5; the baseline has no known outcome, so no sample
    assert series(values, "live_f1_buy") == {("BTCUSDC", "candidate"): pytest.approx(0.5)}
    assert values[("journal_exporter_up", ())] == 1.0


def test_empty_journal_exports_no_outcome_sample(engine: sa.Engine) -> None:
    create_journal(engine)
    values = scrape_after_refresh(exporter(engine))
    assert not [key for key in values if key[0] in OUTCOMES]
    assert values[("journal_exporter_up", ())] == 1.0


def test_late_series_loses_its_samples_the_fresh_one_keeps_them(engine: sa.Engine) -> None:
    create_journal(engine)
    record_trades(engine, [closed("ETHUSDC", "candidate", 1.0, timedelta(hours=3)),
                           closed("ETHUSDC", "baseline", 1.0, timedelta(minutes=30))])
    values = scrape_after_refresh(exporter(engine, max_staleness="2h"))
    for name in ("expectancy_net_realized", "n_trades"):
        assert set(series(values, name)) == {("ETHUSDC", "baseline")}


def test_malformed_rows_blank_their_series_only(engine: sa.Engine) -> None:
    create_journal(engine)
    record_trades(engine, [closed("SOLUSDC", "candidate", 1.0, timedelta(hours=1)),
                           closed("SOLUSDC", "candidate", float("nan"), timedelta(hours=2)),
                           closed("BNBUSDC", "candidate", -1.0, timedelta(hours=1))])
    with engine.begin() as connection:  # closed before it opened; and a side nobody trades
        connection.execute(TRADES.insert(), [
            {"symbol": "XRPUSDC", "variant": "candidate", "opened_at": NOW - timedelta(hours=1),
             "closed_at": NOW - timedelta(hours=2), "side": "long", "pnl_net": 1.0},
            {"symbol": "XRPUSDC", "variant": "baseline", "opened_at": NOW - timedelta(hours=2),
             "closed_at": NOW - timedelta(hours=1), "side": "sideways", "pnl_net": 1.0},
        ])
    values = scrape_after_refresh(exporter(engine))
    assert set(series(values, "expectancy_net_realized")) == {("BNBUSDC", "candidate")}
    assert values[("journal_exporter_malformed_rows", ())] == 3.0


def test_sqlite_text_in_a_number_column_is_malformed_not_a_crash(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'journal.db'}")
    create_journal(engine)
    record_trades(engine, [closed("BTCUSDC", "baseline", 2.0, timedelta(hours=1))])
    with engine.begin() as connection:  # SQLite stores whatever it is given
        connection.execute(sa.text(
            "INSERT INTO trades (symbol, variant, opened_at, closed_at, side, pnl_net) "
            "VALUES ('ETHUSDC', 'baseline', 'not a time', '2026-01-10 11:00:00.000000', 'long', 'lots')"))
    values = scrape_after_refresh(exporter(engine))
    assert set(series(values, "n_trades")) == {("BTCUSDC", "baseline")}
    assert values[("journal_exporter_malformed_rows", ())] == 1.0
    engine.dispose()


def test_database_error_drops_every_outcome_and_recovers(engine: sa.Engine) -> None:
    collector = exporter(engine)
    values = scrape_after_refresh(collector)  # no table yet: the read fails
    assert values[("journal_exporter_up", ())] == 0.0
    assert not [key for key in values if key[0] in OUTCOMES]

    create_journal(engine)
    record_trades(engine, [closed("BTCUSDC", "candidate", -1.0, timedelta(minutes=5))])
    values = scrape_after_refresh(collector)
    assert values[("journal_exporter_up", ())] == 1.0
    assert series(values, "expectancy_net_realized") == {("BTCUSDC", "candidate"): -1.0}

    with engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE trades"))
    values = scrape_after_refresh(collector)  # the last good values are not served on
    assert values[("journal_exporter_up", ())] == 0.0
    assert not series(values, "expectancy_net_realized")


def http_samples(url: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                values = samples(response.read().decode())
            if ("journal_exporter_last_refresh_timestamp_seconds", ()) in values:
                return values
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no refreshed /metrics at {url}")
        time.sleep(0.2)


def test_counters_are_the_journals_totals_each_trade_once_and_survive_an_outage(engine: sa.Engine) -> None:
    create_journal(engine)
    clock = [NOW]
    collector = JournalCollector(engine, parse_duration("1h"), parse_duration("2h"), clock=lambda: clock[0])
    record_trades(engine, [closed("BTCUSDC", "baseline", 9.0, timedelta(days=30))])  # long before the exporter
    values = scrape_after_refresh(collector)
    # the journal's totals, not the process's; the symbol is known, so both variants are there
    assert series(values, "trades_closed_total") == {("BTCUSDC", "baseline"): 1.0, ("BTCUSDC", "candidate"): 0.0}

    after = NOW + timedelta(minutes=10)
    record_trades(engine, [closed("BTCUSDC", "candidate", 4.0, timedelta(minutes=2), now=after),
                           closed("BTCUSDC", "candidate", -2.0, timedelta(minutes=1), now=after),
                           closed("BTCUSDC", "baseline", 1.0, timedelta(minutes=1), now=after)])
    for minutes in (10, 11, 12):  # three refreshes see the same trades in their window
        clock[0] = NOW + timedelta(minutes=minutes)
        values = scrape_after_refresh(collector)
    record_trades(engine, [closed("BTCUSDC", "candidate", 3.0, timedelta(days=2), now=after)])  # journaled late
    values = scrape_after_refresh(collector)
    candidate = ("BTCUSDC", "candidate")
    assert series(values, "trades_closed_total")[candidate] == 3.0
    assert series(values, "trade_pnl_net_profit_total")[candidate] == 7.0
    assert series(values, "trade_pnl_net_loss_total")[candidate] == 2.0
    assert series(values, "trade_pnl_net_squared_total")[candidate] == 29.0
    assert series(values, "trade_pnl_net_loss_squared_total")[candidate] == 4.0
    assert series(values, "trades_closed_total")[("BTCUSDC", "baseline")] == 2.0

    with engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE trades"))
    values = scrape_after_refresh(collector)
    assert values[("journal_exporter_up", ())] == 0.0
    assert series(values, "trades_closed_total")[candidate] == 3.0  # a counter never goes back to nothing


COUNTERS = ("trades_closed_total", "trade_pnl_net_profit_total", "trade_pnl_net_loss_total",
            "trade_pnl_net_squared_total", "trade_pnl_net_loss_squared_total")


def counters(values: dict) -> dict:
    return {name: series(values, name) for name in COUNTERS}


def test_a_restarted_exporter_resumes_the_same_totals_to_the_bit(engine: sa.Engine) -> None:
    """Counted in another order (a row committed after a higher id was read), the float sums of
    1e16, 1 and 1 differ (1e16 against 1e16 + 2); the exact totals do not."""
    create_journal(engine)
    clock = [NOW]
    running = JournalCollector(engine, parse_duration("1h"), parse_duration("2h"), clock=lambda: clock[0])
    with engine.begin() as connection:  # ids 1 and 3 first; id 2 commits after the exporter has read id 3
        connection.execute(TRADES.insert(), [
            {"id": row_id, "symbol": "ETHUSDC", "variant": "candidate", "opened_at": NOW - timedelta(minutes=9),
             "closed_at": NOW - timedelta(minutes=row_id), "side": "long", "pnl_net": pnl}
            for row_id, pnl in ((1, 1.0), (3, 1e16))])
    scrape_after_refresh(running)
    with engine.begin() as connection:
        connection.execute(TRADES.insert(), [{"id": 2, "symbol": "ETHUSDC", "variant": "candidate",
                                              "opened_at": NOW - timedelta(minutes=9),
                                              "closed_at": NOW - timedelta(minutes=2), "side": "long",
                                              "pnl_net": 1.0}])
    clock[0] = NOW + timedelta(seconds=15)
    before = counters(scrape_after_refresh(running))
    restarted = JournalCollector(engine, parse_duration("1h"), parse_duration("2h"), clock=lambda: clock[0])
    after = counters(scrape_after_refresh(restarted))
    assert before == after
    assert after["trade_pnl_net_profit_total"][("ETHUSDC", "candidate")] == 1e16 + 2
    assert after["trades_closed_total"][("ETHUSDC", "candidate")] == 3.0


def test_the_command_serves_metrics_and_outlives_database_errors(journal_url: str, tmp_path: Path) -> None:
    """The real process: `python -m model_runtime.outcomes.exporter`, scraped over HTTP."""
    engine = sa.create_engine(journal_url)
    create_journal(engine)
    now = datetime.now(UTC)
    record_trades(engine, [closed("BTCUSDC", "candidate", 3.0, timedelta(minutes=1), now=now),
                           closed("BTCUSDC", "candidate", -1.0, timedelta(minutes=2), now=now)])
    port = free_port()
    log = (tmp_path / "exporter.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "model_runtime.outcomes.exporter", "--window", "1h", "--max-staleness", "30m",
         "--refresh-interval", "1s", "--host", "127.0.0.1", "--port", str(port)],
        env={"MODELROLLOUT_JOURNAL_DB_URL": journal_url, "PATH": "/usr/bin:/bin"}, stdout=log, stderr=log)
    try:
        values = http_samples(f"http://127.0.0.1:{port}/metrics")
        assert series(values, "expectancy_net_realized") == {("BTCUSDC", "candidate"): 1.0}
        assert series(values, "n_trades") == {("BTCUSDC", "candidate"): 2.0}

        with engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE trades"))
        deadline = time.monotonic() + 30
        while http_samples(f"http://127.0.0.1:{port}/metrics")[("journal_exporter_up", ())] != 0.0:
            assert time.monotonic() < deadline, "the exporter never noticed the missing table"
            time.sleep(0.5)
        assert process.poll() is None, "a database error must not stop the exporter"
        assert not series(http_samples(f"http://127.0.0.1:{port}/metrics"), "expectancy_net_realized")
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0
        log.close()
        engine.dispose()
    assert "cannot read the trade journal" in (tmp_path / "exporter.log").read_text()
