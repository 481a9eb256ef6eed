"""One reconcile on fakes: what the engine plans is carried out, and a cycle that the engine's schedule says is
due once the actions are done runs in the same reconcile (the shell holds no rule of its own about it)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from engine_driver import Driver
from prometheus_client import CollectorRegistry

from modelrollout.controller import Controller
from modelrollout.engine import Event
from modelrollout.kube import REQUEST_ANNOTATION_PREFIX, RolloutObject, format_request
from modelrollout.metrics import OperatorMetrics
from modelrollout.observation import Request
from modelrollout.status import ModelRolloutStatus, ModelVersions


class FakeKube:
    """The apiserver and the ConfigMap, as far as a cycle that reads no Prometheus and no MLflow needs them."""

    def __init__(self) -> None:
        self.written: list[ModelRolloutStatus] = []
        self.flags: dict[str, str] = {}

    def write_status(self, rollout: RolloutObject, status: ModelRolloutStatus) -> RolloutObject:
        self.written.append(status)
        return replace(rollout, status=status.model_dump(mode="json", by_alias=True, exclude_none=True),
                       resource_version=str(len(self.written) + 1))

    def admission_refuses_forgery(self, rollout: RolloutObject, now: datetime) -> str:
        return ""

    def set_flags(self, namespace: str, configmap: str, flags: dict[str, str]) -> bool:
        self.flags.update(flags)
        return True


def test_an_abort_whose_revert_is_carried_out_ends_rolled_back_in_the_same_reconcile() -> None:
    driver = Driver()
    driver.to_canary()
    evaluated = driver.status.last_evaluated_at
    assert evaluated is not None
    now = evaluated + timedelta(seconds=1)  # neither the gates (2 s) nor the triggers (2 s) are due: nothing is queried
    # No champion recorded, so the revert is the ConfigMap alone (the MLflow steps would need a server).
    status = driver.status.model_copy(update={"versions": ModelVersions(), "last_triggers_evaluated_at": evaluated})
    abort = Request(kind="abort", id="a-1", by="alice@cvntrade.io", at=now)
    rollout = RolloutObject(
        name="r", namespace="ns", uid="u", generation=driver.generation, resource_version="1",
        spec=driver.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        status=status.model_dump(mode="json", by_alias=True, exclude_none=True),
        annotations={f"{REQUEST_ANNOTATION_PREFIX}abort": format_request(abort)}, deleting=False)
    kube, events = FakeKube(), list[Event]()
    controller = Controller(kube=kube, emit=lambda _, event: events.append(event),  # type: ignore[arg-type]
                            metrics=OperatorMetrics(CollectorRegistry()), clock=lambda: now)

    controller.reconcile(rollout)

    assert [s.phase for s in kube.written] == ["RollingBack", "RollingBack", "RolledBack"]  # planned, done, ended
    assert [e.reason for e in events] == ["RollingBack", "ActionDone", "RolledBack"]
    change = driver.spec.change
    assert kube.flags[change.override_key("BTCUSDC")] == change.baseline
