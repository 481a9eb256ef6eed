"""Model quality numbers the rollout gates on: F1 of the buy class, ECE, sharpness, backtest expectancy.

Everything here is a pure function of margins, labels and returns, so trainer, sweep and benchmarks
compute the numbers identically.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit
from sklearn.metrics import precision_recall_curve, roc_auc_score

ECE_BINS = 10
COST_PER_TRADE = 0.0010  # round-trip fees plus slippage as a log return (10 bp), charged per buy signal


def probabilities(margin: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Buy probability from a raw margin after temperature scaling."""
    return expit(np.asarray(margin, dtype=np.float64) / temperature)


def margin_log_loss(margin: np.ndarray, label: np.ndarray, temperature: float = 1.0) -> float:
    """Mean log-loss of sigmoid(margin / T) against 0/1 labels, computed from the margin.

    log(1 + e^z) - y z is exact where the probability rounds to 0 or 1, and costs no input validation:
    `fit_temperature` evaluates it some twenty times per model.
    """
    z = np.asarray(margin, dtype=np.float64) / temperature
    return float(np.mean(np.logaddexp(0.0, z) - np.asarray(label, dtype=np.float64) * z))


def f1_buy(predicted: np.ndarray, label: np.ndarray) -> float:
    """F1 of the buy class (0 when nothing is predicted or true): 2 TP / (predicted + actual positives)."""
    predicted = np.asarray(predicted, dtype=bool)
    actual = np.asarray(label) > 0.5
    denominator = int(predicted.sum() + actual.sum())
    return 2.0 * int((predicted & actual).sum()) / denominator if denominator else 0.0


def fit_temperature(margin: np.ndarray, label: np.ndarray) -> float:
    """Temperature T minimising validation log-loss of sigmoid(z / T) (Guo et al. 2017).

    Focal loss pushes probabilities towards 0.5 on purpose, so its raw outputs are under-confident;
    one scalar fitted on validation data fixes calibration without changing the ranking (AUC, F1).
    """
    margin = np.asarray(margin, dtype=np.float64)
    label = np.asarray(label, dtype=np.float64)

    def nll(log_t: float) -> float:
        return margin_log_loss(margin, label, float(np.exp(log_t)))

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def tune_threshold(proba: np.ndarray, label: np.ndarray) -> float:
    """The decision threshold that maximises F1 of the buy class on validation data."""
    precision, recall, thresholds = precision_recall_curve(label, proba)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=(precision + recall) > 0)
    return float(thresholds[int(np.argmax(f1[:-1]))]) if thresholds.size else 0.5


def expected_calibration_error(proba: np.ndarray, label: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of the buy probability: bin-weighted |mean predicted - observed rate| over equal-width bins."""
    proba = np.asarray(proba, dtype=np.float64)
    label = np.asarray(label, dtype=np.float64)
    index = np.minimum((proba * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, proba, bins) - np.bincount(index, label, bins))
    return float(gap.sum() / max(counts.sum(), 1))


def sharpness(proba: np.ndarray) -> float:
    """Mean of max(p, 1 - p): how decisive the outputs are (0.5 = coin flip, 1 = certain)."""
    proba = np.asarray(proba, dtype=np.float64)
    return float(np.mean(np.maximum(proba, 1.0 - proba))) if proba.size else float("nan")


def expectancy_net(proba: np.ndarray, threshold: float, fwd_return: np.ndarray,
                   cost: float = COST_PER_TRADE) -> tuple[float, int]:
    """Mean net log return per trade of "buy when p >= threshold, exit after the horizon", and trades."""
    trades = np.asarray(proba) >= threshold
    count = int(trades.sum())
    if count == 0:
        return 0.0, 0
    return float(np.mean(np.asarray(fwd_return)[trades]) - cost), count


def evaluate(margin_val: np.ndarray, y_val: np.ndarray, margin_hold: np.ndarray, y_hold: np.ndarray,
             fwd_return_hold: np.ndarray | None = None) -> dict[str, float]:
    """Calibrate and tune on validation, then score on the untouched holdout."""
    temperature = fit_temperature(margin_val, y_val)
    threshold = tune_threshold(probabilities(margin_val, temperature), y_val)
    proba = probabilities(margin_hold, temperature)
    raw = probabilities(margin_hold)
    metrics = {
        "temperature": temperature,
        "threshold": threshold,
        "f1_buy": f1_buy(proba >= threshold, y_hold),
        "ece_hold": expected_calibration_error(proba, y_hold),
        "ece_hold_uncalibrated": expected_calibration_error(raw, y_hold),
        "log_loss": margin_log_loss(margin_hold, y_hold, temperature),
        "auc": float(roc_auc_score(y_hold, proba)) if 0 < np.mean(y_hold) < 1 else float("nan"),
        "sharpness": sharpness(proba),
        "buy_rate_hold": float(np.mean(y_hold)),
    }
    if fwd_return_hold is not None:
        metrics["expectancy_net"], trades = expectancy_net(proba, threshold, fwd_return_hold)
        metrics["trades"] = float(trades)
    return metrics
