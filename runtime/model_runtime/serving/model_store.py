"""Loading a served model from the MLflow registry: booster, its logged metrics, and its drift reference.

Blocking I/O only; the server runs these calls in a worker thread and swaps the result in atomically.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow.xgboost
import numpy as np
import xgboost as xgb
from mlflow.tracking import MlflowClient

from model_runtime.drift import ARTIFACT_PATH, FeatureReference
from model_runtime.loss_flag import LossSpec
from model_runtime.registry import FEATURE_RUN_TAG


@dataclass(frozen=True)
class RegistryView:
    """What decides whether a reload is needed: alias -> version, and the pinned feature-artifact run."""

    versions: dict[str, str]
    feature_run_id: str | None


@dataclass(frozen=True)
class ServedModel:
    name: str
    alias: str
    version: str
    run_id: str
    booster: xgb.Booster
    loss: LossSpec
    temperature: float
    threshold: float
    metrics: dict[str, float]
    reference: FeatureReference
    feature_run_id: str

    @property
    def n_features(self) -> int:
        return len(self.reference.features)

    @property
    def top_feature_indices(self) -> list[int]:
        return [self.reference.features.index(name) for name in self.reference.top_features]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Temperature-scaled buy probability; the booster returns margins for either loss.

        validate_features=False skips only the Python-side width check (a second call into XGBoost per
        request); XGBoost's own C++ check of the width still raises on a mismatch.
        """
        margin = self.booster.inplace_predict(x, predict_type="margin", validate_features=False)
        return 1.0 / (1.0 + np.exp(-np.asarray(margin, dtype=np.float64) / self.temperature))


def registry_view(client: MlflowClient, name: str) -> RegistryView:
    model = client.get_registered_model(name)
    return RegistryView(versions={alias: str(v) for alias, v in model.aliases.items()},
                        feature_run_id=model.tags.get(FEATURE_RUN_TAG))


def load_reference(client: MlflowClient, run_id: str) -> FeatureReference:
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, ARTIFACT_PATH, tmp)
        return FeatureReference.model_validate(json.loads(Path(path).read_text()))


def load_served_model(client: MlflowClient, name: str, alias: str, version: str,
                      feature_run_id: str | None) -> ServedModel:
    """Download one model version; the drift reference comes from the pinned run if the tag is set."""
    model_version = client.get_model_version(name, version)
    run_id = model_version.run_id
    booster = mlflow.xgboost.load_model(f"models:/{name}/{version}")
    booster.set_param({"nthread": 1})  # single-row requests: a thread team costs more than it saves
    reference_run = feature_run_id or run_id
    reference = load_reference(client, reference_run)
    if booster.num_features() != len(reference.features):
        raise ValueError(f"{name} v{version} expects {booster.num_features()} features but the reference of run "
                         f"{reference_run} lists {len(reference.features)}")
    return ServedModel(
        name=name, alias=alias, version=version, run_id=run_id, booster=booster,
        loss=LossSpec.parse(booster.attr("loss_function") or "binary:logistic"),
        temperature=float(booster.attr("temperature") or 1.0), threshold=float(booster.attr("threshold") or 0.5),
        metrics=dict(client.get_run(run_id).data.metrics), reference=reference, feature_run_id=reference_run,
    )
