"""Seed a real MLflow with what a rollout reads: sweep runs and registered models with aliases.

The end-to-end tests and benchmarks use fabricated metrics (the operator judges numbers,
not models); `make demo` logs real ones with model_runtime instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag


def log_sweep(tracking_uri: str, experiment: str, symbols: Sequence[str], *, folds: int = 13, lift: float = 0.05,
              seed: int = 0) -> int:
    """One run per (symbol, fold, variant); the candidate's f1_buy is `lift` higher on average."""
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)  # never the process-wide registry URI
    experiment_id = client.get_experiment_by_name(experiment)
    experiment_id = experiment_id.experiment_id if experiment_id else client.create_experiment(experiment)
    rng = np.random.default_rng(seed)
    count = 0
    for symbol in symbols:
        for fold in range(folds):
            base_f1 = 0.30 + rng.normal(0, 0.02)
            for variant, f1, ece in (("baseline", base_f1, 0.030 + rng.normal(0, 0.002)),
                                     ("candidate", base_f1 + lift + rng.normal(0, 0.01), 0.031 + rng.normal(0, 0.002))):
                tags = {"variant": variant, "symbol": symbol, "fold": str(fold), "strategy": "momentum",
                        "loss_function": "binary:logistic" if variant == "baseline" else "focal:gamma=2,alpha=0.25"}
                run = client.create_run(experiment_id, tags=tags)
                metrics = {"f1_buy": f1, "ece_hold": ece, "expectancy_net": rng.normal(0.01, 0.005)}
                client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
                                 tags=[RunTag(k, v) for k, v in tags.items()])
                client.set_terminated(run.info.run_id)
                count += 1
    return count


def register_models(tracking_uri: str, template: str, strategy: str, symbols: Sequence[str]) -> dict[str, dict[str, str]]:
    """Per symbol: version 1 is the champion, version 2 the candidate; returns name -> alias -> version."""
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)  # never the process-wide registry URI
    experiment = client.get_experiment_by_name("model-training") or client.get_experiment(
        client.create_experiment("model-training"))
    registered: dict[str, dict[str, str]] = {}
    for symbol in symbols:
        name = template.replace("{symbol}", symbol).replace("{strategy}", strategy)
        client.create_registered_model(name)
        for alias in ("champion", "candidate"):
            run = client.create_run(experiment.experiment_id, tags={"symbol": symbol, "role": alias})
            client.set_terminated(run.info.run_id)
            version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
            client.set_registered_model_alias(name, alias, version.version)
        registered[name] = {"champion": "1", "candidate": "2"}
    return registered
