"""F1_buy and ECE_HOLD of focal loss versus binary:logistic on the synthetic imbalanced market.

The trainer's own pipeline (walk-forward folds, threshold and temperature fitted on validation, scored
on holdout), paired per (symbol, fold). Reported as they come out, whichever variant wins; the goal of
each focal line is the logistic baseline's value measured in the same run. BENCH_QUICK=1 shrinks it.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from devstack.bench import emit
from model_runtime.loss_flag import LossSpec
from model_runtime.training.booster import BoosterParams, SplitSpec, fit_fold, time_splits, to_dataset
from model_runtime.training.synthetic import MarketSpec, generate_market

QUICK = os.environ.get("BENCH_QUICK") == "1"
SYMBOLS = ["BTCUSDC", "ETHUSDC", "SOLUSDC", "XRPUSDC", "BNBUSDC"][: 2 if QUICK else 5]
ROWS = 10_000 if QUICK else 60_000
FOLDS = 3 if QUICK else 5


def main() -> None:
    variants = {"logistic": LossSpec.parse("binary:logistic"), "focal": LossSpec.parse("focal:gamma=2,alpha=0.25")}
    results: dict[str, dict[str, list[float]]] = {v: {"f1_buy": [], "ece_hold": [], "ece_raw": []} for v in variants}
    for symbol in SYMBOLS:
        data = to_dataset(generate_market(symbol, MarketSpec(rows=ROWS)))
        for fold in time_splits(len(data.y), SplitSpec(folds=FOLDS, validation=0.15, holdout=0.5)):
            for name, loss in variants.items():
                metrics = fit_fold(data, fold, loss, BoosterParams()).metrics
                results[name]["f1_buy"].append(metrics["f1_buy"])
                results[name]["ece_hold"].append(metrics["ece_hold"])
                results[name]["ece_raw"].append(metrics["ece_hold_uncalibrated"])
    mean = {v: {k: float(np.mean(x)) for k, x in r.items()} for v, r in results.items()}
    wins = int(np.sum(np.array(results["focal"]["f1_buy"]) > np.array(results["logistic"]["f1_buy"])))
    print(f"pairs={len(results['focal']['f1_buy'])} focal F1 wins={wins} means={json.dumps(mean)}", file=sys.stderr)
    f1_delta = np.array(results["focal"]["f1_buy"]) - np.array(results["logistic"]["f1_buy"])
    ece_delta = np.array(results["focal"]["ece_hold"]) - np.array(results["logistic"]["ece_hold"])
    emit("model_runtime_f1_buy_focal", mean["focal"]["f1_buy"], "f1", mean["logistic"]["f1_buy"], "higher")
    emit("model_runtime_ece_hold_focal", mean["focal"]["ece_hold"], "ece", mean["logistic"]["ece_hold"], "lower")
    emit("model_runtime_f1_buy_focal_minus_logistic_paired", float(np.mean(f1_delta)), "f1", 0.0, "higher")
    emit("model_runtime_ece_hold_focal_minus_logistic_paired", float(np.mean(ece_delta)), "ece", 0.0, "lower")


if __name__ == "__main__":
    main()
