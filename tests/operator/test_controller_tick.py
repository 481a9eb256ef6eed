"""The timer tick reads the rollout from the apiserver only when the watched object may need a cycle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from modelrollout.controller import Controller
from modelrollout.kube import REQUEST_ANNOTATION_PREFIX, RolloutObject, format_request
from modelrollout.metrics import OperatorMetrics
from modelrollout.observation import Request

NOW = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)


class CountingKube:
    def __init__(self) -> None:
        self.gets = 0

    def get_rollout(self, namespace: str, name: str) -> RolloutObject | None:
        self.gets += 1
        return None  # gone: the tick stops right after the read


def body(last_evaluated: timedelta | None = timedelta(seconds=3), interval: str = "10s", generation: int = 2,
         observed: int | None = 2, annotations: dict[str, str] | None = None,
         actions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"observedGeneration": observed, "handledRequests": ["promote/r-1"], "actions": actions or []}
    if last_evaluated is not None:
        status["lastEvaluatedAt"] = (NOW - last_evaluated).isoformat().replace("+00:00", "Z")
    return {"metadata": {"name": "r", "namespace": "ns", "generation": generation, "annotations": annotations or {}},
            "spec": {"analysis": {"interval": interval}}, "status": status}


def request(request_id: str) -> dict[str, str]:
    return {f"{REQUEST_ANNOTATION_PREFIX}promote": format_request(Request(kind="promote", id=request_id, by="alice",
                                                                          at=NOW))}


def gets_for(cached: Any) -> int:
    kube = CountingKube()
    controller = Controller(kube=kube, emit=lambda *_: None,  # type: ignore[arg-type]
                            metrics=OperatorMetrics(CollectorRegistry()), clock=lambda: NOW)
    controller.tick("ns", "r", cached=cached)
    return kube.gets


def test_nothing_due_means_no_read() -> None:
    assert gets_for(body()) == 0


@pytest.mark.parametrize("cached", [
    None,  # no cached object: always read
    body(last_evaluated=timedelta(seconds=10)),  # the interval has passed
    body(last_evaluated=None),  # never evaluated
    body(generation=3),  # the spec changed
    body(observed=None),
    body(annotations=request("r-2")),  # a request not handled yet
    body(actions=[{"id": "1", "state": "Pending"}]),  # a lever still to move
    body(interval="soon"),  # unparseable: let reconcile say so
    {"metadata": {"deletionTimestamp": "2026-01-05T11:00:00Z"}},
    {"spec": "garbage"},
])
def test_anything_that_may_need_work_is_read(cached: Any) -> None:
    assert gets_for(cached) == 1


def test_a_handled_request_and_done_actions_need_no_read() -> None:
    assert gets_for(body(annotations=request("r-1"), actions=[{"id": "1", "state": "Done"}])) == 0


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def test_a_stuck_action_waiting_for_its_next_try_needs_no_read() -> None:
    waiting = [{"id": "1", "state": "Pending", "nextAttemptAt": iso(NOW + timedelta(seconds=30))}]
    assert gets_for(body(actions=waiting)) == 0
    due = [{"id": "1", "state": "Pending", "nextAttemptAt": iso(NOW - timedelta(seconds=1))}]
    assert gets_for(body(actions=due)) == 1


def test_while_rolling_back_only_the_reverts_next_try_makes_a_cycle() -> None:
    rolling_back = body(last_evaluated=timedelta(hours=1), actions=[
        {"id": "1", "state": "Pending", "nextAttemptAt": iso(NOW + timedelta(seconds=30))}])
    rolling_back["status"]["phase"] = "RollingBack"
    assert gets_for(rolling_back) == 0  # nothing is measured while reverting: the interval is no reason
    rolling_back["status"]["actions"] = [{"id": "1", "state": "Done"}]
    assert gets_for(rolling_back) == 1  # every action done: the cycle that ends the rollback
