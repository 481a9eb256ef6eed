"""The operator's own Prometheus metrics: what it is doing, how often, and how fast."""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from modelrollout.status import Phase

PHASES: tuple[Phase, ...] = ("Pending", "Progressing", "Paused", "Degraded", "AwaitingApproval", "RollingBack",
                             "RolledBack", "NotPromoted", "Watching", "Completed", "Invalid")


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.rollouts = Gauge("modelrollout_rollouts", "Rollouts this operator drives, by phase", ["phase"],
                              registry=self.registry)
        self.gate_evaluations = Counter("modelrollout_gate_evaluations", "Gate measurements, by gate and verdict",
                                        ["gate", "verdict"], registry=self.registry)
        self.rollback_actions = Counter("modelrollout_rollback_actions", "Rollback actions carried out, by type",
                                        ["action"], registry=self.registry)
        self.prometheus_queries = Counter("modelrollout_prometheus_queries",
                                          "Instant queries sent to Prometheus (HTTP requests)", registry=self.registry)
        self.prometheus_queries_shared = Counter(
            "modelrollout_prometheus_queries_shared",
            "Instant queries answered by an identical query another rollout sent moments before",
            registry=self.registry)
        self.reconcile_seconds = Histogram("modelrollout_reconcile_duration_seconds",
                                           "Time of one reconcile tick", registry=self.registry,
                                           buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.stage = Gauge("modelrollout_stage_info", "1 for each rollout's current stage and phase",
                           ["rollout", "namespace", "stage", "phase"], registry=self.registry)
        self._stage_labels: dict[tuple[str, str], tuple[str, str]] = {}

    def set_phases(self, phases: dict[str, str]) -> None:
        counts = Tally(phases.values())
        for phase in PHASES:
            self.rollouts.labels(phase=phase).set(counts.get(phase, 0))

    def stage_info(self, namespace: str, name: str, stage: str, phase: str) -> None:
        previous = self._stage_labels.get((namespace, name))
        if previous == (stage, phase):
            return
        if previous is not None:
            self.stage.remove(name, namespace, *previous)
        self.stage.labels(rollout=name, namespace=namespace, stage=stage, phase=phase).set(1)
        self._stage_labels[(namespace, name)] = (stage, phase)

    def count_query(self, shared: bool) -> None:
        (self.prometheus_queries_shared if shared else self.prometheus_queries).inc()

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)
