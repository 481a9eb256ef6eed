"""The per-trade outcome queries the product recommends for gates and rollback triggers.

They read the chart's recording rules (`charts/modelrollout/files/recording-rules.yaml`): the
journal exporter's counters summed by (symbol, variant). A gate's `{window}` is cut to the time
its stage has run, so its statistic cannot be one recorded over a fixed window; it is computed
here from counter growth over exactly `{window}`, taken as `c - c offset {window}` (not
increase(), whose edge extrapolation differs per young counter; docs/semantics.md). Over a
standard window (1h, 24h, 48h, 7d) the same statistics are recorded as they are, e.g.
`symbol_variant:trade_pnl_net:mean_per_trade48h`, for triggers, alerts and dashboards.

A window without a trade, across a counter reset, or (for the spread) with one trade only has no
sample: the gates call that no data, never a verdict.
"""

from __future__ import annotations

__all__ = ["COUNTERS", "STANDARD_WINDOWS", "per_trade_queries", "recorded_counter", "sequential_sums"]

COUNTERS = ("trades_closed_total", "trade_pnl_net_profit_total", "trade_pnl_net_loss_total",
            "trade_pnl_net_squared_total", "trade_pnl_net_loss_squared_total")
STANDARD_WINDOWS = ("1h", "24h", "48h", "7d")


def recorded_counter(counter: str) -> str:
    """The recording rule that sums one exporter counter by (symbol, variant)."""
    if counter not in COUNTERS:
        raise ValueError(f"{counter!r} is not a journal exporter counter; known: {', '.join(COUNTERS)}")
    return f"symbol_variant:{counter}:sum"


def _growth(counter: str, variant: str) -> str:
    series = recorded_counter(counter) + '{symbol=~"{symbols}",variant="' + variant + '"}'
    return f"({series} - {series} offset {{window}})"


def per_trade_queries(variant: str = "{variant}") -> dict[str, str]:
    """Query templates (with `{symbols}` and `{window}`) of each statistic per trade over exactly the
    window: `count` (closed trades), `expectancy` (net PnL per trade), `stddev` (its sample standard
    deviation) and `sortino` (mean over downside deviation).

    `variant` is `{variant}` for a comparison gate (rendered once per variant), else e.g. `candidate`.
    """
    sums = sequential_sums(variant)
    trades, pnl, squared = sums["countQuery"], sums["sumQuery"], sums["sumSquaresQuery"]
    loss_squared = _growth("trade_pnl_net_loss_squared_total", variant)
    return {"count": trades,
            "expectancy": f"{pnl} / {trades}",
            "stddev": f"sqrt(clamp_min(({squared} - {pnl} ^ 2 / {trades}) / (({trades} - 1) > 0), 0))",
            "sortino": f"{pnl} / {trades} / sqrt({loss_squared} / {trades})"}


def sequential_sums(variant: str = "{variant}") -> dict[str, str]:
    """A sequential test's three queries (its `countQuery`, `sumQuery`, `sumSquaresQuery`): trades, net PnL
    and its squares, as counter growth over `{window}`, which the operator sets to the time since the stage
    started and to each batch-means block."""
    pnl = f'({_growth("trade_pnl_net_profit_total", variant)} - {_growth("trade_pnl_net_loss_total", variant)})'
    return {"countQuery": f'({_growth("trades_closed_total", variant)} > 0)', "sumQuery": pnl,
            "sumSquaresQuery": _growth("trade_pnl_net_squared_total", variant)}
