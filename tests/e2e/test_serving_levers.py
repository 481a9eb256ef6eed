"""What is live is what status says, read from a real `model-runtime serve` under the operator.

Real models are trained into an MLflow of this test's own (so it can stop it), a real model server
follows the rollout's ConfigMap through a kubelet-style mirror, and the operator runs as a process.
After the full promotion a trigger breaches during the watch with MLflow stopped: the ConfigMap
revert alone must bring the baseline's version back to live answers, and the status must say that
the registry part of the revert waits, until MLflow returns and the rollout ends RolledBack.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from devstack.configsync import ConfigMapMirror, configmap_reader
from devstack.controlplane import ControlPlane
from devstack.mlflow import MlflowServer, start_mlflow
from devstack.operator import start_operator
from devstack.process import Server, free_port, http_ok
from devstack.prometheus import PrometheusServer
from devstack.scenario import BASELINE, CONFIGMAP, FLAG_KEY, Scenario, Stack, healthy_series, prepare_namespace, wait_until
from devstack.series import SeriesFeed
from model_runtime.cli import main as model_runtime
from model_runtime.training.synthetic import feature_names, generate_market

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SERVED = ["BTCUSDC", "ETHUSDC"]
FOCAL = "focal:gamma=2,alpha=0.25"
BASELINE_VERSION, CANDIDATE_VERSION = "1", "2"  # the trainer registers the logistic model first
REVERT_SECONDS = 15.0  # ConfigMap mirror (0.5 s) + the server's flag re-read (0.5 s), with room for a busy machine


@dataclass
class Served:
    scenario: Scenario
    mlflow: MlflowServer
    url: str
    rows: dict[str, list[list[float]]]

    def answer(self, symbol: str) -> dict[str, Any]:
        body = json.dumps({"symbol": symbol, "features": self.rows[symbol]}).encode()
        request = urllib.request.Request(f"{self.url}/predict", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def versions(self) -> dict[str, str]:
        return {symbol: self.answer(symbol)["version"] for symbol in SERVED}

    def metric(self, name: str, **labels: str) -> float | None:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            text = response.read().decode()
        found = [s.value for family in text_string_to_metric_families(text) for s in family.samples
                 if s.name == name and set(labels.items()) <= set(s.labels.items())]
        return sum(found) if found else None

    def champions(self) -> dict[str, str]:
        client = MlflowClient(self.mlflow.url, self.mlflow.url)
        return {symbol: client.get_model_version_by_alias(f"cvntrade_XGBoost_{symbol}_{self.scenario.strategy}",
                                                          "champion").version for symbol in SERVED}


@pytest.fixture
def served(crd_installed: ControlPlane, prometheus_server: PrometheusServer, tmp_path: Path) -> Iterator[Served]:
    """Own MLflow with trained models, a namespace with the flag ConfigMap, its mirror, a model server, the
    operator and healthy live series; everything is stopped afterwards."""
    strategy, namespace = f"lv{uuid.uuid4().hex[:6]}", f"e2e-levers-{uuid.uuid4().hex[:6]}"
    result = Served(scenario=None, mlflow=start_mlflow(tmp_path / "mlflow"), url="", rows={})  # type: ignore[arg-type]
    stops = [lambda: result.mlflow.stop()]  # the test restarts MLflow: stop whichever runs at the end
    try:
        for loss in (BASELINE, FOCAL):
            assert model_runtime(["train", "--tracking-uri", result.mlflow.url, "--symbols", ",".join(SERVED),
                                  "--strategy", strategy, "--rows", "3000", "--rounds", "10", "--loss", loss]) == 0
        feed = SeriesFeed(prometheus_server)
        stops.insert(0, feed.close)
        healthy_series(feed)
        feed.scrape()
        feed.wait_for("count(n_trades)", lambda r: r.values.get("*", 0) >= 10)
        stack = Stack(plane=crd_installed, prometheus=prometheus_server, mlflow=result.mlflow, feed=feed,
                      workdir=tmp_path)
        prepare_namespace(stack, namespace)
        stops.insert(0, lambda: crd_installed.kubectl("delete", "namespace", namespace, "--wait=false", check=False))
        mirror = ConfigMapMirror(configmap_reader(crd_installed.kubeconfig, namespace, CONFIGMAP), tmp_path / "volume",
                                 interval=0.5).start()
        stops.insert(0, mirror.stop)
        port = free_port()
        server = Server(name="serve", log_path=tmp_path / "serve.log", argv=[
            str(Path(sys.executable).parent / "model-runtime"), "serve", "--tracking-uri", result.mlflow.url,
            "--symbols", ",".join(SERVED), "--strategy", strategy, "--host", "127.0.0.1", "--port", str(port),
            "--config-dir", str(tmp_path / "volume"), "--poll-seconds", "1"]).start()
        stops.insert(0, server.stop)
        result.url = f"http://127.0.0.1:{port}"
        server.wait_ready(lambda: http_ok(f"{result.url}/readyz"), timeout=120)
        operator = start_operator(tmp_path, crd_installed.kubeconfig, [namespace])
        stops.insert(0, operator.stop)
        result.rows = {s: generate_market(s, rows=3000)[feature_names()].to_numpy(dtype=np.float64)[-3:].tolist()
                       for s in SERVED}
        result.scenario = Scenario(stack=stack, namespace=namespace, strategy=strategy, workdir=tmp_path)
        yield result
    finally:
        for stop in stops:
            with contextlib.suppress(Exception):  # stop the rest whatever one of them says
                stop()


def two_symbols_watching_long(spec: dict[str, Any]) -> None:
    """The fast plan on the two served symbols, without its shadow stage, with a long watch to breach in."""
    spec["symbols"] = SERVED
    spec["stages"] = spec["stages"][1:]
    spec["stages"][0]["minDuration"] = "6s"
    spec["stages"][1]["watchDuration"] = "600s"


def test_a_breach_in_the_watch_serves_the_baseline_within_seconds_of_the_configmap_revert_with_mlflow_down(
        served: Served) -> None:
    scenario = served.scenario
    assert served.versions() == dict.fromkeys(SERVED, BASELINE_VERSION)
    scenario.apply(scenario.manifest(mutate=two_symbols_watching_long))
    scenario.wait_phase("AwaitingApproval", stage="full", timeout=120)
    scenario.kubectl("modelrollout", "promote", "focal-loss", "--ticket", "CHG-7")
    scenario.wait_for(lambda s: s.get("phase") == "Watching" and any(
        a["reason"] == "promote full" and a["state"] == "Done" for a in s.get("actions", [])), "promotion carried out")
    wait_until(lambda: served.versions() == dict.fromkeys(SERVED, CANDIDATE_VERSION), "the candidate served",
               timeout=REVERT_SECONDS)
    assert {s: served.answer(s)["variant"] for s in SERVED} == dict.fromkeys(SERVED, "candidate")
    # The registry has not moved: a paper baseline following `champion` is still the baseline in the watch.
    assert served.champions() == dict.fromkeys(SERVED, BASELINE_VERSION)

    served.mlflow.stop()
    wait_until(lambda: served.metric("model_registry_up") == 0.0, "the server to see MLflow down", timeout=30)
    scenario.feed.set("expectancy_net_realized", -0.05, symbol="ETHUSDC", variant="candidate")
    wait_until(lambda: {scenario.configmap().get(k) for k in (FLAG_KEY, *(f"{FLAG_KEY}__{s}" for s in SERVED))}
               == {BASELINE}, "the ConfigMap revert", timeout=60)
    reverted = time.monotonic()
    wait_until(lambda: served.versions() == dict.fromkeys(SERVED, BASELINE_VERSION),
               "the baseline's version answering, MLflow down", timeout=REVERT_SECONDS)
    print(f"baseline served {time.monotonic() - reverted:.1f}s after the ConfigMap revert, MLflow down")
    answer = served.answer("BTCUSDC")
    assert (answer["version"], answer["alias"], answer["variant"]) == (BASELINE_VERSION, "champion", "baseline")
    assert served.metric("model_version_info", symbol="BTCUSDC", version=BASELINE_VERSION) == 1.0
    assert served.metric("model_version_info", symbol="BTCUSDC", version=CANDIDATE_VERSION) is None
    before = served.metric("model_predictions_total", symbol="ETHUSDC", version=BASELINE_VERSION) or 0.0
    served.answer("ETHUSDC")
    assert served.metric("model_predictions_total", symbol="ETHUSDC", version=BASELINE_VERSION) == before + 3

    status = scenario.status()
    assert status["phase"] == "RollingBack", "the registry part of the revert must wait for MLflow, and say so"
    assert "expectancy-negative" in status["rollback"]["reason"]
    stuck = [a for a in status["actions"] if a["reason"] == "rollback" and a["state"] == "Pending"]
    assert stuck and stuck[0]["type"] == "moveAlias" and "MLflow" in stuck[0]["lastError"]
    assert stuck[0].get("nextAttemptAt"), "a stuck action is retried on a schedule, not every tick"

    port = int(served.mlflow.url.rsplit(":", 1)[1])
    served.mlflow = start_mlflow(Path(scenario.workdir) / "mlflow", port=port)
    status = scenario.wait_phase("RolledBack", timeout=400)  # the next try is at most the 5-minute cap away
    assert all(a["state"] == "Done" for a in status["actions"])
    assert served.champions() == dict.fromkeys(SERVED, BASELINE_VERSION)
    assert served.versions() == dict.fromkeys(SERVED, BASELINE_VERSION)
