"""The inference server's Prometheus metrics; the names are a contract with the alerts and the operator.

Rolling statistics (feature PSI, output sharpness) are computed at scrape time from fixed-size ring
buffers, so a request only appends a row and the cost does not grow with the window.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from model_runtime.drift import psi
from model_runtime.serving.model_store import ServedModel
from model_runtime.training.evaluation import sharpness

PROBA_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
MIN_PSI_ROWS = 100  # below this PSI is dominated by sampling noise


class RingBuffer:
    """The last `capacity` rows of a fixed width."""

    def __init__(self, capacity: int, width: int) -> None:
        self.data = np.empty((capacity, width))
        self.size = 0
        self.next = 0

    def extend(self, rows: np.ndarray) -> None:
        rows = rows[-self.data.shape[0]:]
        end = self.next + len(rows)
        if end <= self.data.shape[0]:
            self.data[self.next:end] = rows
        else:
            split = self.data.shape[0] - self.next
            self.data[self.next:] = rows[:split]
            self.data[:end - self.data.shape[0]] = rows[split:]
        self.next = end % self.data.shape[0]
        self.size = min(self.size + len(rows), self.data.shape[0])

    def values(self) -> np.ndarray:
        return self.data[: self.size]


class RollingStats(Collector):
    """`feature_psi{symbol, feature}` for the served model's top-5 features and `output_sharpness{symbol, variant}`."""

    def __init__(self, window: int, served: Callable[[], Mapping[str, ServedModel]]) -> None:
        self.window = window
        self.served = served
        self.features: dict[str, RingBuffer] = {}
        self.outputs: dict[tuple[str, str], RingBuffer] = {}

    def observe(self, symbol: str, variant: str, x: np.ndarray, proba: np.ndarray) -> None:
        buffer = self.features.get(symbol)
        if buffer is None or buffer.data.shape[1] != x.shape[1]:
            buffer = self.features[symbol] = RingBuffer(self.window, x.shape[1])
        buffer.extend(x)
        outputs = self.outputs.get((symbol, variant))
        if outputs is None:  # not setdefault: that would allocate a whole window on every request
            outputs = self.outputs[(symbol, variant)] = RingBuffer(self.window, 1)
        outputs.extend(proba[:, None])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        drift = GaugeMetricFamily("feature_psi", "PSI of a top-5 feature over the rolling window vs training",
                                  labels=["symbol", "feature"])
        for symbol, model in self.served().items():
            buffer = self.features.get(symbol)
            if buffer is None or buffer.size < MIN_PSI_ROWS or buffer.data.shape[1] != model.n_features:
                continue
            for name, column in zip(model.reference.top_features, model.top_feature_indices, strict=True):
                drift.add_metric([symbol, name], psi(model.reference.bins[name], buffer.values()[:, column]))
        yield drift
        sharp = GaugeMetricFamily("output_sharpness", "Rolling mean of max(p, 1 - p) of served buy probabilities",
                                  labels=["symbol", "variant"])
        for (symbol, variant), buffer in self.outputs.items():
            if buffer.size:
                sharp.add_metric([symbol, variant], sharpness(buffer.values()[:, 0]))
        yield sharp


class ServerMetrics:
    """Every series the server exports, in its own registry (tests may run several servers)."""

    def __init__(self, window: int, served: Callable[[], Mapping[str, ServedModel]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.buy_proba = Histogram("buy_proba", "Served buy probability", ["symbol", "variant"],
                                   buckets=PROBA_BUCKETS, registry=r)
        self.latency = Histogram("inference_latency_seconds", "Time to answer a /predict request", ["symbol"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("predict_requests", "/predict requests by HTTP status", ["symbol", "code"],
                                registry=r)
        self.answered = Counter("model_predictions", "Rows answered, by the model version that answered them",
                                ["symbol", "variant", "version"], registry=r)
        self.focal_active = Gauge("focal_loss_active", "1 when the symbol serves a focal-loss model",
                                  ["symbol", "gamma", "alpha"], registry=r)
        self.version_info = Gauge("model_version_info", "The model version a symbol serves",
                                  ["symbol", "variant", "version", "alias"], registry=r)
        self.f1_buy = Gauge("model_training_f1_buy", "f1_buy logged by the model's training run",
                            ["symbol", "variant"], registry=r)
        self.ece_hold = Gauge("model_ece_hold", "ece_hold logged by the model's training run",
                              ["symbol", "variant"], registry=r)
        self.training_sharpness = Gauge("model_training_sharpness", "Holdout sharpness logged at training",
                                        ["symbol", "variant"], registry=r)
        self.registry_up = Gauge("model_registry_up", "1 when the last MLflow poll succeeded", registry=r)
        self.flag_source_up = Gauge("model_flag_source_up", "1 when the flags are current: the ConfigMap watch is "
                                    "listed and connected (always 1 for a mounted directory or the environment)",
                                    registry=r)
        self.flag_source_up.set(1)
        self.rolling = RollingStats(window, served)
        r.register(self.rolling)
        self._labels: dict[tuple[str, str], tuple[str, ...]] = {}
        self._served_children: dict[tuple[str, str, str], tuple[Histogram, Histogram, Counter, Counter]] = {}

    def _replace(self, gauge: Gauge, key: tuple[str, str], labels: tuple[str, ...], value: float) -> None:
        """Keep exactly one series per key, so a switch never leaves a stale series behind."""
        old = self._labels.get(key)
        if old is not None and old != labels:
            gauge.remove(*old)
        gauge.labels(*labels).set(value)
        self._labels[key] = labels

    def model_loaded(self, symbol: str, variant: str, model: ServedModel) -> None:
        """Training-time quality of a loaded model (both aliases, so gates can compare them)."""
        for gauge, metric in ((self.f1_buy, "f1_buy"), (self.ece_hold, "ece_hold"),
                              (self.training_sharpness, "sharpness")):
            if metric in model.metrics:
                gauge.labels(symbol, variant).set(model.metrics[metric])

    def model_dropped(self, symbol: str, variant: str) -> None:
        for gauge in (self.f1_buy, self.ece_hold, self.training_sharpness):
            with contextlib.suppress(KeyError):  # never loaded
                gauge.remove(symbol, variant)

    def serving(self, symbol: str, variant: str, model: ServedModel) -> None:
        loss = model.loss
        focal = (f"{loss.gamma:g}", f"{loss.alpha:g}") if loss.is_focal else ("", "")
        self._replace(self.focal_active, (symbol, "focal"), (symbol, *focal), 1.0 if loss.is_focal else 0.0)
        self._replace(self.version_info, (symbol, "version"), (symbol, variant, model.version, model.alias), 1.0)

    def observe(self, symbol: str, variant: str, version: str, x: np.ndarray, proba: np.ndarray,
                seconds: float) -> None:
        """One answered request; the labelled children are looked up once per (symbol, variant, version), not per call."""
        children = self._served_children.get((symbol, variant, version))
        if children is None:
            children = self._served_children[(symbol, variant, version)] = (
                self.buy_proba.labels(symbol, variant), self.latency.labels(symbol), self.requests.labels(symbol, "200"),
                self.answered.labels(symbol, variant, version))
        histogram, latency, requests, answered = children
        answered.inc(len(proba))
        for p in proba.tolist():
            histogram.observe(p)
        latency.observe(seconds)
        requests.inc()
        self.rolling.observe(symbol, variant, x, proba)
