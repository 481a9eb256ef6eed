"""The journal's pure parts: row validation and the outcome statistics (no database)."""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime, timedelta

import pytest

from model_runtime.outcomes.journal import ClosedTrade, MalformedRow, outcome_stats, summarize, validate_row

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def trade(pnl: float, *, symbol: str = "BTCUSDC", variant: str = "candidate", age: timedelta = timedelta(hours=1),
          predicted: bool | None = None, actual: bool | None = None) -> ClosedTrade:
    closed = NOW - age
    return ClosedTrade(symbol=symbol, variant=variant, opened_at=closed - timedelta(minutes=30), closed_at=closed,
                       side="long", pnl_net=pnl, predicted_buy=predicted, actual_buy=actual)


def raw(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {"symbol": "ETHUSDC", "variant": "baseline", "opened_at": "2026-01-10 10:00:00.000000",
                              "closed_at": "2026-01-10 11:00:00.000000", "side": "short", "pnl_net": 1.5,
                              "predicted_buy": 1, "actual_buy": 0}
    row.update(overrides)
    return row


def test_summary_statistics_match_their_definitions() -> None:
    pnl = [3.0, -1.0, 2.0, -2.0, 0.5]
    stats = summarize([trade(p) for p in pnl])
    assert stats.n_trades == 5
    assert stats.expectancy == pytest.approx(0.5)
    assert stats.stddev == pytest.approx(statistics.stdev(pnl))
    downside = math.sqrt((1.0 + 4.0) / 5)
    assert stats.sortino == pytest.approx(0.5 / downside)


def test_undefined_statistics_are_none_not_zero() -> None:
    stats = summarize([trade(2.0)])
    assert stats.expectancy == 2.0
    assert stats.stddev is None  # one trade has no sample deviation
    assert stats.sortino is None  # no losing trade: no downside deviation
    assert stats.f1_buy is None  # no outcome known yet


def test_live_f1_of_the_buy_class_counts_only_known_outcomes() -> None:
    trades = [trade(1.0, predicted=True, actual=True)] * 3 + [
        trade(-1.0, predicted=True, actual=False),
        trade(1.0, predicted=False, actual=True),
        trade(1.0, predicted=False, actual=False),
        trade(1.0, predicted=True, actual=None),  # outcome unknown: not counted
    ]
    # tp 3, fp 1, fn 1 -> 2*3 / (6 + 1 + 1)
    assert summarize(trades).f1_buy == pytest.approx(0.75)
    assert summarize([trade(1.0, predicted=False, actual=False)]).f1_buy is None


def test_sqlite_and_postgres_shapes_of_a_row_validate_alike() -> None:
    sqlite_row = validate_row(raw(), NOW)
    postgres_row = validate_row(raw(opened_at=datetime(2026, 1, 10, 10, tzinfo=UTC),
                                    closed_at=datetime(2026, 1, 10, 11, tzinfo=UTC),
                                    predicted_buy=True, actual_buy=False), NOW)
    assert isinstance(sqlite_row, ClosedTrade)
    assert sqlite_row == postgres_row
    assert sqlite_row.closed_at.tzinfo is not None


@pytest.mark.parametrize(("overrides", "attributed"), [
    ({"symbol": None}, False),
    ({"symbol": "btc/usdc"}, False),
    ({"variant": ""}, False),
    ({"closed_at": "yesterday"}, True),
    ({"opened_at": None}, True),
    ({"closed_at": "2026-01-10 09:00:00"}, True),  # before it opened
    ({"closed_at": "2026-01-11 09:00:00", "opened_at": "2026-01-11 08:00:00"}, True),  # in the future
    ({"side": "sideways"}, True),
    ({"pnl_net": float("nan")}, True),
    ({"pnl_net": float("inf")}, True),
    ({"pnl_net": "12.5"}, True),  # SQLite keeps text in a REAL column
    ({"pnl_net": True}, True),
    ({"predicted_buy": 7}, True),
])
def test_malformed_rows_are_named_and_attributed_when_possible(overrides: dict[str, object], attributed: bool) -> None:
    result = validate_row(raw(**overrides), NOW)
    assert isinstance(result, MalformedRow)
    assert (result.key == ("ETHUSDC", "baseline")) is attributed
    assert result.reason


def test_a_malformed_or_late_series_has_no_statistics_while_the_others_do() -> None:
    rows = [
        trade(1.0, symbol="BTCUSDC"), trade(-0.5, symbol="BTCUSDC"),
        trade(2.0, symbol="ETHUSDC"), MalformedRow(("ETHUSDC", "candidate"), "bad pnl_net nan"),
        trade(1.0, symbol="SOLUSDC", age=timedelta(hours=5)),  # newest close 5h ago: late
        MalformedRow(None, "bad symbol/variant None/None"),  # cannot be attributed: harms no series
    ]
    stats, malformed = outcome_stats(rows, NOW, max_staleness=timedelta(hours=2))
    assert set(stats) == {("BTCUSDC", "candidate")}
    assert stats[("BTCUSDC", "candidate")].n_trades == 2
    assert len(malformed) == 2


def test_an_empty_journal_has_no_statistics() -> None:
    assert outcome_stats([], NOW, timedelta(hours=2)) == ({}, [])
