"""`model-runtime serve --config-map`: the flag ConfigMap watched through a real kube-apiserver.

The server runs as a service account holding only get/list/watch on that one ConfigMap (by resourceNames),
so the documented RBAC rule is the one tested. What is asserted is the model version that answers
/predict, not what the ConfigMap says: a patch switches it within seconds (a kubelet's volume update takes
a minute or more), an apiserver outage keeps the last flags serving and says so, and a patch made after
the apiserver is back is served again.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from test_server import eventually, post, rows, start_server, value

from devstack.controlplane import ControlPlane, start_control_plane, write_kubeconfig
from devstack.process import Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
NAMESPACE, CONFIGMAP, ACCOUNT = "trading", "loss-flags", "model-server"
FOCAL = "focal:gamma=2,alpha=0.25"
BASELINE_VERSION, CANDIDATE_VERSION = "1", "2"  # trained_models: logistic champion, then focal candidate
SWITCH_SECONDS = 15.0  # the watch delivers in about a second; room for a busy 2-core machine


@dataclass
class Watched:
    plane: ControlPlane
    server: Server
    url: str

    def version(self, symbol: str) -> str:
        status, body = post(self.url, {"symbol": symbol, "features": rows(symbol, 1)})
        assert status == 200, body
        return str(body["version"])

    def readyz(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def patch(self, patch: list[dict]) -> None:
        self.plane.kubectl("-n", NAMESPACE, "patch", "configmap", CONFIGMAP, "--type=json", f"-p={json.dumps(patch)}")


def restricted_kubeconfig(plane: ControlPlane, workdir: Path) -> Path:
    """A service account allowed get/list/watch on the flag ConfigMap alone, and a kubeconfig with its token."""
    plane.kubectl("-n", NAMESPACE, "create", "serviceaccount", ACCOUNT)
    plane.kubectl("-n", NAMESPACE, "create", "role", "loss-flag-reader", "--verb=get,list,watch",
                  "--resource=configmaps", f"--resource-name={CONFIGMAP}")
    plane.kubectl("-n", NAMESPACE, "create", "rolebinding", "loss-flag-reader", "--role=loss-flag-reader",
                  f"--serviceaccount={NAMESPACE}:{ACCOUNT}")
    token = plane.kubectl("-n", NAMESPACE, "create", "token", ACCOUNT, "--duration=1h").stdout.strip()
    ca = yaml.safe_load(plane.kubeconfig.read_text())["clusters"][0]["cluster"]["certificate-authority"]
    return write_kubeconfig(workdir / "model-server-kubeconfig", plane.url, Path(ca), {"token": token})


@pytest.fixture
def watched(trained_models, tmp_path: Path) -> Iterator[Watched]:
    """Its own control plane (the test stops its apiserver), the flag ConfigMap, and a server watching it."""
    plane = start_control_plane(tmp_path / "controlplane")
    server = None
    try:
        plane.kubectl("create", "namespace", NAMESPACE)
        plane.kubectl("-n", NAMESPACE, "create", "configmap", CONFIGMAP, "--from-literal=CVN_LOSS_FUNCTION=binary:logistic")
        plane.kubectl("-n", NAMESPACE, "create", "configmap", "unrelated", "--from-literal=a=b")
        kubeconfig = restricted_kubeconfig(plane, tmp_path)
        unrelated = plane.kubectl("-n", NAMESPACE, "get", "configmap", "unrelated", check=False, kubeconfig=kubeconfig)
        assert unrelated.returncode != 0 and "forbidden" in unrelated.stderr, "the rule must name one ConfigMap"
        server, url = start_server(trained_models.tracking_uri, ",".join(trained_models.symbols), trained_models.strategy,
                                   tmp_path / "serve.log", "--config-map", f"{NAMESPACE}/{CONFIGMAP}",
                                   "--kubeconfig", str(kubeconfig))
        yield Watched(plane=plane, server=server, url=url)
    finally:
        if server is not None:
            server.stop()
        plane.stop()


def wait_switch(watched: Watched, symbol: str, version: str) -> float:
    started = time.monotonic()
    assert eventually(lambda: watched.version(symbol) == version, timeout=SWITCH_SECONDS), \
        f"{symbol} still answers {watched.version(symbol)}, not {version}, {SWITCH_SECONDS}s after the patch"
    return time.monotonic() - started


def test_a_configmap_patch_switches_the_answering_version_within_seconds_and_survives_an_apiserver_restart(
        watched: Watched) -> None:
    status, body = watched.readyz()
    assert status == 200 and body["flag_source_error"] is None
    assert value(watched.url, "model_flag_source_up") == 1.0
    assert {s: watched.version(s) for s in ("BTCUSDC", "ETHUSDC")} == {"BTCUSDC": BASELINE_VERSION,
                                                                        "ETHUSDC": BASELINE_VERSION}

    watched.patch([{"op": "add", "path": "/data/CVN_LOSS_FUNCTION__BTCUSDC", "value": FOCAL}])
    seconds = wait_switch(watched, "BTCUSDC", CANDIDATE_VERSION)
    print(f"the candidate answered {seconds:.1f}s after the patch")
    assert watched.version("ETHUSDC") == BASELINE_VERSION  # the override is one symbol's

    watched.plane.apiserver.stop()
    assert eventually(lambda: value(watched.url, "model_flag_source_up") == 0.0, timeout=30.0)
    status, body = watched.readyz()
    assert status == 200, "an apiserver outage alone must not take the pod out of its Service"
    assert f"ConfigMap {NAMESPACE}/{CONFIGMAP}" in body["flag_source_error"]
    assert "keeping the last flags" in body["flag_source_error"]
    assert watched.version("BTCUSDC") == CANDIDATE_VERSION  # the last flags keep serving
    assert watched.version("ETHUSDC") == BASELINE_VERSION

    watched.plane.apiserver.start()
    watched.plane.apiserver.wait_ready(
        lambda: watched.plane.kubectl("get", "--raw=/readyz", check=False).returncode == 0, timeout=120)
    watched.patch([{"op": "remove", "path": "/data/CVN_LOSS_FUNCTION__BTCUSDC"}])  # the revert
    seconds = wait_switch(watched, "BTCUSDC", BASELINE_VERSION)
    print(f"the baseline answered {seconds:.1f}s after the revert, apiserver restarted")
    assert eventually(lambda: value(watched.url, "model_flag_source_up") == 1.0, timeout=SWITCH_SECONDS)
    assert watched.readyz()[1]["flag_source_error"] is None
