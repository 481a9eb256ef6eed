"""Binary focal loss (Lin et al. 2017) on the raw margin, derived with SymPy and compiled once.

The loss is written in the signed margin t = s * z (s = +1 for a buy, -1 otherwise), so one scalar
expression covers both classes: FL = -a_t * sigmoid(-t)**gamma * log_sigmoid(t), with a_t = alpha for
y = 1 and 1 - alpha for y = 0. `sigmoid` and `log_sigmoid` are SymPy functions whose derivatives are
declared in the same stable form (sigmoid' = sigmoid(t) * sigmoid(-t), log_sigmoid' = sigmoid(-t)), so
`diff` never produces exp(700) or log(0): every expression stays finite at any margin.

The gradient and Hessian expressions are lambdified to scalar code and compiled with Numba into one
fused parallel kernel per gamma (alpha only weights the two classes, so it is a kernel argument),
because XGBoost calls the objective every round and a NumPy version costs about as much as building
the trees themselves (see benchmarks/model_runtime_training.py).

Hessian floor: the true focal Hessian is negative for confidently wrong margins when gamma > 0 and
vanishes for confidently right ones. XGBoost divides by the Hessian sum (leaf weight -G / (H + lambda))
and uses it for split gain and `min_child_weight`, so a negative or near-zero value makes leaves blow
up. The kernel returns max(h, HESS_FLOOR) with HESS_FLOOR = 1e-6. At gamma = 2, alpha = 0.25 it binds
only for rows wrong by more than 2.8 logits (negative curvature) or right by more than 4.9-5.2 logits
(Hessian below 1e-6: already fitted); `max_delta_step` bounds the step the wrong ones can cause.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numba
import numpy as np
import sympy as sp
import xgboost as xgb

HESS_FLOOR = 1e-6


class sigmoid(sp.Function):  # noqa: N801 (SymPy function names are lower case)
    """Logistic function, with the derivative written so it never overflows."""

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        x = self.args[0]
        return sigmoid(x) * sigmoid(-x)


class log_sigmoid(sp.Function):  # noqa: N801
    """log(sigmoid(x)) as its own function, so its derivative is sigmoid(-x) instead of 1/sigmoid(x)."""

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return sigmoid(-self.args[0])


T = sp.Symbol("t", real=True)


def _exact(value: float) -> sp.Expr:
    """Integers stay integers so SymPy emits x**2 (a multiply), not pow(x, 2.0)."""
    return sp.Integer(int(value)) if float(value).is_integer() else sp.Float(value)


def focal_expressions(gamma: float) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    """(loss, dloss/dt, d2loss/dt2) of the unweighted focal loss in the signed margin t."""
    loss = -sigmoid(-T) ** _exact(gamma) * log_sigmoid(T)
    grad = sp.diff(loss, T)
    hess = sp.diff(grad, T)
    return loss, grad, hess


def _sigmoid_numpy(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))


def _log_sigmoid_numpy(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


_NUMPY_MODULES = [{"sigmoid": _sigmoid_numpy, "log_sigmoid": _log_sigmoid_numpy}, "numpy"]

# The three primitives every derivative is a polynomial in; the kernel computes them from one
# exp(-|t|) and one log1p of it per row, so the compiled expressions below are only multiplies and adds.
_P, _Q, _LP = sp.symbols("p q log_p", real=True)
_PRIMITIVES = {sigmoid(T): _P, sigmoid(-T): _Q, log_sigmoid(T): _LP}

# exp and log1p as polynomials, also built by SymPy: Numba calls libm one row at a time (it has no vector
# math library unless Intel's SVML is installed), which made those two calls 3/4 of the kernel's time.
# Polynomials let LLVM vectorise the whole loop. exp(-a) = 2**-k * exp(-r) with r = a - k ln2 in
# [-0.35, 0.35] (Cody-Waite split of ln2, Taylor degree 13: error < 1e-17); log1p(e) for e in (0, 1] is
# 2 atanh(e / (2 + e)) (series to s**33: error < 1e-17). a is capped at 700: exp(-700) ~ 1e-304 is as
# good as 0 in every expression, and the cap keeps k inside the 2**-k table.
_W = sp.Symbol("w", real=True)
_EXP_POLY = sp.horner(sum(_W**k / sp.factorial(k) for k in range(14)))
_ATANH_POLY = sp.horner(sum(_W**k / (2 * k + 1) for k in range(17)))
_LN2_HI, _LN2_LO, _INV_LN2 = 6.93147180369123816490e-01, 1.90821492927058770002e-10, 1.4426950408889634
_POW2_NEG = 2.0 ** -np.arange(1024, dtype=np.float64)
_FAST = {"error_model": "numpy", "boundscheck": False}  # no ZeroDivisionError branch: it blocks vectorising

_exp_poly = numba.njit(inline="always", **_FAST)(sp.lambdify(_W, _EXP_POLY, modules="math"))
_atanh_poly = numba.njit(inline="always", **_FAST)(sp.lambdify(_W, _ATANH_POLY, modules="math"))


@numba.njit(inline="always", **_FAST)
def _exp_neg(a: float) -> float:
    """exp(-a) for a >= 0."""
    a = min(a, 700.0)
    k = int(a * _INV_LN2 + 0.5)
    return _exp_poly((k * _LN2_HI - a) + k * _LN2_LO) * _POW2_NEG[k]


@numba.njit(inline="always", **_FAST)
def _log1p_unit(e: float) -> float:
    """log1p(e) for e in [0, 1], accurate to the last bits even for tiny e."""
    s = e / (2.0 + e)
    return 2.0 * s * _atanh_poly(s * s)


@lru_cache(maxsize=32)
def _kernel(gamma: float) -> Callable[..., None]:
    """Compile the fused gradient/Hessian kernel for one gamma; cached per process."""
    _, grad_expr, hess_expr = focal_expressions(gamma)
    args = (_P, _Q, _LP)
    grad_t = numba.njit(inline="always", **_FAST)(sp.lambdify(args, grad_expr.subs(_PRIMITIVES), modules="math"))
    hess_t = numba.njit(inline="always", **_FAST)(sp.lambdify(args, hess_expr.subs(_PRIMITIVES), modules="math"))
    floor = HESS_FLOOR

    @numba.njit(parallel=True, **_FAST)
    def kernel(margin: np.ndarray, label: np.ndarray, alpha: float, grad: np.ndarray, hess: np.ndarray) -> None:
        for i in numba.prange(margin.shape[0]):
            positive = label[i] > 0.5
            sign = 1.0 if positive else -1.0
            weight = alpha if positive else 1.0 - alpha
            t = sign * margin[i]
            # sigmoid(t), sigmoid(-t) and log(sigmoid(t)) from e = exp(-|t|), which never overflows.
            e = _exp_neg(abs(t))
            big = 1.0 / (1.0 + e)
            small = e * big
            log1p_e = _log1p_unit(e)
            p = big if t >= 0.0 else small
            q = small if t >= 0.0 else big
            log_p = -log1p_e if t >= 0.0 else t - log1p_e
            # dL/dz = s * dL/dt and d2L/dz2 = s**2 * d2L/dt2 = d2L/dt2.
            grad[i] = weight * sign * grad_t(p, q, log_p)
            hess[i] = max(weight * hess_t(p, q, log_p), floor)

    return kernel


def focal_grad_hess(margin: np.ndarray, label: np.ndarray, *, gamma: float = 2.0,
                    alpha: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and floored Hessian of the focal loss with respect to the raw margin, in float64."""
    margin = np.ascontiguousarray(margin, dtype=np.float64).ravel()
    label = np.ascontiguousarray(label, dtype=np.float64).ravel()
    if margin.shape != label.shape:
        raise ValueError(f"margin has {margin.size} values but label has {label.size}")
    grad = np.empty_like(margin)
    hess = np.empty_like(margin)
    _kernel(float(gamma))(margin, label, float(alpha), grad, hess)
    return grad, hess


def focal_objective(*, gamma: float = 2.0, alpha: float = 0.25, nthread: int = 2) -> Callable[
        [np.ndarray, xgb.DMatrix], tuple[np.ndarray, np.ndarray]]:
    """An XGBoost custom objective (`obj=` of `xgb.train`).

    Compiles the kernel up front rather than in round 1, runs it on `nthread` threads (the booster's
    own nthread: XGBoost's OpenMP team is idle while the objective runs, so the cores are free and no
    more threads than cores compete), and reads the labels once per DMatrix instead of every round.
    """
    kernel = _kernel(float(gamma))
    alpha = float(alpha)
    threads = max(1, min(nthread, numba.config.NUMBA_NUM_THREADS))
    cache: dict[str, Any] = {}

    def objective(predt: np.ndarray, dtrain: xgb.DMatrix) -> tuple[np.ndarray, np.ndarray]:
        if cache.get("dtrain") is not dtrain:
            cache.update(dtrain=dtrain, label=np.ascontiguousarray(dtrain.get_label(), dtype=np.float64))
        margin = np.ascontiguousarray(predt, dtype=np.float64).ravel()
        grad = np.empty_like(margin)
        hess = np.empty_like(margin)
        numba.set_num_threads(threads)
        kernel(margin, cache["label"], alpha, grad, hess)
        return grad, hess

    return objective


def focal_loss(margin: np.ndarray, label: np.ndarray, *, gamma: float = 2.0, alpha: float = 0.25) -> np.ndarray:
    """Per-row focal loss (NumPy, from the same SymPy expression); used for evaluation and tests."""
    loss_expr, _, _ = focal_expressions(gamma)
    loss_t = sp.lambdify(T, loss_expr, modules=_NUMPY_MODULES)
    margin = np.asarray(margin, dtype=np.float64)
    positive = np.asarray(label) > 0.5
    sign = np.where(positive, 1.0, -1.0)
    weight = np.where(positive, alpha, 1.0 - alpha)
    return weight * loss_t(sign * margin)
