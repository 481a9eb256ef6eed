"""Training cost of focal loss: focal / binary:logistic and focal / custom-logistic time, kernel throughput.

Same data, rounds and tree settings for every variant (5 symbols x 200k rows x 30 features, depth 6,
100 rounds, hist, 2 threads), each with the parameters the trainer really uses. Variants run
interleaved in a rotating order inside each repetition, ratios are taken per repetition (side by side)
and the median over repetitions is reported. BENCH_QUICK=1 shrinks everything for a smoke run.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import xgboost as xgb
from scipy.special import expit, logit

import model_runtime  # noqa: F401  (sets the OpenMP wait policy before xgboost loads)
from devstack.bench import emit
from model_runtime.loss_flag import LossSpec
from model_runtime.training.booster import BoosterParams, booster_params, to_dataset
from model_runtime.training.focal_kernel import focal_grad_hess, focal_objective
from model_runtime.training.synthetic import MarketSpec, generate_market

QUICK = os.environ.get("BENCH_QUICK") == "1"
SYMBOLS = ["BTCUSDC", "ETHUSDC", "SOLUSDC", "XRPUSDC", "BNBUSDC"][: 2 if QUICK else 5]
ROWS = 20_000 if QUICK else 200_000
ROUNDS = 20 if QUICK else 100
REPS = 2 if QUICK else 3
THREADS = 2


def custom_logistic(y: np.ndarray):
    """binary:logistic's gradient recomputed in NumPy: what any custom objective costs, minus the focal math."""
    def objective(predt: np.ndarray, _: xgb.DMatrix) -> tuple[np.ndarray, np.ndarray]:
        p = expit(predt)
        return p - y, p * (1.0 - p)
    return objective


class Timed:
    """Accumulates the time XGBoost spends inside a custom objective."""

    def __init__(self, objective):
        self.objective, self.seconds, self.calls = objective, 0.0, 0

    def __call__(self, predt: np.ndarray, dtrain: xgb.DMatrix) -> tuple[np.ndarray, np.ndarray]:
        started = time.perf_counter()
        result = self.objective(predt, dtrain)
        self.seconds += time.perf_counter() - started
        self.calls += 1
        return result


def main() -> None:
    params = BoosterParams(rounds=ROUNDS, nthread=THREADS)
    focal, logistic = LossSpec.parse("focal:gamma=2,alpha=0.25"), LossSpec.parse("binary:logistic")
    jobs = []
    for symbol in SYMBOLS:
        data = to_dataset(generate_market(symbol, MarketSpec(rows=ROWS, n_features=30)))
        dtrain = xgb.DMatrix(data.x, label=data.y, nthread=THREADS)
        base = float(np.mean(data.y))
        custom = {**booster_params(logistic, params, base), "base_score": float(logit(base))}
        custom.pop("objective")
        jobs.append({
            "logistic": (booster_params(logistic, params, base), dtrain, None),
            "focal": (booster_params(focal, params, base), dtrain, Timed(focal_objective(nthread=THREADS))),
            "custom_logistic": (custom, dtrain, Timed(custom_logistic(data.y))),
        })
    times: dict[str, list[float]] = {"logistic": [], "focal": [], "custom_logistic": []}
    names = list(times)
    nodes = dict.fromkeys(names, 0)  # tree size drives hist cost, so it is part of the comparison
    for rep in range(REPS):
        total = dict.fromkeys(names, 0.0)
        for i, job in enumerate(jobs):
            for name in names[(rep + i) % 3:] + names[: (rep + i) % 3]:
                xgb_params, dtrain, obj = job[name]
                started = time.perf_counter()
                booster = xgb.train(xgb_params, dtrain, num_boost_round=ROUNDS, obj=obj)
                total[name] += time.perf_counter() - started
                if rep == 0:
                    nodes[name] += sum(len(tree.splitlines()) for tree in booster.get_dump())
        for name in names:
            times[name].append(total[name])
        print(f"rep {rep}: " + " ".join(f"{k}={v:.2f}s" for k, v in total.items()), file=sys.stderr)
    print("tree nodes: " + " ".join(f"{k}={v}" for k, v in nodes.items()) + f"; load average {os.getloadavg()[0]:.1f}",
          file=sys.stderr)
    ratio = lambda a, b: float(np.median(np.array(times[a]) / np.array(times[b])))  # noqa: E731
    emit("model_runtime_train_time_focal_over_logistic", ratio("focal", "logistic"), "ratio", 1.10, "lower")
    emit("model_runtime_train_time_focal_over_custom_logistic", ratio("focal", "custom_logistic"), "ratio", 1.05,
         "lower")
    emit("model_runtime_train_time_custom_logistic_over_logistic", ratio("custom_logistic", "logistic"), "ratio",
         1.21, "lower")
    round_ms = float(np.median(times["logistic"])) / (len(jobs) * ROUNDS) * 1e3
    for name in ("focal", "custom_logistic"):
        timed = [job[name][2] for job in jobs]
        per_round = sum(t.seconds for t in timed) / sum(t.calls for t in timed) * 1e3
        print(f"{name}: objective {per_round:.3f} ms per round vs {round_ms:.2f} ms per logistic round", file=sys.stderr)
        emit(f"model_runtime_objective_ms_per_round_{name}", per_round, "ms", round(0.1 * round_ms, 3), "lower")

    rng = np.random.default_rng(0)
    margin, label = rng.normal(-2, 2, 200_000), (rng.random(200_000) < 0.1).astype(np.float64)
    focal_grad_hess(margin, label)  # compile
    runs = []
    for _ in range(30 if QUICK else 200):
        started = time.perf_counter()
        focal_grad_hess(margin, label)
        runs.append(time.perf_counter() - started)
    emit("model_runtime_focal_grad_hess_throughput", margin.size / float(np.median(runs)), "rows/s", 1e8, "higher")


if __name__ == "__main__":
    main()
