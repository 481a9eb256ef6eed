"""A whole rollout scenario on the local stack, for benchmarks and demos (the e2e harness's ideas).

`start_stack` brings up kube-apiserver + etcd with the CRDs, Prometheus, MLflow with a sweep,
and a SeriesFeed exporting healthy live series; `prepare_namespace` adds a namespace with the
flag ConfigMap(s); `rollout_manifest` is the fast example with the stack's URLs patched in.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devstack.controlplane import REPO_ROOT, ControlPlane, start_control_plane
from devstack.mlflow import MlflowServer, start_mlflow
from devstack.prometheus import PrometheusServer, start_prometheus
from devstack.registry import log_sweep, register_models
from devstack.series import SeriesFeed

SYMBOLS = ["BTCUSDC", "ETHUSDC", "SOLUSDC", "BNBUSDC", "XRPUSDC"]
TEMPLATE = "cvntrade_XGBoost_{symbol}_{strategy}"
SWEEP_EXPERIMENT = "focal-loss-sweep-scenario"
CONFIGMAP = "cvntrade-model-config"
FLAG_KEY = "CVN_LOSS_FUNCTION"
BASELINE = "binary:logistic"
FAST_EXAMPLE = REPO_ROOT / "examples" / "focal-loss-rollout-fast.yaml"
STACK_HUMAN = "admin"  # the user of the admin kubeconfig's client certificate (devstack.certs): the human here


def healthy_series(feed: SeriesFeed, symbols: Sequence[str] = SYMBOLS) -> None:
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
class Stack:
    """Every real component a rollout talks to; `stop()` tears them all down."""

    plane: ControlPlane
    prometheus: PrometheusServer
    mlflow: MlflowServer
    workdir: Path
    feed: SeriesFeed | None = None  # None when real exporters feed Prometheus (make demo)
    sweep_experiment: str = SWEEP_EXPERIMENT
    sweep_rows: int = 130

    def stop(self) -> None:
        feed_close = self.feed.close if self.feed else (lambda: None)
        for stop in (feed_close, self.mlflow.stop, self.prometheus.stop, self.plane.stop):
            with contextlib.suppress(Exception):  # tear down the rest whatever one of them says
                stop()


def install_crds(plane: ControlPlane) -> None:
    """Apply crds/*.yaml and wait until the ModelRollout CRD is established."""
    for crd in sorted((REPO_ROOT / "crds").glob("*.yaml")):
        plane.kubectl("apply", "--server-side", "-f", str(crd))
    plane.kubectl("wait", "--for=condition=established", "--timeout=60s", "crd/modelrollouts.mlops.cvntrade.io")


def start_stack(workdir: Path, *, sweep_experiment: str = SWEEP_EXPERIMENT, sweep_folds: int = 13) -> Stack:
    """Control plane with the CRDs established, Prometheus scraping healthy series, MLflow with a sweep.

    The three servers start concurrently (MLflow alone takes ~20 s); the sweep has one run per
    symbol, fold and variant (13 folds: the 130 runs the fast example's `minRows: 125` expects).
    """
    started: list[Callable[[], None]] = []
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            plane_f = pool.submit(start_control_plane, workdir / "controlplane")
            prometheus_f = pool.submit(start_prometheus, workdir / "prometheus")
            mlflow_f = pool.submit(start_mlflow, workdir / "mlflow")
            for future in (plane_f, prometheus_f, mlflow_f):
                if future.exception() is None:
                    started.insert(0, future.result().stop)
            plane, prometheus, mlflow = plane_f.result(), prometheus_f.result(), mlflow_f.result()
        install_crds(plane)
        rows = log_sweep(mlflow.url, sweep_experiment, SYMBOLS, folds=sweep_folds)
        feed = SeriesFeed(prometheus)
        started.insert(0, feed.close)
        healthy_series(feed)
        feed.scrape()
        feed.wait_for("count(n_trades)", lambda r: r.values.get("*", 0) >= 10)
    except BaseException:
        for stop in started:
            with contextlib.suppress(Exception):
                stop()
        raise
    return Stack(plane=plane, prometheus=prometheus, mlflow=mlflow, feed=feed, workdir=workdir,
                 sweep_experiment=sweep_experiment, sweep_rows=rows)


def prepare_namespace(stack: Stack, namespace: str, strategy: str | None = None,
                      configmaps: Sequence[str] = (CONFIGMAP,)) -> None:
    """A namespace with each flag ConfigMap at the baseline; registers the models of `strategy` if given."""
    stack.plane.kubectl("create", "namespace", namespace)
    items = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
              "data": {FLAG_KEY: BASELINE}} for name in configmaps]
    stack.plane.kubectl("apply", "-f", "-", input_text=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                   "items": items}))
    if strategy is not None:
        register_models(stack.mlflow.url, TEMPLATE, strategy, SYMBOLS)


def rollout_manifest(stack: Stack, name: str, namespace: str, strategy: str,
                     mutate: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The fast example (examples/focal-loss-rollout-fast.yaml) pointed at this stack."""
    manifest = yaml.safe_load(FAST_EXAMPLE.read_text())
    manifest["metadata"] = {"name": name, "namespace": namespace}
    spec = manifest["spec"]
    spec["models"]["trackingUri"] = stack.mlflow.url
    spec["models"]["strategy"] = strategy
    spec["prometheus"]["url"] = stack.prometheus.url
    spec["prometheus"]["timeout"] = "3s"
    for principals in (spec["accountability"]["mayApprove"], spec["accountability"]["mayRollBack"]):
        principals.setdefault("users", []).append(STACK_HUMAN)  # the stack's human may decide, as alice may
    sweep = spec["stages"][0]["gates"][0]["sweep"]
    sweep["experiment"] = stack.sweep_experiment
    sweep["bootstrapResamples"] = 2000
    sweep["minRows"] = min(sweep["minRows"], stack.sweep_rows)  # a smaller sweep (quick runs) still counts
    if mutate:
        mutate(spec)
    return manifest


def apply_manifests(stack: Stack, manifests: Sequence[dict[str, Any]]) -> None:
    """`kubectl apply` many objects in one call (a v1 List)."""
    stack.plane.kubectl("apply", "-f", "-", input_text=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                   "items": list(manifests)}))


def list_rollouts(stack: Stack, namespace: str) -> list[dict[str, Any]]:
    return json.loads(stack.plane.kubectl("-n", namespace, "get", "mro", "-o", "json").stdout)["items"]


def canary_flag_done(rollout: dict[str, Any]) -> bool:
    """The canary's ConfigMap switch was carried out (recorded Done in status)."""
    actions = (rollout.get("status") or {}).get("actions") or []
    return any(a["reason"].startswith("canary") and a["state"] == "Done" for a in actions)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float, poll: float = 0.5) -> None:
    """Bounded polling; raises TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Scenario:
    """One rollout in its own namespace, driven with the real kubectl and `kubectl modelrollout` as
    the admin (a human) would: the end-to-end tests' harness."""

    stack: Stack
    namespace: str
    strategy: str
    workdir: Path
    seen: list[tuple[str, str]] = field(default_factory=list)  # (phase, `kubectl get mro` as printed then)

    @property
    def plane(self) -> ControlPlane:
        return self.stack.plane

    @property
    def feed(self) -> SeriesFeed:
        assert self.stack.feed is not None, "this stack has no SeriesFeed"
        return self.stack.feed

    @property
    def mlflow_url(self) -> str:
        return self.stack.mlflow.url

    @property
    def prometheus_url(self) -> str:
        return self.stack.prometheus.url

    def kubectl(self, *args: str, input_text: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """kubectl in this namespace with the admin's kubeconfig; the plugin is found next to this Python."""
        if args[0] == "modelrollout":  # kubectl refuses flags before a plugin's name
            argv = ["kubectl", *args, "-n", self.namespace]
        else:
            argv = ["kubectl", "-n", self.namespace, *args]
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               "KUBECONFIG": str(self.plane.kubeconfig)}
        return subprocess.run(argv, input=input_text, capture_output=True, text=True, check=check, timeout=60,
                              env=env)

    def manifest(self, name: str = "focal-loss",
                 mutate: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        return rollout_manifest(self.stack, name, self.namespace, self.strategy, mutate)

    def apply(self, manifest: dict[str, Any]) -> str:
        return self.kubectl("apply", "-f", "-", input_text=json.dumps(manifest)).stdout

    def get(self, name: str = "focal-loss") -> dict[str, Any]:
        return json.loads(self.kubectl("get", "mro", name, "-o", "json").stdout)

    def status(self, name: str = "focal-loss") -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def configmap(self) -> dict[str, str]:
        return json.loads(self.kubectl("get", "configmap", CONFIGMAP, "-o", "json").stdout)["data"]

    def effective_flags(self) -> dict[str, str]:
        """What each symbol's model server would run: its override key, else the global key."""
        data = self.configmap()
        return {s: data.get(f"{FLAG_KEY}__{s}", data[FLAG_KEY]) for s in SYMBOLS}

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

    def wait_phase(self, *phases: str, stage: str | None = None, timeout: float = 90,
                   name: str = "focal-loss") -> dict[str, Any]:
        return self.wait_for(lambda s: s.get("phase") in phases and (stage is None or s.get("stage") == stage),
                             f"phase {phases} stage {stage}", timeout, name)

    def events(self, name: str = "focal-loss") -> list[dict[str, Any]]:
        items = json.loads(self.kubectl("get", "events", "-o", "json",
                                        f"--field-selector=involvedObject.name={name}").stdout)["items"]
        return sorted(items, key=lambda e: e.get("firstTimestamp") or "")

    def aliases(self) -> dict[str, str]:
        """The champion alias's version of each symbol's registered model."""
        from mlflow import MlflowClient

        client = MlflowClient(self.mlflow_url, self.mlflow_url)
        return {symbol: client.get_model_version_by_alias(
            TEMPLATE.replace("{symbol}", symbol).replace("{strategy}", self.strategy), "champion").version
            for symbol in SYMBOLS}


@contextmanager
def open_scenario(plane: ControlPlane, prometheus: PrometheusServer, mlflow: MlflowServer, workdir: Path, *,
                  sweep_experiment: str = SWEEP_EXPERIMENT) -> Iterator[Scenario]:
    """A fresh namespace with the flag ConfigMap, models registered under a strategy of its own and
    a SeriesFeed of healthy live series (its own, so a test may change them); the sweep must be
    logged already. The namespace is deleted afterwards."""
    suffix = uuid.uuid4().hex[:6]
    namespace = f"e2e-{suffix}"
    feed = SeriesFeed(prometheus)
    try:
        healthy_series(feed)
        feed.scrape()
        feed.wait_for("count(n_trades)", lambda r: r.values.get("*", 0) >= 10)
        stack = Stack(plane=plane, prometheus=prometheus, mlflow=mlflow, feed=feed, workdir=workdir,
                      sweep_experiment=sweep_experiment)
        prepare_namespace(stack, namespace, strategy=f"s{suffix}")
        yield Scenario(stack=stack, namespace=namespace, strategy=f"s{suffix}", workdir=workdir)
    finally:
        feed.close()
        plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
