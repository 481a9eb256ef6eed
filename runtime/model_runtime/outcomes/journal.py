"""The trade journal: its table, and the outcome statistics its closed trades support.

The journal is where the trading side records what the models' signals earned; the rollout's
outcome gates (expectancy, Sortino, live F1 of the buy class) are computed from it alone.

Table `trades` (one row per position; create it with `create_journal`):

    id             integer, primary key
    symbol         varchar(20), not null    e.g. BTCUSDC (^[A-Z0-9]{2,20}$)
    variant        varchar(32), not null    the model variant that produced the signal: baseline | candidate
    opened_at      timestamp (UTC), not null
    closed_at      timestamp (UTC), null while the position is open
    side           varchar(8), not null     long | short
    pnl_net        double, null while open  realised PnL after fees and slippage, in quote currency
    predicted_buy  boolean, null            the model's buy call that opened the position
    actual_buy     boolean, null            the realised buy label, once the outcome is known

Statistics are per (symbol, variant) over closed trades only: `OutcomeStats` over a window, and
`OutcomeTotals`, running sums that only grow (Prometheus counters). A statistic that the data does
not define (a standard deviation of one trade, a Sortino ratio without a losing trade, an F1
without a single buy call or buy outcome) is None, never a made-up number. `read_closed` streams
the rows a refresh needs: the window's, and those written since the last read.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

METADATA = sa.MetaData()

TRADES = sa.Table(
    "trades",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("symbol", sa.String(20), nullable=False),
    sa.Column("variant", sa.String(32), nullable=False),
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("side", sa.String(8), nullable=False),
    sa.Column("pnl_net", sa.Float, nullable=True),
    sa.Column("predicted_buy", sa.Boolean, nullable=True),
    sa.Column("actual_buy", sa.Boolean, nullable=True),
    sa.Index("ix_trades_closed_at", "closed_at"),
)

SYMBOL = re.compile(r"^[A-Z0-9]{2,20}$")
VARIANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
SIDES = frozenset({"long", "short"})
# A close time further ahead than this is a broken clock or a broken row, and would make its
# series look fresh for ever.
CLOCK_SKEW = timedelta(minutes=5)

SeriesKey = tuple[str, str]
"""(symbol, variant)"""


@dataclass(frozen=True)
class ClosedTrade:
    symbol: str
    variant: str
    opened_at: datetime
    closed_at: datetime
    side: str
    pnl_net: float
    predicted_buy: bool | None = None
    actual_buy: bool | None = None
    id: int | None = None
    """The journal row's id once read back (None before it is written)."""

    @property
    def key(self) -> SeriesKey:
        return (self.symbol, self.variant)


@dataclass(frozen=True)
class MalformedRow:
    """A row that cannot be trusted; `key` is None when it cannot even be attributed to a series."""

    key: SeriesKey | None
    reason: str


@dataclass(frozen=True)
class OutcomeStats:
    n_trades: int
    expectancy: float
    """Mean net PnL per closed trade."""
    stddev: float | None
    """Sample standard deviation of the net PnL (None below two trades)."""
    sortino: float | None
    """Mean net PnL over the downside deviation (target 0); None without a losing trade."""
    f1_buy: float | None
    """F1 of the buy class over trades whose outcome is known; None where undefined."""


_EXACT_BITS = 1074
"""Every finite float is an integer multiple of 2**-1074 (the smallest subnormal)."""


def _exact(value: float) -> int:
    """`value` as an integer count of 2**-1074: sums of these are exact, whatever their order."""
    numerator, denominator = value.as_integer_ratio()  # the denominator is a power of two
    return numerator << (_EXACT_BITS + 1 - denominator.bit_length())


@dataclass(frozen=True)
class OutcomeTotals:
    """Running sums of one series' net PnL, each non-decreasing so it can be a Prometheus counter.

    Any window's mean, standard deviation and Sortino ratio follow from their increases:
    mean = (profit - loss) / trades, variance = (squared - trades * mean^2) / (trades - 1),
    downside deviation = sqrt(loss_squared / trades).

    The sums are kept exact (integers of 2**-1074) and rounded once when read, so they do not
    depend on the order the trades were added: an exporter that recounts the journal after a
    restart, in id order, serves the very value the one before it served. A float running sum
    could come out one ulp lower, and Prometheus takes any decrease for a counter reset.
    """

    trades: int = 0
    exact_profit: int = 0
    exact_loss: int = 0
    exact_squared: int = 0
    exact_loss_squared: int = 0

    @property
    def profit(self) -> float:
        """Sum of the PnL of winning trades."""
        return self.exact_profit / (1 << _EXACT_BITS)

    @property
    def loss(self) -> float:
        """Sum of -PnL of losing trades (positive)."""
        return self.exact_loss / (1 << _EXACT_BITS)

    @property
    def squared(self) -> float:
        return self.exact_squared / (1 << _EXACT_BITS)

    @property
    def loss_squared(self) -> float:
        return self.exact_loss_squared / (1 << _EXACT_BITS)

    def plus(self, pnl: float) -> OutcomeTotals:
        square = _exact(pnl * pnl)
        return OutcomeTotals(trades=self.trades + 1, exact_profit=self.exact_profit + _exact(max(pnl, 0.0)),
                             exact_loss=self.exact_loss + _exact(max(-pnl, 0.0)),
                             exact_squared=self.exact_squared + square,
                             exact_loss_squared=self.exact_loss_squared + (square if pnl < 0 else 0))


def create_journal(engine: sa.Engine) -> None:
    """Create the `trades` table (and its index) if it does not exist."""
    METADATA.create_all(engine)


def record_trades(engine: sa.Engine, trades: Iterable[ClosedTrade]) -> int:
    """Append closed trades (timestamps stored in UTC); returns how many were written."""
    rows = [
        {"symbol": t.symbol, "variant": t.variant, "opened_at": _utc(t.opened_at), "closed_at": _utc(t.closed_at),
         "side": t.side, "pnl_net": t.pnl_net, "predicted_buy": t.predicted_buy, "actual_buy": t.actual_buy}
        for t in trades
    ]
    if rows:
        with engine.begin() as connection:
            connection.execute(TRADES.insert(), rows)
    return len(rows)


def read_closed_since(engine: sa.Engine, since: datetime, now: datetime) -> list[ClosedTrade | MalformedRow]:
    """Closed trades with `closed_at >= since`, each validated; database errors propagate."""
    with engine.connect() as connection:
        return [row for _, row, _ in read_closed(connection, since, now, after_id=None)]


def read_closed(connection: sa.Connection, since: datetime, now: datetime, *, after_id: int | None,
                everything: bool = False) -> Iterator[tuple[int, ClosedTrade | MalformedRow, bool]]:
    """(id, the row validated, whether it closed at or after `since`) of closed rows, streamed.

    Which rows: those that closed since `since`, and those with an id above `after_id` (written
    since a read that saw ids up to it, whenever they closed); `everything`: every closed row.
    Both filters are index lookups (`ix_trades_closed_at`, the primary key), so a refresh costs
    the window and what is new, not the journal's length.

    The columns are read untyped (no SQLAlchemy result processing): a SQLite journal may hold
    any value in any column, and a bad value must become a MalformedRow for its own series
    rather than an exception that blinds every series.
    """
    raw = [sa.type_coerce(column, sa.types.NullType()).label(column.name) for column in TRADES.c if column.name != "id"]
    recent = TRADES.c.closed_at >= _utc(since)
    query = sa.select(TRADES.c.id, *raw, sa.case((recent, True), else_=False).label("in_window")).where(
        TRADES.c.closed_at.is_not(None))
    if not everything:
        query = query.where(recent if after_id is None else sa.or_(recent, TRADES.c.id > after_id))
    for row in connection.execution_options(yield_per=10_000).execute(query):
        yield row.id, validate_row(row._mapping, now), bool(row.in_window)


def validate_row(row: Mapping[str, Any], now: datetime) -> ClosedTrade | MalformedRow:
    symbol, variant = row.get("symbol"), row.get("variant")
    if not (isinstance(symbol, str) and SYMBOL.match(symbol) and isinstance(variant, str) and VARIANT.match(variant)):
        return MalformedRow(None, f"bad symbol/variant {symbol!r}/{variant!r}")
    key = (symbol, variant)
    opened_at, closed_at = _timestamp(row.get("opened_at")), _timestamp(row.get("closed_at"))
    if opened_at is None or closed_at is None:
        return MalformedRow(key, f"bad timestamps {row.get('opened_at')!r} -> {row.get('closed_at')!r}")
    if closed_at < opened_at:
        return MalformedRow(key, f"closed {closed_at.isoformat()} before opened {opened_at.isoformat()}")
    if closed_at > _utc(now) + CLOCK_SKEW:
        return MalformedRow(key, f"closed in the future ({closed_at.isoformat()})")
    side = row.get("side")
    if side not in SIDES:
        return MalformedRow(key, f"bad side {side!r}")
    pnl = row.get("pnl_net")
    if isinstance(pnl, bool) or not isinstance(pnl, int | float) or not math.isfinite(pnl):
        return MalformedRow(key, f"bad pnl_net {pnl!r}")
    try:
        predicted, actual = _flag(row.get("predicted_buy")), _flag(row.get("actual_buy"))
    except ValueError as error:
        return MalformedRow(key, str(error))
    row_id = row.get("id")
    return ClosedTrade(symbol=symbol, variant=variant, opened_at=opened_at, closed_at=closed_at, side=side,
                       pnl_net=float(pnl), predicted_buy=predicted, actual_buy=actual,
                       id=row_id if isinstance(row_id, int) else None)


def outcome_stats(
    rows: Iterable[ClosedTrade | MalformedRow], now: datetime, max_staleness: timedelta
) -> tuple[dict[SeriesKey, OutcomeStats], list[MalformedRow]]:
    """Statistics per series that is whole and fresh, and the malformed rows found.

    A series with any malformed row is left out entirely (its other rows may be just as
    wrong), and so is a late one, whose newest close is older than `max_staleness`: the gates
    that read it then go inconclusive instead of judging old or broken data.
    """
    trades: dict[SeriesKey, list[ClosedTrade]] = defaultdict(list)
    malformed: list[MalformedRow] = []
    for row in rows:
        if isinstance(row, MalformedRow):
            malformed.append(row)
        else:
            trades[row.key].append(row)
    broken = {row.key for row in malformed}
    fresh_after = _utc(now) - max_staleness
    return {
        key: summarize(series)
        for key, series in trades.items()
        if key not in broken and max(t.closed_at for t in series) >= fresh_after
    }, malformed


def summarize(trades: Sequence[ClosedTrade]) -> OutcomeStats:
    """Outcome statistics of one series' closed trades (at least one)."""
    pnl = [t.pnl_net for t in trades]
    mean = statistics.fmean(pnl)
    downside = math.sqrt(statistics.fmean(min(p, 0.0) ** 2 for p in pnl))
    known = [(t.predicted_buy, t.actual_buy) for t in trades if t.predicted_buy is not None and t.actual_buy is not None]
    true_pos = sum(1 for predicted, actual in known if predicted and actual)
    false_pos = sum(1 for predicted, actual in known if predicted and not actual)
    false_neg = sum(1 for predicted, actual in known if actual and not predicted)
    f1_denominator = 2 * true_pos + false_pos + false_neg
    return OutcomeStats(
        n_trades=len(pnl),
        expectancy=mean,
        stddev=statistics.stdev(pnl) if len(pnl) >= 2 else None,
        sortino=mean / downside if downside > 0 else None,
        f1_buy=2 * true_pos / f1_denominator if f1_denominator else None,
    )


def _flag(value: Any) -> bool | None:
    """A boolean column as read: native bool (PostgreSQL), 0/1 (SQLite) or NULL."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"bad buy flag {value!r}")


def _timestamp(value: Any) -> datetime | None:
    """A timestamp as read: datetime (PostgreSQL) or ISO text (SQLite); naive means UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    return _utc(value) if isinstance(value, datetime) else None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
