"""End-to-end harness: the operator as a real process against the real apiserver, Prometheus and
MLflow, driven with the real kubectl and `kubectl modelrollout`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.controlplane import ControlPlane
from devstack.mlflow import MlflowServer
from devstack.prometheus import PrometheusServer
from devstack.registry import log_sweep, register_models
from devstack.series import SeriesFeed

REPO_ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ["BTCUSDC", "ETHUSDC", "SOLUSDC", "BNBUSDC", "XRPUSDC"]
SWEEP_EXPERIMENT = "focal-loss-sweep-e2e"
TEMPLATE = "cvntrade_XGBoost_{symbol}_{strategy}"


@pytest.fixture(scope="session")
def sweep(mlflow_server: MlflowServer) -> str:
    """130 sweep runs (5 symbols x 13 folds x 2 variants) with a clear F1 lift for the candidate."""
    assert log_sweep(mlflow_server.url, SWEEP_EXPERIMENT, SYMBOLS) == 130
    return SWEEP_EXPERIMENT


def healthy_series(feed: SeriesFeed, symbols: list[str] = SYMBOLS) -> None:
    """Live outcome metrics where the candidate does a little better than the baseline."""
    for symbol in symbols:
        for variant, expectancy, ece, sortino in (("candidate", 0.02, 0.030, 1.3), ("baseline", 0.01, 0.031, 1.1)):
            labels = {"symbol": symbol, "variant": variant}
            feed.set("expectancy_net_realized", expectancy, **labels)
            feed.set("expectancy_net_stddev", 0.05, **labels)
            feed.set("n_trades", 80, **labels)
            feed.set("model_ece_hold", ece, **labels)
            feed.set("sortino_ratio", sortino, **labels)


@dataclass
class Scenario:
    """One rollout in its own namespace, with its own registered models and operator(s)."""

    plane: ControlPlane
    feed: SeriesFeed
    mlflow_url: str
    prometheus_url: str
    namespace: str
    strategy: str
    workdir: Path
    seen: list[tuple[str, str]] = field(default_factory=list)  # (phase, `kubectl get mro` as printed then)

    def kubectl(self, *args: str, input_text: str | None = None, check: bool = True) -> Any:
        env_path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"

        if args[0] == "modelrollout":  # kubectl refuses flags before a plugin's name
            argv = ["kubectl", *args, "-n", self.namespace]
        else:
            argv = ["kubectl", "-n", self.namespace, *args]
        return subprocess.run(argv, input=input_text, capture_output=True, text=True, check=check, timeout=60,
                              env={**os.environ, "PATH": env_path, "KUBECONFIG": str(self.plane.kubeconfig)})

    def manifest(self, name: str = "focal-loss", mutate: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        manifest = yaml.safe_load((REPO_ROOT / "examples" / "focal-loss-rollout-fast.yaml").read_text())
        manifest["metadata"] = {"name": name, "namespace": self.namespace}
        spec = manifest["spec"]
        spec["models"]["trackingUri"] = self.mlflow_url
        spec["models"]["strategy"] = self.strategy
        spec["prometheus"]["url"] = self.prometheus_url
        spec["prometheus"]["timeout"] = "3s"
        spec["stages"][0]["gates"][0]["sweep"]["experiment"] = SWEEP_EXPERIMENT
        spec["stages"][0]["gates"][0]["sweep"]["bootstrapResamples"] = 2000
        if mutate:
            mutate(spec)
        return manifest

    def apply(self, manifest: dict[str, Any]) -> str:
        return self.kubectl("apply", "-f", "-", input_text=json.dumps(manifest)).stdout

    def get(self, name: str = "focal-loss") -> dict[str, Any]:
        return json.loads(self.kubectl("get", "mro", name, "-o", "json").stdout)

    def status(self, name: str = "focal-loss") -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def configmap(self) -> dict[str, str]:
        return json.loads(self.kubectl("get", "configmap", "cvntrade-model-config", "-o", "json").stdout)["data"]

    def effective_flags(self) -> dict[str, str]:
        """What each symbol's model server would run: its override key, else the global key."""
        data = self.configmap()
        return {s: data.get(f"CVN_LOSS_FUNCTION__{s}", data["CVN_LOSS_FUNCTION"]) for s in SYMBOLS}

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 90,
                 name: str = "focal-loss") -> dict[str, Any]:
        """Poll the rollout until `predicate(status)`; keeps the `kubectl get mro` table of each phase seen."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status(name)
            phase = status.get("phase", "")
            if not self.seen or self.seen[-1][0] != phase:
                self.seen.append((phase, self.kubectl("get", "mro", name).stdout))
            if predicate(status):
                return status
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}; last status: {json.dumps(status, indent=1)[:3000]}")

    def wait_phase(self, *phases: str, stage: str | None = None, timeout: float = 90, name: str = "focal-loss") -> dict[str, Any]:
        return self.wait_for(lambda s: s.get("phase") in phases and (stage is None or s.get("stage") == stage),
                             f"phase {phases} stage {stage}", timeout, name)

    def events(self, name: str = "focal-loss") -> list[dict[str, Any]]:
        items = json.loads(self.kubectl("get", "events", "-o", "json",
                                        f"--field-selector=involvedObject.name={name}").stdout)["items"]
        return sorted(items, key=lambda e: e.get("firstTimestamp") or "")

    def aliases(self) -> dict[str, str]:
        from mlflow import MlflowClient

        client = MlflowClient(self.mlflow_url)
        return {symbol: client.get_model_version_by_alias(
            TEMPLATE.replace("{symbol}", symbol).replace("{strategy}", self.strategy), "champion").version
            for symbol in SYMBOLS}


@pytest.fixture
def scenario(crd_installed: ControlPlane, prometheus_server: PrometheusServer, mlflow_server: MlflowServer,
             sweep: str, tmp_path: Path) -> Iterator[Scenario]:
    suffix = uuid.uuid4().hex[:6]
    namespace, strategy = f"e2e-{suffix}", f"s{suffix}"
    crd_installed.kubectl("create", "namespace", namespace)
    crd_installed.kubectl("-n", namespace, "create", "configmap", "cvntrade-model-config",
                          "--from-literal=CVN_LOSS_FUNCTION=binary:logistic")
    register_models(mlflow_server.url, TEMPLATE, strategy, SYMBOLS)
    feed = SeriesFeed(prometheus_server)
    healthy_series(feed)
    feed.scrape()
    feed.wait_for('count(n_trades)', lambda r: r.values.get("*", 0) >= 10)
    yield Scenario(plane=crd_installed, feed=feed, mlflow_url=mlflow_server.url, prometheus_url=prometheus_server.url,
                   namespace=namespace, strategy=strategy, workdir=tmp_path)
    feed.close()
    crd_installed.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
