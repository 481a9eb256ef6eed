"""The SymPy-derived focal gradient/Hessian: exact against high-precision finite differences, stable, trainable."""

from __future__ import annotations

import os
import subprocess
import sys

import mpmath
import numpy as np
import pytest
import sympy as sp
import xgboost as xgb
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from model_runtime.training.focal import HESS_FLOOR, T, focal_expressions, focal_loss
from model_runtime.training.focal_kernel import focal_grad_hess, focal_objective

MARGINS = np.concatenate([np.linspace(-30, 30, 121), [-0.1, 1e-3, 0.7, 2.2]])
PARAMS = [(0.0, 0.5), (0.5, 0.25), (1.0, 0.4), (2.0, 0.25), (3.0, 0.75)]


def _mp_loss(gamma: float, alpha: float):
    """The SymPy loss evaluated in 50-digit arithmetic, so finite differences are exact to ~1e-20."""
    loss_expr, _, _ = focal_expressions(gamma)
    modules = [{"sigmoid": lambda x: 1 / (1 + mpmath.exp(-x)),
                "log_sigmoid": lambda x: -mpmath.log1p(mpmath.exp(-x))}, "mpmath"]
    loss_t = sp.lambdify(T, loss_expr, modules=modules)

    def loss(z: mpmath.mpf, y: int) -> mpmath.mpf:
        sign, weight = (1, mpmath.mpf(alpha)) if y else (-1, 1 - mpmath.mpf(alpha))
        return weight * loss_t(sign * z)

    return loss


@pytest.mark.parametrize(("gamma", "alpha"), PARAMS)
@pytest.mark.parametrize("label", [0, 1])
def test_gradient_and_hessian_match_central_differences_of_the_sympy_loss(gamma, alpha, label):
    loss = _mp_loss(gamma, alpha)
    grad, hess = focal_grad_hess(MARGINS, np.full(MARGINS.size, label), gamma=gamma, alpha=alpha)
    with mpmath.workdps(50):
        h = mpmath.mpf("1e-12")
        checked = 0
        for z, g, hs in zip(MARGINS, grad, hess, strict=True):
            zz = mpmath.mpf(float(z))
            fd_grad = (loss(zz + h, label) - loss(zz - h, label)) / (2 * h)
            fd_hess = (loss(zz + h, label) - 2 * loss(zz, label) + loss(zz - h, label)) / h**2
            assert abs(g - fd_grad) <= 1e-5 * abs(fd_grad) + 1e-300, (z, g, fd_grad)
            if fd_hess > 10 * HESS_FLOOR:  # elsewhere the Hessian is floored on purpose
                assert abs(hs - fd_hess) <= 1e-5 * abs(fd_hess), (z, hs, fd_hess)
                checked += 1
            else:
                assert hs == pytest.approx(max(float(fd_hess), HESS_FLOOR), rel=1e-5, abs=10 * HESS_FLOOR)
        assert checked >= 10


def test_gamma_zero_alpha_half_is_half_the_logistic_loss():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 4, 5000)
    y = (rng.random(5000) < 0.3).astype(float)
    grad, hess = focal_grad_hess(z, y, gamma=0.0, alpha=0.5)
    p = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(grad, 0.5 * (p - y), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(hess, np.maximum(0.5 * p * (1 - p), HESS_FLOOR), rtol=1e-12, atol=1e-15)
    logistic = -(y * np.log(p) + (1 - y) * np.log1p(-p))
    np.testing.assert_allclose(focal_loss(z, y, gamma=0.0, alpha=0.5), 0.5 * logistic, rtol=1e-9)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
def test_finite_and_floored_at_extreme_margins(gamma):
    z = np.array([-1e6, -700.0, -50.0, 0.0, 50.0, 700.0, 1e6] * 2)
    y = np.array([0.0] * 7 + [1.0] * 7)
    grad, hess = focal_grad_hess(z, y, gamma=gamma, alpha=0.25)
    assert np.isfinite(grad).all() and np.isfinite(hess).all()
    assert (hess >= HESS_FLOOR).all()
    assert np.isfinite(focal_loss(z, y, gamma=gamma, alpha=0.25)).all()
    # Confidently wrong rows keep a full-size gradient pointing the right way: the point of focal loss.
    assert grad[5] > 0.5 and grad[8] < -0.1  # label 0 at z=+700, label 1 at z=-700


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-800, 800), min_size=1, max_size=50), st.sampled_from([0.0, 0.5, 2.0, 5.0]),
       st.floats(0.01, 0.99))
def test_any_margin_gives_finite_bounded_gradients(margins, gamma, alpha):
    z = np.array(margins)
    y = (np.arange(z.size) % 2).astype(float)
    grad, hess = focal_grad_hess(z, y, gamma=gamma, alpha=alpha)
    assert np.isfinite(grad).all() and np.isfinite(hess).all()
    assert (hess >= HESS_FLOOR).all()
    assert np.abs(grad).max() <= 1 + gamma * 0.5  # |dFL/dz| is bounded for every gamma


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="3 values but label has 2"):
        focal_grad_hess(np.zeros(3), np.zeros(2))


def test_custom_objective_trains_an_xgboost_model_end_to_end():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, 5))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(0, 0.7, 4000) > 1.6).astype(float)
    train, test = slice(0, 3000), slice(3000, None)
    dtrain = xgb.DMatrix(np.ascontiguousarray(x[train]), label=y[train])
    base = float(np.log(y[train].mean() / (1 - y[train].mean())))
    params = {"tree_method": "hist", "max_depth": 3, "eta": 0.3, "base_score": base, "nthread": 2,
              "min_child_weight": 0.1, "max_delta_step": 1.0, "disable_default_eval_metric": 1}
    before = focal_loss(np.full(3000, base), y[train]).mean()
    booster = xgb.train(params, dtrain, 30, obj=focal_objective(gamma=2.0, alpha=0.25))
    margin = booster.predict(dtrain, output_margin=True)
    assert focal_loss(margin, y[train]).mean() < 0.5 * before
    test_margin = booster.inplace_predict(np.ascontiguousarray(x[test]), predict_type="margin")
    assert np.isfinite(test_margin).all()
    assert roc_auc_score(y[test], test_margin) > 0.85


_KERNEL_PROBE = """
import sys
import numpy as np
from model_runtime.training.focal_kernel import focal_grad_hess
grad, hess = focal_grad_hess(np.array([-3.0, 0.2, 4.0]), np.array([1.0, 0.0, 1.0]), gamma=1.5, alpha=0.3)
print(int("sympy" in sys.modules), *map(float.hex, [*grad, *hess]))
"""


@pytest.mark.slow
def test_kernel_is_cached_on_disk_and_a_second_process_needs_no_sympy(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", _KERNEL_PROBE], env=env, capture_output=True, text=True,
                           check=True).stdout.split() for _ in range(2)]
    assert runs[0][0] == "1" and runs[1][0] == "0"  # derived once, then loaded from the cache
    assert runs[0][1:] == runs[1][1:]
    grad, hess = focal_grad_hess(np.array([-3.0, 0.2, 4.0]), np.array([1.0, 0.0, 1.0]), gamma=1.5, alpha=0.3)
    assert runs[1][1:] == list(map(float.hex, [*grad, *hess]))  # bitwise the in-process kernel
    assert list((tmp_path / "model-runtime").glob("focal_kernel_*.py"))
