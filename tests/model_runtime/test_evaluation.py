"""Metrics, calibration, splits, drift and the synthetic market: pure functions on generated data."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import f1_score, log_loss

from model_runtime.drift import build_reference, psi
from model_runtime.loss_flag import LossSpec
from model_runtime.training.booster import (
    BoosterParams,
    SplitSpec,
    booster_params,
    fit_fold,
    margins,
    time_splits,
    to_dataset,
)
from model_runtime.training.evaluation import (
    evaluate,
    expectancy_net,
    expected_calibration_error,
    f1_buy,
    fit_temperature,
    margin_log_loss,
    probabilities,
    sharpness,
)
from model_runtime.training.synthetic import feature_names, generate_market

RNG = np.random.default_rng(7)


def test_ece_is_small_for_calibrated_and_large_for_overconfident_probabilities():
    p = RNG.uniform(0, 1, 200_000)
    y = (RNG.uniform(0, 1, p.size) < p).astype(float)
    assert expected_calibration_error(p, y) < 0.01
    assert expected_calibration_error(np.clip(p * 2 - 0.5, 0, 1), y) > 0.1


def test_temperature_scaling_recovers_the_generating_temperature():
    z = RNG.normal(0, 3, 100_000)
    y = (RNG.uniform(0, 1, z.size) < probabilities(z, 2.5)).astype(float)
    assert fit_temperature(z, y) == pytest.approx(2.5, rel=0.05)


def test_margin_log_loss_and_f1_agree_with_scikit_learn():
    z = RNG.normal(-2, 3, 10_000)
    y = (RNG.uniform(0, 1, z.size) < probabilities(z)).astype(float)
    for temperature in (0.5, 1.0, 3.0):
        assert margin_log_loss(z, y, temperature) == pytest.approx(
            log_loss(y, probabilities(z, temperature), labels=[0, 1]), rel=1e-9)
    predicted = probabilities(z) >= 0.3
    assert f1_buy(predicted, y) == pytest.approx(f1_score(y, predicted))
    assert f1_buy(np.zeros(3, dtype=bool), np.zeros(3)) == 0.0


def test_sharpness_and_expectancy():
    assert sharpness(np.array([0.5, 0.5])) == 0.5
    assert sharpness(np.array([0.0, 1.0, 0.9])) == pytest.approx((1 + 1 + 0.9) / 3)
    value, trades = expectancy_net(np.array([0.9, 0.1, 0.7]), 0.5, np.array([0.01, 0.5, -0.002]), cost=0.001)
    assert trades == 2 and value == pytest.approx((0.01 - 0.002) / 2 - 0.001)
    assert expectancy_net(np.array([0.1]), 0.5, np.array([0.3])) == (0.0, 0)


def test_evaluate_tunes_on_validation_and_scores_on_holdout():
    z = RNG.normal(-2, 2, 40_000)
    y = (RNG.uniform(0, 1, z.size) < probabilities(z, 0.5)).astype(float)
    m = evaluate(z[:20_000], y[:20_000], z[20_000:], y[20_000:], RNG.normal(0, 0.01, 20_000))
    assert m["temperature"] == pytest.approx(0.5, rel=0.1)
    assert m["ece_hold"] < 0.02 < m["ece_hold_uncalibrated"]
    assert 0.5 < m["auc"] <= 1 and 0 < m["f1_buy"] <= 1 and m["trades"] > 0


def test_walk_forward_folds_are_ordered_disjoint_and_gapped():
    folds = time_splits(20_000, SplitSpec(folds=13, validation=0.15, holdout=0.5, gap=12))
    assert len(folds) == 13
    for fold in folds:
        assert fold.train.stop + 12 <= fold.validation.start
        assert fold.validation.stop + 12 <= fold.holdout.start
    assert all(a.holdout.stop <= b.holdout.start for a, b in itertools.pairwise(folds))
    assert folds[-1].holdout.stop <= 20_000 and folds[0].train.start == 0
    with pytest.raises(ValueError, match="too few"):
        time_splits(300, SplitSpec(folds=13, holdout=0.5))


def test_psi_is_zero_on_the_training_distribution_and_grows_with_shift():
    x = RNG.normal(size=(50_000, 2))
    ref = build_reference(x, ["a", "b"], {"a": 2.0, "b": 1.0})
    assert ref.top_features == ["a", "b"]
    assert psi(ref.bins["a"], RNG.normal(size=5_000)) < 0.01
    assert psi(ref.bins["a"], RNG.normal(1.0, 1.0, 5_000)) > 0.25


def test_synthetic_market_is_imbalanced_autocorrelated_and_reproducible():
    frame = generate_market("BTCUSDC", rows=30_000)
    assert list(frame.columns[3:33]) == feature_names(30)
    assert 0.07 < frame["label"].mean() < 0.13
    signal = frame["sig0_ema8"].to_numpy()
    assert np.corrcoef(signal[1:], signal[:-1])[0, 1] > 0.9
    assert frame.equals(generate_market("BTCUSDC", rows=30_000))
    assert not frame.equals(generate_market("ETHUSDC", rows=30_000))
    close = frame["close"].to_numpy()
    np.testing.assert_allclose(np.log(close[12:] / close[:-12]), frame["fwd_return"].to_numpy()[:-12], atol=1e-12)


def test_focal_gamma_zero_alpha_half_trains_the_logistic_model():
    """Half the logistic loss with the Hessian-unit parameters halved is the same booster: the custom-objective
    path (intercept, min_child_weight and lambda rescaling) adds nothing of its own."""
    frame = generate_market("BTCUSDC", rows=3000, seed=4)
    data = to_dataset(frame)
    fold = time_splits(len(data.y), SplitSpec())[-1]
    params = BoosterParams(rounds=20, nthread=1)
    logistic, focal = (fit_fold(data, fold, LossSpec.parse(loss), params)
                       for loss in ("binary:logistic", "focal:gamma=0,alpha=0.5"))
    x = data.x[fold.holdout]
    np.testing.assert_allclose(margins(focal.booster, x), margins(logistic.booster, x), atol=1e-4)
    assert focal.metrics["threshold"] == pytest.approx(logistic.metrics["threshold"], abs=1e-6)
    assert booster_params(LossSpec.parse("focal:gamma=0,alpha=0.5"), params, 0.1)["lambda"] == pytest.approx(0.5)
    focal_gamma_2 = booster_params(LossSpec.parse("focal:gamma=2,alpha=0.25"), params, 0.1)
    assert "max_delta_step" in focal_gamma_2 and focal_gamma_2["lambda"] == 1.0
