"""The timer tick reads the rollout from the apiserver only when the watched object may need a cycle."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from devstack.scenario import FAST_EXAMPLE
from modelrollout.controller import Controller
from modelrollout.kube import REQUEST_ANNOTATION_PREFIX, Conflict, RolloutObject, format_request
from modelrollout.metrics import OperatorMetrics
from modelrollout.observation import Observation, Request
from modelrollout.status import ModelRolloutStatus

NOW = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)


class CountingKube:
    def __init__(self) -> None:
        self.gets = 0

    def get_rollout(self, namespace: str, name: str) -> RolloutObject | None:
        self.gets += 1
        return None  # gone: the tick stops right after the read


def body(last_evaluated: timedelta | None = timedelta(seconds=3), interval: str = "10s", generation: int = 2,
         observed: int | None = 2, annotations: dict[str, str] | None = None,
         actions: list[dict[str, Any]] | None = None, triggers_checked: timedelta | None = None,
         live: bool = False, trigger_interval: str | None = None) -> dict[str, Any]:
    """The fast example as the watch delivers it, in its shadow stage, or its canary (`live`) with BTCUSDC switched."""
    spec = yaml.safe_load(FAST_EXAMPLE.read_text())["spec"]
    spec["analysis"] = {"interval": interval} | ({"triggerInterval": trigger_interval} if trigger_interval else {})
    status: dict[str, Any] = {"observedGeneration": observed, "handledRequests": ["promote/r-1"], "actions": actions or [],
                              "revision": "r1", "phase": "Progressing", "stage": "shadow", "stageIndex": 0}
    if live:
        status |= {"stage": "canary", "stageIndex": 1, "symbolsOnCandidate": ["BTCUSDC"],
                   "stageStartedAt": iso(NOW - timedelta(minutes=5))}
    if last_evaluated is not None:
        status["lastEvaluatedAt"] = iso(NOW - last_evaluated)
    if triggers_checked is not None:
        status["lastTriggersEvaluatedAt"] = iso(NOW - triggers_checked)
    return {"metadata": {"name": "r", "namespace": "ns", "generation": generation, "annotations": annotations or {}},
            "spec": spec, "status": status}


def action(state: str, next_attempt_at: str | None = None) -> dict[str, Any]:
    return {"id": "0001-setFlag", "type": "setFlag", "target": "cm", "reason": "canary canary", "state": state,
            "plannedAt": iso(NOW - timedelta(minutes=1))} | ({"nextAttemptAt": next_attempt_at} if next_attempt_at else {})


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def request(request_id: str) -> dict[str, str]:
    return {f"{REQUEST_ANNOTATION_PREFIX}promote": format_request(Request(kind="promote", id=request_id, by="alice",
                                                                          at=NOW))}


def controller(kube: Any = None) -> Controller:
    return Controller(kube=kube or CountingKube(), emit=lambda *_: None, metrics=OperatorMetrics(CollectorRegistry()),
                      clock=lambda: NOW)


def gets_for(cached: Any) -> int:
    kube = CountingKube()
    controller(kube).tick("ns", "r", cached=cached)
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
    body(actions=[action("Pending")]),  # a lever still to move
    body() | {"status": "garbage"},
    {"metadata": {"deletionTimestamp": "2026-01-05T11:00:00Z"}},
    {"spec": "garbage"},
])
def test_anything_that_may_need_work_is_read(cached: Any) -> None:
    assert gets_for(cached) == 1


def test_a_handled_request_and_done_actions_need_no_read() -> None:
    assert gets_for(body(annotations=request("r-1"), actions=[action("Done")])) == 0


def test_a_stuck_action_waiting_for_its_next_try_needs_no_read() -> None:
    waiting = [action("Pending", iso(NOW + timedelta(seconds=30)))]
    assert gets_for(body(actions=waiting)) == 0
    due = [action("Pending", iso(NOW - timedelta(seconds=1)))]
    assert gets_for(body(actions=due)) == 1


def test_while_rolling_back_only_the_reverts_next_try_makes_a_cycle() -> None:
    rolling_back = body(last_evaluated=timedelta(hours=1), actions=[
        action("Pending", iso(NOW + timedelta(seconds=30)))])
    rolling_back["status"]["phase"] = "RollingBack"
    assert gets_for(rolling_back) == 0  # nothing is measured while reverting: the interval is no reason
    rolling_back["status"]["actions"] = [action("Done")]
    assert gets_for(rolling_back) == 1  # every action done: the cycle that ends the rollback


def test_a_spec_never_valid_waits_for_an_edit() -> None:
    never_valid = body()
    never_valid["spec"]["analysis"]["interval"] = "soon"  # reconcile has said so at this generation
    assert gets_for(never_valid) == 0
    assert gets_for(never_valid | {"metadata": never_valid["metadata"] | {"generation": 3}}) == 1


@pytest.mark.parametrize(("cached", "work"), [
    (body(live=True, triggers_checked=timedelta(seconds=4)), None),  # checked 4 s ago; the default is 5 s
    (body(live=True, triggers_checked=timedelta(seconds=5)), "triggers"),  # the trigger cadence alone has come
    (body(live=True, triggers_checked=None), "triggers"),  # never checked (or not written since a restart)
    (body(live=True, triggers_checked=timedelta(seconds=5), last_evaluated=timedelta(seconds=10)), "cycle"),
    (body(live=True, interval="2s", last_evaluated=timedelta(seconds=1), triggers_checked=timedelta(seconds=1)),
     None),  # an interval shorter than 5 s: the triggers run with the gates
    (body(live=True, interval="60s", triggers_checked=timedelta(seconds=4)), None),  # default 5 s at a 60 s interval
    (body(live=True, interval="60s", triggers_checked=timedelta(seconds=5)), "triggers"),
    (body(live=True, interval="60s", trigger_interval="30s", triggers_checked=timedelta(seconds=29)), None),
    (body(live=False, triggers_checked=None), None),  # nothing live: no trigger guards anything
])
def test_the_trigger_cadence_runs_between_gate_cycles(cached: Any, work: str | None) -> None:
    assert controller().work_due("ns/r", cached) == work


def test_a_quiet_trigger_check_held_in_memory_moves_the_next_one_on() -> None:
    ticking = controller()
    cached = body(live=True, interval="60s", triggers_checked=timedelta(seconds=30))
    assert ticking.work_due("ns/r", cached) == "triggers"
    ticking._triggers_checked["ns/r"] = NOW - timedelta(seconds=1)  # what a check that wrote nothing leaves
    assert ticking.work_due("ns/r", cached) is None


def test_while_rolling_back_no_trigger_is_checked() -> None:
    rolling_back = body(live=True, triggers_checked=None, actions=[
        action("Pending", iso(NOW + timedelta(seconds=30)))])
    rolling_back["status"]["phase"] = "RollingBack"
    assert controller().work_due("ns/r", rolling_back) is None


def finished(phase: str, **status: Any) -> dict[str, Any]:
    """A rollout that ended a month ago, as the watch delivers it: its last gate cycle is that old."""
    ended = body(last_evaluated=timedelta(days=30))
    ended["status"] |= {"phase": phase} | status
    return ended


@pytest.mark.parametrize("phase", ["Completed", "RolledBack", "NotPromoted"])
def test_a_finished_rollout_is_read_only_for_an_action_due(phase: str) -> None:
    assert gets_for(finished(phase)) == 0  # the gate interval is no reason: nothing is measured any more
    assert gets_for(finished(phase, actions=[action("Pending", iso(NOW + timedelta(seconds=30)))])) == 0
    assert gets_for(finished(phase, actions=[action("Pending", iso(NOW - timedelta(seconds=1)))])) == 1
    assert gets_for(finished(phase, actions=[action("Done")])) == 0


def test_a_completed_rollout_is_read_once_for_its_sunset() -> None:
    said = {"type": "SunsetDue", "status": "True", "reason": "SunsetPassed", "lastTransitionTime": iso(NOW)}
    assert gets_for(finished("Completed", sunsetAt=iso(NOW + timedelta(seconds=1)))) == 0
    assert gets_for(finished("Completed", sunsetAt=iso(NOW))) == 1
    assert gets_for(finished("Completed", sunsetAt=iso(NOW - timedelta(days=1)), conditions=[said])) == 0
    assert gets_for(finished("RolledBack", sunsetAt=iso(NOW - timedelta(days=1)))) == 0  # rolled back: no review


class GuardedKube(CountingKube):
    """Counts reads; records the resourceVersion each status write is guarded by, and answers a stale one 409
    as the apiserver does."""

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current
        self.guarded_by: list[str] = []

    def write_status(self, rollout: RolloutObject, status: ModelRolloutStatus) -> RolloutObject:
        self.guarded_by.append(rollout.resource_version)
        if rollout.resource_version != self.current:
            raise Conflict(f"{rollout.name}: resourceVersion {rollout.resource_version} is not {self.current}")
        self.current = str(int(self.current) + 1)
        return replace(rollout, resource_version=self.current)


class Unmeasured(Controller):
    """The shell with nothing to measure (the gates read nothing): what is read and written is under test."""

    def observe(self, *_: Any, **__: Any) -> Observation:
        return Observation(gates=(), triggers=())


def test_a_gate_cycle_with_nothing_to_carry_out_is_decided_on_the_watched_copy() -> None:
    """The gate interval alone made it due and no action waits: no GET, and the one write is guarded by the
    watched copy's resourceVersion. A stale copy answers 409, and that rollout's next tick reads the apiserver's."""
    due = body(live=True, last_evaluated=timedelta(seconds=10), triggers_checked=timedelta(seconds=1))
    due["metadata"] |= {"resourceVersion": "7", "uid": "u-1"}
    kube = GuardedKube(current="7")
    shell = Unmeasured(kube=kube, emit=lambda *_: None, metrics=OperatorMetrics(CollectorRegistry()), clock=lambda: NOW)
    shell.tick("ns", "r", cached=due)
    assert (kube.gets, kube.guarded_by) == (0, ["7"])

    stale = GuardedKube(current="8")  # someone wrote after the copy the watch delivered
    shell = Unmeasured(kube=stale, emit=lambda *_: None, metrics=OperatorMetrics(CollectorRegistry()), clock=lambda: NOW)
    shell.tick("ns", "r", cached=due)
    assert (stale.gets, stale.guarded_by) == (0, ["7"])
    shell.tick("ns", "r", cached=due)
    assert stale.gets == 1  # the apiserver's object, not the copy that proved stale


def test_a_cycle_with_an_action_to_carry_out_reads_the_apiserver_first() -> None:
    """A pending action is carried out before the cycle decides: only the apiserver's object may move a lever."""
    pending = body(live=True, actions=[action("Pending")])
    pending["metadata"]["resourceVersion"] = "7"
    assert gets_for(pending) == 1
