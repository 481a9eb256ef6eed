"""The product as a user runs it: the chart's pods and a model server pod on the local node.

`start_node_stack` brings up a control plane whose serving certificate also holds the pods'
gateway address, the project's images built by buildah, and one node with them loaded. There are
no CRDs until the chart's install brings them, as on a user's cluster.
`install_chart` is `helm install` of charts/modelrollout with those images; `model_server` is
the user's own serving Deployment (the model runtime image), with the least privilege it needs
to watch its flag ConfigMap through the API.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from devstack.controlplane import REPO_ROOT, ControlPlane, start_control_plane, toolchain_bin
from devstack.images import Image, build_project_image, pause
from devstack.mlflow import MlflowServer, start_mlflow
from devstack.node import GATEWAY, Node, start_node
from devstack.prometheus import PrometheusServer
from devstack.scenario import BASELINE, CONFIGMAP, Scenario, Stack, healthy_series, prepare_namespace
from devstack.series import SeriesFeed
from model_runtime.cli import main as model_runtime
from model_runtime.training.synthetic import feature_names, generate_market

CHART = REPO_ROOT / "charts" / "modelrollout"
SERVER_PORT = 8080
FlagSource = Literal["api", "volume"]
CANDIDATE_LOSS = "focal:gamma=2,alpha=0.25"  # the trainer registers the baseline first: version 1, this 2


@dataclass
class NodeStack:
    plane: ControlPlane
    node: Node
    images: dict[str, Image]

    def stop(self) -> None:
        for stop in (self.node.stop, self.plane.stop):
            with contextlib.suppress(Exception):
                stop()


def build_images(bin_dir: Path) -> dict[str, Image]:
    """The operator and model-runtime images from their Dockerfiles, and the pause image."""
    return {"operator": build_project_image("operator"), "model-runtime": build_project_image("model-runtime"),
            "pause": pause(bin_dir / "pause")}


def start_node_stack(workdir: Path) -> NodeStack:
    """Control plane, the images, one Ready node with them loaded (the chart brings the CRDs)."""
    images = build_images(toolchain_bin(node=True))
    plane = start_control_plane(workdir / "controlplane", serving_ips=(GATEWAY,))
    try:
        node = start_node(plane, workdir / "node", list(images.values()))
    except BaseException:
        plane.stop()
        raise
    return NodeStack(plane=plane, node=node, images=images)


def helm(stack: NodeStack, *args: str, values: dict[str, Any] | None = None) -> str:
    """The pinned helm against this cluster; `values` go in as a values file on stdin."""
    argv = [str(stack.plane.bin_dir / "helm"), f"--kubeconfig={stack.plane.kubeconfig}", *args]
    if values is not None:
        argv += ["--values", "-"]
    result = subprocess.run(argv, input=json.dumps(values) if values is not None else None,
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args[:2])} failed:\n{result.stderr}")
    return result.stdout


def install_chart(stack: NodeStack, release: str, namespace: str, values: dict[str, Any]) -> None:
    """`helm install` the chart with the local operator image, on the node's network terms."""
    repository, tag = stack.images["operator"].ref.rsplit(":", 1)
    base: dict[str, Any] = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "extraEnv": stack.node.in_cluster_env(),
        "monitoring": {"enabled": False},  # no Prometheus Operator CRDs here
        "dashboards": {"enabled": False},
    }
    helm(stack, "install", release, str(CHART), f"--namespace={namespace}", "--create-namespace", "--wait",
         "--timeout=5m", values=_merge(base, values))


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def model_server(stack: NodeStack, namespace: str, configmap: str, *, tracking_uri: str, symbols: list[str],
                 strategy: str, name: str, flag_source: FlagSource) -> list[dict[str, Any]]:
    """The user's serving: a Deployment of `model-runtime serve` that learns its flag from `configmap`.

    `api`: it watches the ConfigMap; its ServiceAccount may get, list and watch that one ConfigMap,
    nothing else. `volume`: the kubelet mounts the ConfigMap (and delivers changes at its pod sync)."""
    image = stack.images["model-runtime"].ref
    labels = {"app.kubernetes.io/name": name}
    rule = {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [configmap], "verbs": ["get", "list", "watch"]}
    meta = {"name": name, "namespace": namespace}
    volume = flag_source == "volume"
    access = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": [rule]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
    ] if flag_source == "api" else []
    return [
        *access,
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {**meta, "labels": labels}, "spec": {
            "replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                **({"serviceAccountName": name} if flag_source == "api" else {"automountServiceAccountToken": False}),
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001},
                "containers": [{
                    "name": "serve", "image": image, "imagePullPolicy": "Never",
                    "args": ["serve", "--tracking-uri", tracking_uri, "--symbols", ",".join(symbols),
                             "--strategy", strategy, "--port", str(SERVER_PORT), "--poll-seconds", "1",
                             *(["--config-map", f"{namespace}/{configmap}"] if flag_source == "api"
                               else ["--config-dir", "/etc/cvntrade/config"])],
                    "env": stack.node.in_cluster_env(),
                    "ports": [{"name": "http", "containerPort": SERVER_PORT}],
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 2},
                    "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                                     *([{"name": "flag", "mountPath": "/etc/cvntrade/config"}] if volume else [])],
                }],
                "volumes": [{"name": "tmp", "emptyDir": {}},
                            *([{"name": "flag", "configMap": {"name": configmap}}] if volume else [])],
            }},
        }},
    ]


def pod_ip(stack: NodeStack, namespace: str, selector: str) -> str:
    """The IP of the one Ready pod that `selector` picks (routable from this host: the bridge)."""
    pods = json.loads(stack.plane.kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json").stdout)["items"]
    ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]
    if len(ready) != 1:
        raise LookupError(f"{len(ready)} Ready pods for {selector}")
    return str(ready[0]["status"]["podIP"])


def apply(stack: NodeStack, manifests: list[dict[str, Any]]) -> None:
    stack.plane.kubectl("apply", "-f", "-", input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))



@dataclass
class ServingOnNode:
    """A namespace of the user's on the node: the flag ConfigMap, model servers of `servers` as pods,
    the chart's operator watching it, models trained into MLflow, and the market's outcome series."""

    stack: NodeStack
    scenario: Scenario
    mlflow: MlflowServer
    in_cluster: dict[str, str]  # the URLs pods use: "mlflow", "prometheus"
    rows: dict[str, list[list[float]]]
    servers: dict[str, FlagSource]

    def url(self, server: str) -> str:
        """The server's pod itself, at its pod IP (the bridge routes it from this host)."""
        return f"http://{pod_ip(self.stack, self.scenario.namespace, f'app.kubernetes.io/name={server}')}:{SERVER_PORT}"

    def answer(self, server: str, symbol: str, url: str | None = None) -> dict[str, Any]:
        """A prediction of `symbol` from the server's pod (at `url` if the caller knows it)."""
        body = json.dumps({"symbol": symbol, "features": self.rows[symbol]}).encode()
        request = urllib.request.Request(f"{url or self.url(server)}/predict", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.loads(response.read()))


@contextmanager
def serving_on_node(stack: NodeStack, prometheus: PrometheusServer, workdir: Path, *, symbols: list[str],
                    servers: dict[str, FlagSource], system_namespace: str = "modelrollout-system",
                    namespace: str = "trading") -> Iterator[ServingOnNode]:
    """Train the baseline (logistic, version 1) and the focal candidate (version 2) of `symbols` into an
    MLflow of its own, feed healthy outcome series, install the chart watching `namespace` and start
    `servers` (name: flag source); everything but `stack` is stopped afterwards."""
    stops: list[Callable[[], None]] = []
    try:
        mlflow = start_mlflow(workdir / "mlflow")
        stops.insert(0, mlflow.stop)
        strategy = f"nd{uuid.uuid4().hex[:6]}"
        for loss in (BASELINE, CANDIDATE_LOSS):
            if model_runtime(["train", "--tracking-uri", mlflow.url, "--symbols", ",".join(symbols), "--strategy", strategy,
                              "--rows", "3000", "--rounds", "10", "--loss", loss]) != 0:
                raise RuntimeError(f"training {loss} failed")
        feed = SeriesFeed(prometheus)
        stops.insert(0, feed.close)
        healthy_series(feed)
        feed.scrape()
        feed.wait_for("count(n_trades)", lambda r: r.values.get("*", 0) >= 10)
        local = Stack(plane=stack.plane, prometheus=prometheus, mlflow=mlflow, feed=feed, workdir=workdir)
        prepare_namespace(local, namespace)
        in_cluster = {"mlflow": stack.node.in_cluster(mlflow.url), "prometheus": stack.node.in_cluster(prometheus.url)}
        install_chart(stack, "modelrollout", system_namespace, {
            "watchNamespaces": [namespace],
            "rbac": {"configMaps": [{"namespace": namespace, "names": [CONFIGMAP]}]},
            "prometheusUrl": in_cluster["prometheus"],
        })
        stops.insert(0, lambda: helm(stack, "uninstall", "modelrollout", f"--namespace={system_namespace}"))
        for name, source in servers.items():
            apply(stack, model_server(stack, namespace, CONFIGMAP, tracking_uri=in_cluster["mlflow"], symbols=symbols,
                                      strategy=strategy, name=name, flag_source=source))
        for name in servers:
            stack.plane.kubectl("-n", namespace, "rollout", "status", f"deployment/{name}", "--timeout=300s")
        rows = {s: generate_market(s, rows=3000)[feature_names()].to_numpy(dtype=np.float64)[-3:].tolist() for s in symbols}
        yield ServingOnNode(stack=stack, scenario=Scenario(stack=local, namespace=namespace, strategy=strategy, workdir=workdir),
                            mlflow=mlflow, in_cluster=in_cluster, rows=rows, servers=servers)
    finally:
        for stop in stops:
            with contextlib.suppress(Exception):  # stop the rest whatever one of them says
                stop()
