"""A breach does not wait for the gate cycle: at a 60 s gate interval the triggers' own 5 s cadence reverts.

The reconcile cycle runs in-process with an injected clock (so a minute passes when the test says so)
against the real apiserver, Prometheus and MLflow; every call the operator makes is real. The timer
ticks hand it the object as a watch would (`cached`). Asserted: what is written and moved, and which
cycle did it, never how long anything took (`benchmarks/operator_rollback_latency.py` times it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from in_process import Clock, CountingKube
from kubernetes import config as kube_config
from prometheus_client import CollectorRegistry

from devstack.scenario import BASELINE, Scenario, wait_until
from modelrollout.controller import Controller
from modelrollout.crd import GROUP, PLURAL, VERSION
from modelrollout.events import EventRecorder
from modelrollout.gates import evaluate_trigger, trigger_queries
from modelrollout.metrics import OperatorMetrics
from modelrollout.prometheus_provider import SHARED_FOR_S, PrometheusProvider
from modelrollout.spec import ModelRolloutSpec
from modelrollout.status import ModelRolloutStatus

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
NAME = "cadence"


def production_cadence(spec: dict[str, Any]) -> None:
    """The plan's 60 s gate interval, triggers at their default (5 s); the canary first, held 10 minutes."""
    spec["analysis"] = {"interval": "60s"}
    spec["stages"] = spec["stages"][1:]
    spec["stages"][0]["minDuration"] = "10m"


@dataclass
class Operator:
    scenario: Scenario
    kube: CountingKube
    clock: Clock
    controller: Controller
    events: EventRecorder

    def watched(self) -> dict[str, Any]:
        """The object as the watch delivers it (read by the test, not counted as the operator's)."""
        body: dict[str, Any] = self.kube.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.scenario.namespace, PLURAL, NAME)
        return body

    def tick(self, seconds: float, cached: dict[str, Any] | None = None) -> ModelRolloutStatus:
        self.clock.now += timedelta(seconds=seconds)
        self.controller.tick(self.scenario.namespace, NAME, cached=self.watched() if cached is None else cached)
        return ModelRolloutStatus.model_validate(self.watched().get("status") or {})


@pytest.fixture
def operator(scenario: Scenario) -> Operator:
    api = kube_config.new_client_from_config(config_file=str(scenario.plane.kubeconfig))
    kube, clock = CountingKube(api), Clock()
    recorder = EventRecorder(kube.core)
    return Operator(scenario, kube, clock, Controller(kube=kube, emit=recorder,
                                                      metrics=OperatorMetrics(CollectorRegistry()), clock=clock),
                    recorder)


def breach_visible(scenario: Scenario, spec: ModelRolloutSpec) -> bool:
    """The canary trigger's own queries answer "breached" for BTCUSDC now."""
    canary = spec.stages[0]
    trigger, symbols = canary.rollback_triggers[0], spec.stage_symbols(canary)
    provider = PrometheusProvider(scenario.prometheus_url, timeout_s=3)
    answers = {role: provider.query(promql) for role, promql in trigger_queries(trigger, symbols).items()}
    return any(m.symbol == "BTCUSDC" and m.verdict == "Fail"
               for m in evaluate_trigger(trigger, symbols, answers, datetime.now(UTC)))


def test_at_a_60s_gate_interval_a_breach_reverts_on_the_next_trigger_check(scenario: Scenario,
                                                                           operator: Operator) -> None:
    manifest = scenario.manifest(NAME, mutate=production_cadence)
    spec = ModelRolloutSpec.model_validate(manifest["spec"])
    scenario.apply(manifest)
    status = operator.tick(0)
    assert status.stage == "canary" and status.symbols_on_candidate == ["BTCUSDC"], status.message
    assert scenario.effective_flags()["BTCUSDC"] != BASELINE
    gate_cycle = status.last_evaluated_at
    assert gate_cycle is not None

    # Trigger checks every 5 s between gate cycles. The first shows the canary's triggers (a verdict change is
    # written); once they read Pass, the checks that follow run on the watched copy, read nothing from the
    # apiserver and write nothing.
    # Prometheus' windows are real time while the test's clock steps: a check that reads no verdict yet is
    # given up to 2 s of real time before the next (the test's clock, and so every cadence, unchanged).
    gets = operator.kube.gets
    for _ in range(4):
        status = operator.tick(5)
        if status.triggers and {t.verdict for t in status.triggers} == {"Pass"}:
            break
        time.sleep(2)
    assert {t.verdict for t in status.triggers} == {"Pass"}, [t.message for t in status.triggers]
    assert {t.verdict for t in status.triggers} == {"Pass"}, [t.message for t in status.triggers]
    assert status.last_triggers_evaluated_at is not None and status.last_triggers_evaluated_at > gate_cycle
    writes = operator.kube.writes
    for _ in range(3):
        status = operator.tick(5)
    assert (operator.kube.gets, operator.kube.writes) == (gets, writes)
    assert status.phase == "Progressing" and status.last_evaluated_at == gate_cycle
    assert {t.verdict for t in status.triggers} == {"Pass"}, [t.message for t in status.triggers]

    before_breach = operator.watched()
    scenario.feed.set("expectancy_net_realized", -0.05, symbol="BTCUSDC", variant="candidate")
    wait_until(lambda: breach_visible(scenario, spec), "the breach visible in Prometheus", 60)
    # The operator shares an answer for SHARED_FOR_S of real time (rollouts asking alike); its last
    # answer, from before the breach, may be younger than that when the breach shows.
    time.sleep(SHARED_FOR_S)
    status = operator.tick(5)  # at most 40 s after the last gate cycle: the next one is 20 s away or more
    assert operator.clock.now - gate_cycle <= timedelta(seconds=40)
    assert status.phase in ("RollingBack", "RolledBack"), status.message
    assert set(scenario.effective_flags().values()) == {BASELINE}
    assert status.rollback is not None and "expectancy-negative" in status.rollback.reason
    assert status.last_evaluated_at == gate_cycle, "reverted by the trigger check, not a gate cycle"
    assert operator.kube.gets == gets, "the breach was found on the watched copy, and written guarded by it"

    # Nothing is reverted twice: a tick on a copy from before the breach measures the breach again, but its
    # write is refused (the copy is stale); the next cycles read the apiserver's object and plan nothing more.
    reverts = [a.id for a in status.actions if a.reason == "rollback"]
    status = operator.tick(5, cached=before_breach)
    for _ in range(30):
        if status.phase == "RolledBack":
            break
        status = operator.tick(1)
    assert status.phase == "RolledBack", status.message
    assert [a.id for a in status.actions if a.reason == "rollback"] == reverts
    rolling_back = [e for e in operator.events.list_for(scenario.namespace, NAME) if e["reason"] == "RollingBack"]
    assert len(rolling_back) == 1 and (rolling_back[0].get("count") or 1) == 1
