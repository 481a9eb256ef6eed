"""Where training bars come from: a Parquet/CSV file, or the built-in synthetic market."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from model_runtime.training.synthetic import MarketSpec, generate_market


def load_symbol_frames(symbols: list[str], *, data: Path | None, rows: int, seed: int) -> dict[str, pd.DataFrame]:
    """One time-ordered frame per symbol.

    A file must hold a `label` column and, when it covers several symbols, a `symbol` column; every
    other column except timestamp/close/fwd_return is a feature.
    """
    if data is None:
        spec = MarketSpec(rows=rows, seed=seed)
        return {symbol: generate_market(symbol, spec) for symbol in symbols}
    if data.suffix == ".parquet":
        frame = pd.read_parquet(data)
    elif data.suffix == ".csv":
        frame = pd.read_csv(data, parse_dates=["timestamp"] if "timestamp" in pd.read_csv(data, nrows=0) else False)
    else:
        raise ValueError(f"{data}: expected a .parquet or .csv file")
    if "symbol" not in frame.columns:
        if len(symbols) != 1:
            raise ValueError(f"{data} has no 'symbol' column, so it can feed exactly one symbol, not {symbols}")
        return {symbols[0]: frame}
    frames = {symbol: frame[frame["symbol"] == symbol].reset_index(drop=True) for symbol in symbols}
    missing = [symbol for symbol, part in frames.items() if part.empty]
    if missing:
        raise ValueError(f"{data} has no rows for {', '.join(missing)}")
    return frames
