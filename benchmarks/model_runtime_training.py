"""Training cost: of focal loss against binary:logistic, and of everything a training job does besides boosting.

Part 1, the loss: focal / binary:logistic and focal / custom-logistic time, kernel throughput. Same data,
rounds and tree settings for every variant (5 symbols x 200k rows x 30 features, depth 6, 100 rounds,
hist, 2 threads), each with the parameters the trainer really uses. Variants run interleaved in a
rotating order inside each repetition, ratios are taken per repetition (side by side) and the median
over repetitions is reported.

Part 2, the job (`model-runtime train` at 20,000 rows x 30 rounds, against a real `mlflow server`), in
phases:
- import: a fresh interpreter importing the trainer (`model_runtime.training.train_job`), best of 3
  (quick: 1); and loading
  the focal kernel, cold (empty kernel cache: SymPy derivation + Numba compilation) and warm;
- boosting: `train_booster` of one symbol (the pure XGBoost time, the yardstick of the goal);
- MLflow logging: `log_trained_model` of one symbol (run, params, metrics, feature reference, model,
  registration, alias), and train-and-log (`fit_fold` + logging) over boosting; median over symbols,
  after a first symbol that pays the process's one-off costs;
- end to end: the wall time of the whole `model-runtime train` subprocess for 5 symbols, per loss,
  with the kernel cache warm.
The kernel cache lives in a temporary NUMBA_CACHE_DIR, so "cold" is really cold. Every phase prints the
load average beside it on stderr: on a busy machine every figure here grows. BENCH_QUICK=1 shrinks
part 1, and part 2 to 2 symbols, for a smoke run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xgboost as xgb
from scipy.special import expit, logit

import model_runtime  # noqa: F401  (sets the OpenMP wait policy before xgboost loads)
from devstack.bench import emit
from devstack.mlflow import start_mlflow
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


def loss_cost() -> None:
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


JOB_SYMBOLS = ["BTCUSDC", "ETHUSDC", "SOLUSDC", "XRPUSDC", "BNBUSDC"][: 2 if QUICK else 5]
JOB_ROWS, JOB_ROUNDS = 20_000, 30
LOSSES = {"logistic": "binary:logistic", "focal": "focal:gamma=2,alpha=0.25"}
# A fresh interpreter: import the trainer, then (focal) load the kernel and run it once.
IMPORT_PROBE = """
import json, sys, time
started = time.perf_counter()
import model_runtime.training.train_job
imported = time.perf_counter()
from model_runtime.training.focal_kernel import focal_grad_hess
import numpy as np
focal_grad_hess(np.zeros(8), np.zeros(8))
print(json.dumps({"import": imported - started, "kernel": time.perf_counter() - imported,
                  "sympy": "sympy" in sys.modules}))
"""


def load() -> str:
    return f"load average {os.getloadavg()[0]:.1f}"


def probe_imports(env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def job_phases(env: dict[str, str], mlflow_url: str) -> None:
    """Import, boosting, MLflow logging, and the end-to-end wall time of `model-runtime train`."""
    cold = probe_imports(env)
    warm = [probe_imports(env) for _ in range(1 if QUICK else 3)]
    imports = min(w["import"] for w in warm)
    print(f"import: trainer {imports:.2f}s; focal kernel cold {cold['kernel']:.2f}s (SymPy loaded: "
          f"{cold['sympy']}), warm {min(w['kernel'] for w in warm):.2f}s (SymPy loaded: {warm[0]['sympy']}); "
          f"{load()}", file=sys.stderr)
    emit("model_runtime_train_import_s", imports, "s", 2.0, "lower")
    emit("model_runtime_focal_kernel_cold_s", cold["kernel"], "s", 5.0, "lower")
    emit("model_runtime_focal_kernel_warm_s", min(w["kernel"] for w in warm), "s", 0.5, "lower")

    from model_runtime.registry import log_trained_model
    from model_runtime.training.booster import SplitSpec, fit_fold, time_splits, train_booster

    params = BoosterParams(rounds=JOB_ROUNDS, nthread=THREADS)
    for name, value in LOSSES.items():
        loss = LossSpec.parse(value)
        boosting, logging_, ratios = [], [], []
        for i, symbol in enumerate(JOB_SYMBOLS):
            data = to_dataset(generate_market(symbol, MarketSpec(rows=JOB_ROWS)))
            fold = time_splits(len(data.y), SplitSpec())[-1]
            started = time.perf_counter()
            train_booster(data.x[fold.train], data.y[fold.train], loss, params, data.features)
            boosted = time.perf_counter() - started
            started = time.perf_counter()
            trained = fit_fold(data, fold, loss, params)
            fitted = time.perf_counter() - started
            started = time.perf_counter()
            log_trained_model(trained, tracking_uri=mlflow_url, experiment="bench-train-phases",
                              model_name=f"bench_phases_{symbol}_{name}", alias="champion",
                              tags={"symbol": symbol, "loss_function": str(loss)})
            logged = time.perf_counter() - started
            print(f"{name} {symbol}: boosting {boosted:.3f}s, fit_fold {fitted:.3f}s, MLflow logging {logged:.3f}s"
                  f"{' (first: one-off costs)' if i == 0 else ''}; {load()}", file=sys.stderr)
            if i > 0:
                boosting.append(boosted)
                logging_.append(logged)
                ratios.append((fitted + logged) / boosted)
        emit(f"model_runtime_train_boosting_s_{name}", statistics.median(boosting), "s", 0.5, "lower")
        emit(f"model_runtime_train_mlflow_log_s_{name}", statistics.median(logging_), "s",
             statistics.median(boosting), "lower")
        emit(f"model_runtime_train_and_log_over_boosting_{name}", statistics.median(ratios), "ratio", 2.0, "lower")

    binary = shutil.which("model-runtime", path=str(Path(sys.executable).parent)) or "model-runtime"
    for name, value in LOSSES.items():
        started = time.perf_counter()
        subprocess.run([binary, "--log-level", "WARNING", "train", "--tracking-uri", mlflow_url,
                        "--experiment", "bench-train-e2e", "--symbols", ",".join(JOB_SYMBOLS), "--strategy", name,
                        "--rows", str(JOB_ROWS), "--rounds", str(JOB_ROUNDS), "--loss", value],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        print(f"model-runtime train {name}, {len(JOB_SYMBOLS)} symbols: {wall:.2f}s wall; {load()}", file=sys.stderr)
        emit(f"model_runtime_train_{len(JOB_SYMBOLS)}_symbols_wall_s_{name}", wall, "s", 10.0, "lower")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    os.environ["NUMBA_CACHE_DIR"] = str(work / "numba")  # before the first kernel load: a cold cache
    env = {**os.environ}
    mlflow = start_mlflow(work / "mlflow")
    try:
        job_phases(env, mlflow.url)
    finally:
        mlflow.stop()
        shutil.rmtree(work, ignore_errors=True)
    loss_cost()


if __name__ == "__main__":
    with contextlib.redirect_stdout(sys.stderr):  # MLflow prints run links; emit() writes to the real stdout
        main()
