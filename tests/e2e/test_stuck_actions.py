"""A revert stuck on an MLflow outage backs off: the reconcile cycle in-process against the real apiserver
and a real `mlflow server` that is stopped for five minutes of an injected clock, then started again.

The clock is injected so that five minutes pass in seconds; every call the operator makes is real.
What is counted: status writes (the apiserver's), and Events with their aggregated counts.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from in_process import Clock, CountingKube
from kubernetes import config as kube_config
from mlflow import MlflowClient
from prometheus_client import CollectorRegistry

from devstack.controlplane import ControlPlane
from devstack.mlflow import MlflowServer, start_mlflow
from devstack.registry import register_models
from devstack.scenario import BASELINE, CONFIGMAP, FAST_EXAMPLE, FLAG_KEY, STACK_HUMAN, SYMBOLS, TEMPLATE
from modelrollout.controller import Controller
from modelrollout.events import EventRecorder
from modelrollout.kube import REQUEST_ANNOTATION_PREFIX, format_request
from modelrollout.metrics import OperatorMetrics
from modelrollout.observation import Request
from modelrollout.status import ModelRolloutStatus

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
OUTAGE = timedelta(minutes=5)


@pytest.fixture
def mlflow(tmp_path: Path) -> Iterator[list[MlflowServer]]:
    """An MLflow of this test's own, in a list so the test can replace it after the outage."""
    servers = [start_mlflow(tmp_path / "mlflow")]
    yield servers
    servers[-1].stop()


def manifest(namespace: str, mlflow_url: str, strategy: str) -> dict[str, Any]:
    """The fast example with canary and full only, and nothing measured: the test is about the levers."""
    rollout = yaml.safe_load(FAST_EXAMPLE.read_text())
    rollout["metadata"] = {"name": "stuck", "namespace": namespace}
    spec = rollout["spec"]
    spec["models"].update(trackingUri=mlflow_url, strategy=strategy)
    spec["prometheus"]["url"] = "http://127.0.0.1:9"  # never queried: no gate, no trigger
    spec["accountability"]["mayRollBack"]["users"].append(STACK_HUMAN)  # the admission policy checks who aborts
    spec["stages"] = spec["stages"][1:]
    for stage in spec["stages"]:
        stage.update(gates=[], rollbackTriggers=[], minDuration="0s")
        stage.pop("watchDuration", None)
    return rollout


def test_five_minutes_of_mlflow_outage_under_a_live_rollback_cost_a_bounded_number_of_writes_and_events(
        crd_installed: ControlPlane, mlflow: list[MlflowServer], tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:6]
    namespace, strategy = f"stuck-{suffix}", f"st{suffix}"
    plane = crd_installed
    plane.kubectl("create", "namespace", namespace)
    try:
        plane.kubectl("-n", namespace, "create", "configmap", CONFIGMAP, f"--from-literal={FLAG_KEY}={BASELINE}")
        register_models(mlflow[0].url, TEMPLATE, strategy, SYMBOLS)
        api = kube_config.new_client_from_config(config_file=str(plane.kubeconfig))
        kube, clock = CountingKube(api), Clock()
        recorder = EventRecorder(kube.core)
        controller = Controller(kube=kube, emit=recorder, metrics=OperatorMetrics(CollectorRegistry()), clock=clock)
        plane.kubectl("apply", "-f", "-", input_text=json.dumps(manifest(namespace, mlflow[0].url, strategy)))

        def tick(seconds: float = 1.0) -> ModelRolloutStatus:
            clock.now += timedelta(seconds=seconds)
            controller.tick(namespace, "stuck")
            rollout = kube.get_rollout(namespace, "stuck")
            assert rollout is not None
            return ModelRolloutStatus.model_validate(rollout.status)

        status = tick()
        for _ in range(30):
            if status.phase == "AwaitingApproval":
                break
            status = tick()
        assert status.phase == "AwaitingApproval", status.message
        assert kube.core.read_namespaced_config_map(CONFIGMAP, namespace)["data"][f"{FLAG_KEY}__BTCUSDC"] != BASELINE

        mlflow[0].stop()
        abort = Request(kind="abort", id="abort-1", by=STACK_HUMAN, at=clock.now)
        kube.custom.patch_namespaced_custom_object(
            "mlops.cvntrade.io", "v1alpha1", namespace, "modelrollouts", "stuck",
            {"metadata": {"annotations": {f"{REQUEST_ANNOTATION_PREFIX}abort": format_request(abort)}}})
        writes_before, started = kube.writes, clock.now
        while clock.now - started < OUTAGE:
            status = tick()
        writes = kube.writes - writes_before
        assert status.phase == "RollingBack"
        data = kube.core.read_namespaced_config_map(CONFIGMAP, namespace)["data"]
        assert set(data.values()) == {BASELINE}, "the seconds path does not wait for MLflow"
        stuck = next(a for a in status.actions if a.state == "Pending")
        assert stuck.type == "moveAlias" and "MLflow" in stuck.last_error
        events = recorder.list_for(namespace, "stuck")
        failed = [e for e in events if e["reason"] == "ActionFailed"]
        print(f"5 min of MLflow outage: {stuck.attempts} tries, {writes} status writes, {len(events)} Event objects, "
              f"ActionFailed count {[e.get('count') for e in failed]}")
        assert 5 <= stuck.attempts <= 12, "backed off exponentially: 0, 1, 3, 7, ... 255 s, not every tick"
        assert writes <= 2 * stuck.attempts + 4, "status is written when something changes, not on every tick"
        assert len(failed) == 1 and failed[0].get("count") == stuck.attempts, "one Event per distinct error, counted"
        assert len(events) <= 12

        port = int(mlflow[0].url.rsplit(":", 1)[1])
        mlflow.append(start_mlflow(tmp_path / "mlflow", port=port))
        for _ in range(int(OUTAGE.total_seconds()) + 30):  # the next try is at most the cap away
            if status.phase == "RolledBack":
                break
            status = tick()
        assert status.phase == "RolledBack", status.message
        client = MlflowClient(mlflow[-1].url, mlflow[-1].url)
        assert {client.get_model_version_by_alias(TEMPLATE.replace("{symbol}", s).replace("{strategy}", strategy),
                                                  "champion").version for s in SYMBOLS} == {"1"}
    finally:
        plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
