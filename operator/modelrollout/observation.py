"""What the imperative shell hands the decision engine each cycle: plain, immutable data.

Adapters (Prometheus, MLflow, Kubernetes) produce these; the pure gate functions turn
readings into verdicts; the engine decides from verdicts, requests and the clock alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from modelrollout.status import Measurement, ModelVersions, ReplayFinding, SweepJobState

Variant = Literal["baseline", "candidate"]
RequestKind = Literal["promote", "abort", "retry"]

@dataclass(frozen=True)
class QueryResult:
    """One PromQL query's answer: a value per `symbol` label, or why there is none.

    `error` is set when the query could not be answered (unreachable, timeout, bad
    PromQL, non-vector result); an empty `values` with no error means "no data".
    """

    query: str
    values: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class RangeResult:
    """One PromQL range query's answer: (unix time, value) samples per `symbol` label, or why there is none."""

    query: str
    values: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class SweepRow:
    """One MLflow run of the shadow sweep: a (symbol, fold, variant) evaluation."""

    run_id: str
    symbol: str
    fold: str
    variant: Variant
    metrics: dict[str, float]


@dataclass(frozen=True)
class SweepEvidence:
    experiment: str
    rows: tuple[SweepRow, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class SweepJobProgress:
    """The sweep Job as read from the apiserver (`error`: it could not be read; `state` then means nothing)."""

    name: str
    state: SweepJobState
    succeeded: int = 0
    active: int = 0
    failed: int = 0
    message: str = ""
    error: str | None = None


@dataclass(frozen=True)
class Request:
    """A human's promote / abort / retry, read from the rollout's annotations by id.

    `by` and `groups` are what the admission policy checked against the apiserver's
    authentication of whoever wrote the annotation; `at`, `stage`, `revision` and `ticket`
    are the client's word.
    """

    kind: RequestKind
    id: str
    by: str
    at: datetime
    groups: tuple[str, ...] = ()
    ticket: str = ""
    stage: str = ""
    revision: str = ""

    @property
    def key(self) -> str:
        """What `status.handledRequests` records: the kind keeps each kind's latest id from aging out."""
        return f"{self.kind}/{self.id}"


@dataclass(frozen=True)
class Observation:
    """Everything measured for one decision. Verdicts are already computed (modelrollout.gates).

    `gates` / `triggers` are None when they were not measured this cycle (not due, or nothing to
    measure), which the engine reads as "no news", never as "none passed".
    """

    gates: tuple[Measurement, ...] | None = None
    triggers: tuple[Measurement, ...] | None = None
    versions: ModelVersions | None = None  # None: MLflow could not be read this cycle
    versions_error: str | None = None
    sweep_fingerprint: str | None = None  # identifies the sweep evidence judged (run ids), when read
    sweep_job: SweepJobProgress | None = None  # the shadow stage's sweep Job, when the plan read it
    replay: tuple[ReplayFinding, ...] | None = None  # the plan replayed over the baseline's history, when asked
    # Why this cycle's human requests cannot be trusted (the apiserver accepted a forged one), "" when it refused it
    requests_unverified: str = ""
