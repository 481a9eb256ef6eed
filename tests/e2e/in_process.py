"""For e2e tests that run the reconcile cycle in-process: the real Kubernetes adapter, counted, and a clock
the test moves."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from modelrollout.kube import Kube, RolloutObject
from modelrollout.status import ModelRolloutStatus


class CountingKube(Kube):
    """The real adapter, counting the operator's reads of the rollout and the status writes that reach the
    apiserver."""

    gets = 0
    writes = 0

    def get_rollout(self, namespace: str, name: str) -> RolloutObject | None:
        self.gets += 1
        return super().get_rollout(namespace, name)

    def write_status(self, rollout: RolloutObject, status: ModelRolloutStatus) -> RolloutObject:
        self.writes += 1
        return super().write_status(rollout, status)


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now
