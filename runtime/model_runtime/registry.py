"""MLflow side of training: the naming contract, logging a trained model, registering it, aliasing it.

Names and tags here are read by the operator (shadow gate, promotion, rollback) and by the server.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING

import mlflow
import mlflow.xgboost
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict

from model_runtime.drift import ARTIFACT_PATH

if TYPE_CHECKING:  # the server uses this module too and needs no training stack (SymPy, Numba)
    from model_runtime.training.booster import TrainedModel

FEATURE_RUN_TAG = "feature_artifact_run_id"
MODEL_ARTIFACT = "model"


class Naming(BaseModel):
    """Registered-model name template and the two aliases the rollout moves."""

    model_config = ConfigDict(frozen=True)

    template: str = "cvntrade_XGBoost_{symbol}_{strategy}"
    champion_alias: str = "champion"
    candidate_alias: str = "candidate"

    def model_name(self, symbol: str, strategy: str) -> str:
        return self.template.format(symbol=symbol, strategy=strategy)


def connect(tracking_uri: str) -> MlflowClient:
    """A client for `tracking_uri`, also made the process default for tracking and registry.

    MLflow resolves `models:/` URIs and fluent calls through the process-wide URIs (the registry one
    otherwise defaults to a local SQLite file), so a process talks to exactly one MLflow.
    """
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri, tracking_uri)


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment's id, created on first use (two creators racing both end up with the same one)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except mlflow.exceptions.MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _finite(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}


@lru_cache(maxsize=1)
def model_requirements() -> tuple[str, ...]:
    """The served model's pip requirements: the XGBoost flavour's own pins, read once per process.

    Given explicitly because MLflow otherwise infers them by loading the model in a fresh Python
    subprocess per `log_model` call (seconds each, most of a training job's wall time); loading a booster
    needs nothing beyond xgboost and what it depends on, so the inferred list adds nothing.
    """
    return tuple(mlflow.xgboost.get_default_pip_requirements())


def log_trained_model(trained: TrainedModel, *, tracking_uri: str, experiment: str, model_name: str,
                      alias: str, tags: Mapping[str, str]) -> str:
    """One MLflow run with params, metrics, the feature reference and the model; registered and aliased.

    Returns the new model version. Metrics are logged after the model, attached to it: MLflow links a
    run's earlier metrics to a newly logged model by fetching each one's history (a request per metric).
    The version tags go in with the registration rather than one request each afterwards.
    """
    client = connect(tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id(client, experiment), tags=dict(tags)) as run:
        run_id = run.info.run_id
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in trained.params.items()])
        mlflow.log_dict(trained.reference.model_dump(), ARTIFACT_PATH)
        info = mlflow.xgboost.log_model(trained.booster, name=MODEL_ARTIFACT, model_format="json",
                                        registered_model_name=model_name,
                                        pip_requirements=list(model_requirements()),
                                        tags={**tags, "run_id": run_id})
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0, model_id=info.model_id)
                                          for k, v in _finite(trained.metrics).items()])
    version = str(info.registered_model_version)
    client.set_registered_model_alias(model_name, alias, version)
    return version


def log_metrics_run(client: MlflowClient, experiment_id_: str, *, tags: Mapping[str, str],
                    params: Mapping[str, object], metrics: Mapping[str, float]) -> str:
    """A finished run holding only tags, params and metrics (a sweep row): three requests, no artifacts."""
    run = client.create_run(experiment_id_, tags=dict(tags))
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, v, now, 0) for k, v in _finite(metrics).items()],
        params=[Param(k, str(v)) for k, v in params.items()],
        tags=[RunTag("mlflow.runName", "-".join(tags.get(k, "") for k in ("symbol", "variant", "fold")))],
    )
    client.set_terminated(run.info.run_id)
    return run.info.run_id
