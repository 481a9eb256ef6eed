"""The confidence-sequence boundary against its definition and reference values, and its verdicts' monotony."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from modelrollout.confidence_sequences import (
    Moments,
    best_rho,
    difference_interval,
    mean_interval,
    normal_mixture_boundary,
    radius,
    side,
    trades_to_decide,
)

# Computed with confseq 0.0.11 (Howard & Waudby-Smith's reference implementation, built from its sdist
# with a current pybind11): confseq.boundaries.normal_mixture_bound(v, alpha, v_opt, alpha, False).
CONFSEQ_TWO_SIDED = [
    # (v, alpha, v_opt, bound)
    (1, 0.05, 140, 10.616658005510141),
    (10, 0.05, 140, 13.342476436703661),
    (100, 0.05, 140, 30.463992429521124),
    (140, 0.05, 140, 35.91307709089429),
    (1000, 0.05, 140, 101.11241901075473),
    (100000, 0.05, 140, 1209.8319902943858),
    (50, 0.01, 200, 26.6756512276332),
    (500, 0.1, 20, 69.77326796007483),
    (7, 0.2, 1000, 26.84439550687606),
]


def mixture_martingale(s: float, v: float, rho: float) -> float:
    """The normal mixture of exp(lambda s - lambda^2 v / 2) over lambda ~ N(0, 1/rho), by quadrature.

    The definition the closed form solves (Robbins' method of mixtures), computed without it.
    """
    def integrand(lam: float) -> float:
        return math.exp(lam * s - lam * lam * v / 2) * math.sqrt(rho / (2 * math.pi)) * math.exp(-rho * lam * lam / 2)
    width = 40 / math.sqrt(rho + v)
    centre = s / (v + rho)
    value, _ = integrate.quad(integrand, centre - width, centre + width, limit=200)
    return value


@pytest.mark.parametrize("v", [1.0, 10.0, 140.0, 1000.0, 1e5])
@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
def test_the_boundary_is_where_the_mixture_martingale_reaches_one_over_alpha(v: float, alpha: float) -> None:
    rho = float(best_rho(140.0, alpha))
    bound = float(normal_mixture_boundary(v, alpha, rho))
    assert mixture_martingale(bound, v, rho) == pytest.approx(1 / alpha, rel=1e-6)
    assert mixture_martingale(0.99 * bound, v, rho) < 1 / alpha  # and not before


@pytest.mark.parametrize(("v", "alpha", "v_opt", "expected"), CONFSEQ_TWO_SIDED)
def test_the_boundary_equals_the_reference_package(v: float, alpha: float, v_opt: float, expected: float) -> None:
    assert float(normal_mixture_boundary(v, alpha, best_rho(v_opt, alpha))) == pytest.approx(expected, rel=1e-9)


def test_best_rho_is_howards_choice() -> None:
    # Howard et al. (2021): rho = v_opt / (2 log(1/alpha) + log(1 + 2 log(1/alpha))).
    assert float(best_rho(100.0, 0.05)) == pytest.approx(100 / (2 * math.log(20) + math.log(1 + 2 * math.log(20))))


@pytest.mark.parametrize("n", [5, 50, 140, 2000])
def test_radius_is_waudby_smiths_asymptotic_cs(n: int) -> None:
    """Waudby-Smith et al., Theorem 2.2: sigma * sqrt(2 (t rho^2 + 1) / (t^2 rho^2) * log(sqrt(t rho^2 + 1) / alpha)),
    with their optimal rho^2 = (-2 log alpha + log(-2 log alpha + 1)) / t* for a planned t*."""
    sigma, alpha, planned = 1.7, 0.05, 140
    rho2 = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / planned
    expected = sigma * math.sqrt(2 * (n * rho2 + 1) / (n * n * rho2) * math.log(math.sqrt(n * rho2 + 1) / alpha))
    assert float(radius(sigma / math.sqrt(n), n, alpha, planned)) == pytest.approx(expected, rel=1e-12)


def test_a_gaussian_walk_leaves_the_sequence_at_most_alpha_of_the_time_over_ten_thousand_looks() -> None:
    rng = np.random.default_rng(7)
    paths, looks, alpha = 2000, 10_000, 0.05
    walks = np.cumsum(rng.standard_normal((paths, looks), dtype=np.float32), axis=1)
    bound = normal_mixture_boundary(np.arange(1, looks + 1), alpha, best_rho(1000, alpha)).astype(np.float32)
    crossed = (np.abs(walks) >= bound).any(axis=1).mean()
    fixed = (np.abs(walks) >= 1.96 * np.sqrt(np.arange(1, looks + 1))).any(axis=1).mean()
    assert crossed <= alpha  # anytime-valid
    assert fixed > 3 * alpha  # while a fixed-sample 95% band is crossed far more often under peeking


def stream(values: np.ndarray) -> Moments:
    return Moments(len(values), float(values.sum()), float((values ** 2).sum()))


def test_mean_interval_is_centred_on_the_mean_with_the_sample_spread() -> None:
    values = np.array([1.0, -0.5, 2.0, 0.25, -1.0, 0.75])
    interval = mean_interval(stream(values), 0.05, 50)
    half = radius(values.std(ddof=1) / math.sqrt(len(values)), len(values), 0.05, 50)
    assert float(interval.estimate) == pytest.approx(values.mean())
    assert float(interval.upper - interval.estimate) == pytest.approx(float(half))
    assert float(interval.estimate - interval.lower) == pytest.approx(float(half))


def test_batch_means_widen_the_sequence_for_correlated_blocks() -> None:
    values = np.array([1.0, 1.1, 0.9, -1.0, -1.1, -0.9, 1.0, 1.05, -1.0, -0.95])  # blocks of like trades
    blocks = [values[0:3], values[3:6], values[6:8], values[8:10]]
    iid = stream(values)
    robust = Moments(iid.count, iid.total, iid.squares, sum(b.sum() ** 2 for b in blocks),
                     sum(b.sum() * len(b) for b in blocks), sum(len(b) ** 2 for b in blocks), len(values))
    assert float(robust.variance) > 2 * float(iid.variance)
    wide, narrow = mean_interval(robust, 0.05, 50), mean_interval(iid, 0.05, 50)
    assert float(wide.upper - wide.lower) > float(narrow.upper - narrow.lower)


def test_independent_blocks_do_not_shrink_the_variance() -> None:
    rng = np.random.default_rng(3)
    values = rng.standard_normal(40)
    iid = stream(values)
    blocks = values.reshape(20, 2)
    robust = Moments(iid.count, iid.total, iid.squares, float((blocks.sum(1) ** 2).sum()),
                     float((blocks.sum(1) * 2).sum()), 80.0, 40.0)
    assert float(robust.variance) >= float(iid.variance)


def test_difference_of_equal_streams_uses_n_trades_of_information() -> None:
    values = np.array([0.5, -0.2, 1.0, -0.7, 0.3])
    interval = difference_interval(stream(values), stream(values), 0.05, 100)
    assert float(interval.estimate) == 0.0
    assert float(interval.n_eff) == pytest.approx(len(values))
    assert float(interval.se) == pytest.approx(values.std(ddof=1) * math.sqrt(2 / len(values)))


def test_no_trades_give_no_interval_and_no_forecast() -> None:
    interval = mean_interval(Moments(0, 0.0, 0.0), 0.05, 100)
    assert not np.isfinite(interval.lower) and str(side(interval, 0.0)) == "undecided"
    assert trades_to_decide(interval, 0.0, 0.05, 100) is None


def test_forecast_counts_the_trades_until_the_sequence_clears_its_bar() -> None:
    rng = np.random.default_rng(11)
    values = rng.normal(0.3, 1.0, 30)
    interval = mean_interval(stream(values), 0.05, 100)
    assert str(side(interval, 0.0)) == "undecided"
    more = trades_to_decide(interval, 0.0, 0.05, 100)
    assert more is not None and more > 0
    sd = float(interval.se) * math.sqrt(30)
    n = 30 + more
    assert float(radius(sd / math.sqrt(n), n, 0.05, 100)) < abs(float(interval.estimate))
    assert float(radius(sd / math.sqrt(n - 1), n - 1, 0.05, 100)) >= abs(float(interval.estimate))


def test_vectorised_and_scalar_forms_agree() -> None:
    rng = np.random.default_rng(5)
    counts = rng.integers(2, 300, 50).astype(float)
    sums = rng.normal(0, 5, 50)
    squares = sums ** 2 / counts + rng.uniform(1, 300, 50)
    arrays = mean_interval(Moments(counts, sums, squares), 0.05, 140)
    for i in range(50):
        one = mean_interval(Moments(counts[i], sums[i], squares[i]), 0.05, 140)
        assert float(one.lower) == pytest.approx(arrays.lower[i]) and float(one.upper) == pytest.approx(arrays.upper[i])


@settings(max_examples=200, deadline=None)
@given(mean=st.floats(-2, 2), sd=st.floats(0.05, 5), n=st.integers(2, 5000), shift=st.floats(0.001, 3),
       extra=st.integers(1, 5000), bar=st.floats(-1, 1))
def test_verdicts_are_monotone_in_the_evidence(mean: float, sd: float, n: int, shift: float, extra: int,
                                               bar: float) -> None:
    """A better estimate is never judged worse, and more trades at the same estimate never undo a verdict."""
    def at(m: float, trades: int) -> str:
        moments = Moments(trades, m * trades, (sd ** 2) * (trades - 1) + m * m * trades)
        return str(side(mean_interval(moments, 0.05, 200), bar))

    order = {"worse": 0, "undecided": 1, "better": 2}
    assert order[at(mean + shift, n)] >= order[at(mean, n)]
    assert at(mean, n) == "undecided" or at(mean, n + extra) == at(mean, n)
