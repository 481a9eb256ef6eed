"""The replay of a plan's rules over the baseline's history (pure: the history is a function of the query)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import yaml

from modelrollout.observation import RangeResult
from modelrollout.replay import as_baseline, replay_stage, share, window_starts
from modelrollout.spec import ModelRolloutSpec

HERE = Path(__file__).resolve().parent
EXAMPLE = ModelRolloutSpec.model_validate(yaml.safe_load((HERE.parents[1] / "examples" / "focal-loss-rollout.yaml")
                                                         .read_text())["spec"])
AS_WRITTEN = ModelRolloutSpec.model_validate(yaml.safe_load((HERE / "plan_as_written.yaml").read_text())["spec"])
END = datetime(2026, 2, 1, tzinfo=UTC)
START = END - timedelta(days=30)
STEP = timedelta(minutes=10)


def baseline_history(mean: float, per_step: float = 0.15, seed: int = 0):
    """Per-step growth of trades, PnL sum and squares, and the plan's gauges, for a baseline of per-trade `mean`."""
    rng = np.random.default_rng(seed)
    times = np.arange(START.timestamp(), END.timestamp() + 1, STEP.total_seconds())
    trades = rng.poisson(per_step, times.size).astype(float)
    pnl = np.array([rng.normal(mean, 1.0, int(k)).sum() for k in trades])
    squares = np.array([float(k) for k in trades]) * (1 + mean ** 2)
    asked: list[str] = []

    def history(query: str, start: datetime, end: datetime, step_s: float) -> RangeResult:
        asked.append(query)
        assert 'variant="candidate"' not in query
        if "trade_pnl_net_squared_total" in query:
            values = squares
        elif "trade_pnl_net_profit_total" in query:
            values = pnl
        elif "trades_closed_total" in query:
            values = trades
        elif "n_trades" in query:
            values = np.full(times.size, 50.0)
        else:  # the plan's 48 h expectancy gauge: a per-trade mean over 48 h
            window = int(48 * 3600 / step_s)
            sums, counts = np.convolve(pnl, np.ones(window))[:times.size], np.convolve(trades, np.ones(window))[:times.size]
            values = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        return RangeResult(query=query, values={"BTCUSDC": [(float(t), float(v)) for t, v in zip(times, values, strict=True)]})
    return history, asked


def test_windows_start_every_day_and_fit_in_the_history() -> None:
    starts = window_starts(START, END, timedelta(days=7), timedelta(days=1))
    assert len(starts) == 24 and starts[-1] + timedelta(days=7) == END


def test_the_candidates_queries_are_read_for_the_baseline() -> None:
    assert as_baseline('x{variant="candidate"}') == 'x{variant="baseline"}'


def test_a_flat_baseline_trips_the_plans_threshold_trigger_but_not_the_sequential_one() -> None:
    history, asked = baseline_history(mean=0.02)
    canary_as_written = AS_WRITTEN.stages[1]
    [written] = replay_stage(canary_as_written, ["BTCUSDC"], history, START, END, timedelta(days=7),
                             timedelta(days=1), STEP)
    assert written.rule == "expectancy-negative" and written.windows == 24 and share(written) > 0.5
    findings = {f.rule: f for f in replay_stage(EXAMPLE.stages[1], ["BTCUSDC"], history, START, END,
                                                 timedelta(days=7), timedelta(days=1), STEP)}
    assert findings["expectancy-negative"].fired == 0
    assert findings["expectancy-worse-than-baseline"].note.startswith("not replayed")
    assert findings["expectancy-not-worse"].note.startswith("not replayed")
    assert any("offset 600s" in q for q in asked)


def test_a_losing_baseline_is_caught_by_the_sequential_trigger() -> None:
    history, _ = baseline_history(mean=-0.6, seed=3)
    findings = {f.rule: f for f in replay_stage(EXAMPLE.stages[1], ["BTCUSDC"], history, START, END,
                                                 timedelta(days=7), timedelta(days=1), STEP)}
    assert share(findings["expectancy-negative"]) > 0.9
