"""A synthetic crypto market: bars with autocorrelated features and an imbalanced forward "buy" label.

Used by the trainer and sweep when no data file is given, by the benchmarks, and by the demo trading
simulator. Returns are driven by a few slow latent signals and a stochastic volatility; the features are
noisy, smoothed and lagged views of those signals plus return/volatility statistics and pure-noise
distractors, so they autocorrelate the way real indicators do and only some of them carry information.
The label is 1 when the forward return over `horizon` bars beats `buy_z` standard deviations of the
current volatility (about 10 % of bars by default), and `fwd_return` is kept for backtests.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy.signal import lfilter

SIGNALS = 4
_SPANS = (8, 32)
_MOMENTUM = (1, 4, 16, 64)
_VOL_WINDOWS = (16, 64)
WARMUP = 64
CORE_FEATURES = SIGNALS * (1 + len(_SPANS)) + len(_MOMENTUM) + len(_VOL_WINDOWS) + 1


class MarketSpec(BaseModel):
    """Shape of one symbol's synthetic series."""

    model_config = ConfigDict(frozen=True)

    rows: int = Field(default=20_000, ge=1_000)
    n_features: int = Field(default=30, ge=CORE_FEATURES)
    horizon: int = Field(default=12, ge=1, description="bars ahead the label and fwd_return look")
    buy_z: float = Field(default=1.7, description="label threshold in forward-volatility units")
    signal_strength: float = Field(default=0.25, ge=0.0, description="drift per unit signal, in vol units")
    seed: int = 0


def feature_names(n_features: int = 30) -> list[str]:
    """Column names in model order; the same for every symbol."""
    names = [f"sig{k}_obs" for k in range(SIGNALS)]
    names += [f"sig{k}_ema{span}" for span in _SPANS for k in range(SIGNALS)]
    names += [f"mom_{lag}" for lag in _MOMENTUM]
    names += [f"rvol_{window}" for window in _VOL_WINDOWS]
    names += ["vol_ratio"]
    names += [f"noise_{k}" for k in range(n_features - CORE_FEATURES)]
    return names


def _ar1(rng: np.random.Generator, n: int, phi: float, scale: float = 1.0) -> np.ndarray:
    """Stationary AR(1) with unit marginal variance times `scale`."""
    shocks = rng.standard_normal(n) * np.sqrt(1.0 - phi**2) * scale
    return lfilter([1.0], [1.0, -phi], shocks)


def _ema(x: np.ndarray, span: int) -> np.ndarray:
    a = 2.0 / (span + 1.0)
    return lfilter([a], [1.0, -(1.0 - a)], x)


def _trailing_sum(x: np.ndarray, window: int) -> np.ndarray:
    c = np.concatenate(([0.0], np.cumsum(x)))
    out = np.empty_like(x)
    out[window - 1:] = c[window:] - c[:-window]
    out[:window - 1] = c[1:window]
    return out


def symbol_seed(symbol: str, seed: int) -> int:
    """A stable per-symbol seed (Python's hash() is salted per process)."""
    return zlib.crc32(f"{symbol}:{seed}".encode())


def generate_market(symbol: str, spec: MarketSpec | None = None, **overrides: object) -> pd.DataFrame:
    """One symbol's bars: timestamp, symbol, close, the features, fwd_return, label (int 0/1)."""
    spec = (spec or MarketSpec()).model_copy(update=overrides)
    rng = np.random.default_rng(symbol_seed(symbol, spec.seed))
    n = spec.rows + WARMUP + spec.horizon

    signals = np.stack([_ar1(rng, n, phi) for phi in np.linspace(0.97, 0.995, SIGNALS)])
    betas = rng.normal(0.0, 1.0, SIGNALS)
    betas /= np.linalg.norm(betas)
    log_vol = _ar1(rng, n, 0.995, 0.35) + np.log(0.002)
    vol = np.exp(log_vol)
    drift = spec.signal_strength * (betas @ signals)
    # Bar t's return is realised after bar t, so features at t see returns up to t only.
    returns = vol * (drift + rng.standard_normal(n))

    columns: dict[str, np.ndarray] = {}
    observed = signals + np.stack([_ar1(rng, n, 0.9, 1.0) for _ in range(SIGNALS)])
    for k in range(SIGNALS):
        columns[f"sig{k}_obs"] = observed[k]
    for span in _SPANS:
        for k in range(SIGNALS):
            columns[f"sig{k}_ema{span}"] = _ema(observed[k], span)
    past = np.concatenate(([0.0], returns[:-1]))  # return of the bar that just closed
    for lag in _MOMENTUM:
        columns[f"mom_{lag}"] = _trailing_sum(past, lag)
    for window in _VOL_WINDOWS:
        columns[f"rvol_{window}"] = np.sqrt(_trailing_sum(past**2, window) / window)
    columns["vol_ratio"] = columns[f"rvol_{_VOL_WINDOWS[0]}"] / (columns[f"rvol_{_VOL_WINDOWS[1]}"] + 1e-12)
    for k in range(spec.n_features - CORE_FEATURES):
        columns[f"noise_{k}"] = _ar1(rng, n, rng.uniform(0.5, 0.99))

    forward = _trailing_sum(returns, spec.horizon)  # sum of returns[t - h + 1 .. t]
    fwd_return = np.full(n, np.nan)
    fwd_return[: n - spec.horizon + 1] = forward[spec.horizon - 1:]
    label = fwd_return > spec.buy_z * vol * np.sqrt(spec.horizon)

    keep = slice(WARMUP, WARMUP + spec.rows)
    frame = pd.DataFrame({name: columns[name][keep] for name in feature_names(spec.n_features)})
    frame.insert(0, "timestamp", pd.date_range("2024-01-01", periods=spec.rows, freq="min", tz="UTC"))
    frame.insert(1, "symbol", symbol)
    frame.insert(2, "close", 100.0 * np.exp(np.cumsum(past[keep])))  # fwd_return = log(close[t+h] / close[t])
    frame["fwd_return"] = fwd_return[keep]
    frame["label"] = label[keep].astype(np.int8)
    return frame
