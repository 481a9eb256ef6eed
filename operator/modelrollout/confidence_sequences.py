"""Anytime-valid confidence sequences for a per-trade mean, and for candidate minus baseline.

A fixed-sample interval checked at every analysis cycle is checked thousands of times in a
stage, and with every look it gets another chance to exclude the truth by luck: a no-harm
candidate is then "significantly worse" in most 7-day canaries. A confidence sequence covers
the truth at every look at once, P(exists t: mean outside CS_t) <= alpha, so a rule on it
may be evaluated as often as the operator likes.

The boundary is the two-sided normal mixture (Robbins' method of mixtures) in the closed form
of Howard, Ramdas, McAuliffe & Sekhon (2021), "Time-uniform, nonparametric, nonasymptotic
confidence sequences", Ann. Statist. 49(2), eq. (14) with Prop. 2's choice of rho; used with an
estimated variance it is the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha,
Kennedy & Ramdas (2024), "Time-uniform central limit theory and asymptotic confidence sequences",
Ann. Statist. 52(6), Theorem 2.2 (their radius equals ours divided by t, rho^2 = 1/(sigma^2 rho_H)):

    |S_t| < sqrt((V_t + rho) * log((V_t + rho) / (rho * alpha^2)))   for all t, w.p. >= 1 - alpha

The difference of two independent means is a Gaussian process whose score I * (d_hat - d)
has Brownian covariance in the information I = 1 / Var(d_hat), so the same boundary holds in
information time (Jennison & Turnbull's group-sequential argument); `difference_interval`
uses it with information expressed in trades (`n_eff`), so `planned_trades` means the same for
one stream and for two.

Correlated trades (a streak of losses in one market regime) make sum-of-squares variance too
small. `Moments` therefore also takes block sums (trades grouped into fixed time blocks, i.e.
batch means) and uses the larger of the two variance estimates: a cluster-robust variance that
stays valid when trades are dependent within a block and roughly independent across blocks.

Every function takes numpy arrays as well as floats, so the decision-quality benchmark runs the
very same arithmetic at every cycle of thousands of simulated stages at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

Side = Literal["better", "worse", "undecided"]
FloatArray = NDArray[np.float64]


def best_rho(v_opt: ArrayLike, alpha: float) -> FloatArray:
    """The mixture variance that makes the boundary tightest near intrinsic time `v_opt`.

    Howard et al. (2021), Prop. 2 / confseq's `best_rho` for the two-sided normal mixture.
    """
    log_term = 2 * np.log(1 / alpha)
    return np.asarray(np.asarray(v_opt, dtype=float) / (log_term + np.log(1 + log_term)), dtype=float)


def normal_mixture_boundary(v: ArrayLike, alpha: float, rho: ArrayLike) -> FloatArray:
    """Howard et al. (2021) eq. (14): the two-sided normal-mixture uniform boundary on |S_t| at V_t = v."""
    v, rho = np.asarray(v, dtype=float), np.asarray(rho, dtype=float)
    return np.asarray(np.sqrt((v + rho) * np.log((v + rho) / (rho * alpha ** 2))), dtype=float)


def radius(se: ArrayLike, n_eff: ArrayLike, alpha: float, planned_trades: float) -> FloatArray:
    """Half-width of the confidence sequence of an estimate with standard error `se` at `n_eff` trades.

    In standardized units V_t = n_eff and S_t = n_eff * (estimate - truth) / sd, so the radius is
    sd * boundary(n_eff) / n_eff = se * boundary(n_eff) / sqrt(n_eff). NaN where n_eff <= 0.
    """
    se, n_eff = np.asarray(se, dtype=float), np.asarray(n_eff, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = normal_mixture_boundary(n_eff, alpha, best_rho(planned_trades, alpha))
        return np.where(n_eff > 0, se * bound / np.sqrt(n_eff), np.nan)


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of one stream of per-trade PnL since the stage started.

    `block_*` are sums over time blocks b of S_b^2, S_b * N_b, N_b^2 and N_b (S_b, N_b: the PnL
    sum and trade count of block b); all zero when blocks are not known.
    """

    count: ArrayLike
    total: ArrayLike
    squares: ArrayLike
    block_squares: ArrayLike = 0.0
    block_cross: ArrayLike = 0.0
    block_count_squares: ArrayLike = 0.0
    block_count: ArrayLike = 0.0

    @property
    def mean(self) -> FloatArray:
        count = np.asarray(self.count, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(count > 0, np.asarray(self.total, dtype=float) / count, np.nan)

    @property
    def variance(self) -> FloatArray:
        """Per-trade variance: the larger of the i.i.d. sample variance and the batch-means one.

        The batch-means variance is sum_b (S_b - mean * N_b)^2 / sum_b N_b: the variance of the
        mean is that over the number of trades, whatever the dependence inside a block.
        """
        count, total, squares = (np.asarray(x, dtype=float) for x in (self.count, self.total, self.squares))
        block_count = np.asarray(self.block_count, dtype=float)
        mean = self.mean
        with np.errstate(divide="ignore", invalid="ignore"):
            iid = np.where(count > 1, np.maximum(squares - total * mean, 0.0) / (count - 1), np.nan)
            spread = (np.asarray(self.block_squares, dtype=float) - 2 * mean * np.asarray(self.block_cross, dtype=float)
                      + mean ** 2 * np.asarray(self.block_count_squares, dtype=float))
            batch = np.where(block_count > 0, np.maximum(spread, 0.0) / block_count, 0.0)
        return np.where(np.isnan(iid), np.nan, np.maximum(iid, batch))


@dataclass(frozen=True)
class Interval:
    """A confidence sequence at one look: estimate +- radius, from `n_eff` trades' worth of information."""

    estimate: FloatArray
    lower: FloatArray
    upper: FloatArray
    se: FloatArray
    n_eff: FloatArray


def mean_interval(stream: Moments, alpha: float, planned_trades: float) -> Interval:
    """The confidence sequence of one stream's per-trade mean."""
    count = np.asarray(stream.count, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(stream.variance / count)
    return _interval(stream.mean, se, count, alpha, planned_trades)


def difference_interval(candidate: Moments, baseline: Moments, alpha: float, planned_trades: float) -> Interval:
    """The confidence sequence of candidate minus baseline per-trade mean (independent streams).

    Information in trades: n_eff = (var_c + var_b) / (var_c / n_c + var_b / n_b), which is n for
    n trades each, so `planned_trades` is per stream.
    """
    var_c, var_b = candidate.variance, baseline.variance
    n_c, n_b = (np.asarray(m.count, dtype=float) for m in (candidate, baseline))
    with np.errstate(divide="ignore", invalid="ignore"):
        se2 = var_c / n_c + var_b / n_b
        n_eff = np.where(se2 > 0, (var_c + var_b) / se2, np.nan)
    return _interval(candidate.mean - baseline.mean, np.sqrt(se2), n_eff, alpha, planned_trades)


def _interval(estimate: FloatArray, se: FloatArray, n_eff: FloatArray, alpha: float,
              planned_trades: float) -> Interval:
    half = radius(se, np.where(np.isfinite(n_eff), n_eff, 0.0), alpha, planned_trades)
    return Interval(estimate=np.asarray(estimate, dtype=float), lower=estimate - half, upper=estimate + half,
                    se=np.asarray(se, dtype=float), n_eff=np.asarray(n_eff, dtype=float))


def side(interval: Interval, threshold: ArrayLike, higher_is_better: bool = True) -> NDArray[np.str_]:
    """Where the sequence lies against `threshold`: wholly better, wholly worse, or across it (or unknown)."""
    low, high = (interval.lower, interval.upper) if higher_is_better else (-interval.upper, -interval.lower)
    bar = np.asarray(threshold, dtype=float) * (1 if higher_is_better else -1)
    return np.where(low > bar, "better", np.where(high < bar, "worse", "undecided"))


def trades_to_decide(interval: Interval, threshold: float, alpha: float, planned_trades: float) -> float | None:
    """How many more trades (of information) until the sequence would clear `threshold` on one side.

    Holding the estimate and the per-trade spread as they are: the smallest n >= n_eff whose radius
    is below |estimate - threshold|. 0 when it already does; None when it never would (estimate on
    the threshold, or nothing known yet).
    """
    estimate, se, n_eff = (float(x) for x in (interval.estimate, interval.se, interval.n_eff))
    gap = abs(estimate - threshold)
    if not all(np.isfinite([estimate, se, n_eff])) or n_eff <= 0 or gap == 0:
        return None
    sd = se * np.sqrt(n_eff)  # the per-trade spread of the estimate

    def clears(n: float) -> bool:
        return float(radius(sd / np.sqrt(n), n, alpha, planned_trades)) < gap

    if clears(n_eff):
        return 0.0
    low, high = n_eff, 2 * n_eff
    while not clears(high):
        low, high = high, 2 * high
        if high > 1e12:
            return None
    for _ in range(60):  # the radius falls monotonically in n: bisect to a trade
        if high - low <= 0.5:
            break
        middle = (low + high) / 2
        low, high = (low, middle) if clears(middle) else (middle, high)
    return float(np.ceil(high - n_eff))
