"""Feature drift: the training distribution reference (logged as an MLflow artifact) and PSI against it.

The reference stores decile edges of each feature on the training split and the share of training rows
per bin. The server bins a rolling window of live rows with the same edges, so PSI compares like with
like and needs no training data at serving time.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

ARTIFACT_PATH = "features/feature_reference.json"
TOP_FEATURES = 5
PSI_EPSILON = 1e-4  # keeps ln(a / e) finite when a live bin is empty


class FeatureBins(BaseModel):
    model_config = ConfigDict(frozen=True)

    edges: list[float] = Field(description="inner bin edges; bins are (-inf, e0], (e0, e1], ..., (ek, inf)")
    expected: list[float] = Field(description="share of training rows per bin")


class FeatureReference(BaseModel):
    """Feature list in model order, importance ranking and the per-feature training bins."""

    model_config = ConfigDict(frozen=True)

    features: list[str]
    importance: dict[str, float]
    bins: dict[str, FeatureBins]

    @property
    def top_features(self) -> list[str]:
        ranked = sorted(self.features, key=lambda name: -self.importance.get(name, 0.0))
        return ranked[:TOP_FEATURES]


def _bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1)
    return counts / max(values.size, 1)


def build_reference(x_train: np.ndarray, features: list[str], importance: dict[str, float],
                    quantiles: int = 10) -> FeatureReference:
    """Decile bins of every training feature (duplicate edges merged, for discrete features)."""
    bins = {}
    for j, name in enumerate(features):
        column = x_train[:, j]
        edges = np.unique(np.quantile(column, np.linspace(0, 1, quantiles + 1)[1:-1]))
        bins[name] = FeatureBins(edges=edges.tolist(), expected=_bin_shares(column, edges).tolist())
    return FeatureReference(features=features, importance=importance, bins=bins)


def psi(reference: FeatureBins, values: np.ndarray) -> float:
    """Population stability index of live `values` against the training bins (0.1 watch, 0.25 act)."""
    edges = np.asarray(reference.edges)
    expected = np.clip(np.asarray(reference.expected), PSI_EPSILON, None)
    actual = np.clip(_bin_shares(np.asarray(values, dtype=np.float64), edges), PSI_EPSILON, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))
