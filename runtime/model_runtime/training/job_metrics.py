"""Prometheus metrics of a batch training job, published the way batch jobs do.

A job ends before Prometheus could scrape it, so it pushes to a Pushgateway (`--pushgateway URL`) or
writes a node-exporter textfile (`--metrics-textfile PATH`). It also logs the structured event
`focal_loss_active gamma=.. alpha=..`, for log-based alerting where no Pushgateway exists.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, push_to_gateway, write_to_textfile

from model_runtime.loss_flag import LossSpec

log = logging.getLogger(__name__)
JOB = "model-runtime-train"


class TrainerMetrics:
    """`xgboost_training_failed_total{loss_function}` and `focal_loss_active{gamma, alpha}`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.failed = Counter("xgboost_training_failed", "Training runs that raised, by loss function",
                              ["loss_function"], registry=self.registry)
        self.focal_active = Gauge("focal_loss_active", "1 when this job trains with focal loss",
                                  ["gamma", "alpha"], registry=self.registry)

    def started(self, loss: LossSpec, **context: str) -> None:
        """Record which loss the job trains with; empty gamma/alpha labels mean binary:logistic."""
        self.failed.labels(loss_function=str(loss)).inc(0)
        if loss.is_focal:
            self.focal_active.labels(gamma=f"{loss.gamma:g}", alpha=f"{loss.alpha:g}").set(1)
            fields = " ".join(f"{k}={v}" for k, v in context.items())
            log.info("focal_loss_active gamma=%g alpha=%g %s", loss.gamma, loss.alpha, fields)
        else:
            self.focal_active.labels(gamma="", alpha="").set(0)

    def failure(self, loss: LossSpec) -> None:
        self.failed.labels(loss_function=str(loss)).inc()

    def publish(self, *, pushgateway: str | None, textfile: Path | None) -> None:
        """Push and/or write; a failing push is logged, never turned into a failed training job."""
        if textfile is not None:
            write_to_textfile(str(textfile), self.registry)
        if pushgateway:
            try:
                push_to_gateway(pushgateway, job=JOB, registry=self.registry)
            except OSError as error:
                log.error("pushgateway %s unreachable: %s", pushgateway, error)
