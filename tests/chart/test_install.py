"""`helm install` of the chart into the real kube-apiserver (RBAC authorization): the CRDs come
in from crds/, NOTES tell the user what to do next, and the operator's ServiceAccount can do
exactly what the operator needs and is refused the rest (checked by impersonation)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
from chart_helpers import CHART, RELEASE, Helm

from devstack.controlplane import ControlPlane

NAMESPACE, OTHER = "mro-chart", "mro-chart-other"
ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-modelrollout"
VALUES = {
    "watchNamespaces": [NAMESPACE],
    "monitoring": {"enabled": False, "runbookBaseUrl": "https://example.org/runbooks"},
    "rbac": {"create": True, "configMaps": [{"names": ["cvntrade-model-config"]}],
             "secrets": [{"names": ["prometheus-auth"]}]},
}


@pytest.fixture(scope="module")
def installed(helm: Helm, control_plane: ControlPlane) -> Iterator[subprocess.CompletedProcess[str]]:
    for namespace in (NAMESPACE, OTHER):
        control_plane.kubectl("create", "namespace", namespace)
        control_plane.kubectl("-n", namespace, "create", "configmap", "cvntrade-model-config",
                              "--from-literal=CVN_LOSS_FUNCTION=binary:logistic")
        control_plane.kubectl("-n", namespace, "create", "secret", "generic", "prometheus-auth",
                              "--from-literal=token=s3cret")
    control_plane.kubectl("-n", NAMESPACE, "create", "configmap", "unrelated", "--from-literal=a=b")
    control_plane.kubectl("-n", NAMESPACE, "create", "secret", "generic", "unrelated", "--from-literal=a=b")
    result = helm.run("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kubeconfig",
                      str(control_plane.kubeconfig), "--values", "-", stdin=json.dumps(VALUES))
    yield result
    helm.run("uninstall", RELEASE, "--namespace", NAMESPACE, "--kubeconfig", str(control_plane.kubeconfig))
    for namespace in (NAMESPACE, OTHER):
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false")


def can_i(plane: ControlPlane, *args: str) -> bool:
    result = plane.kubectl("auth", "can-i", f"--as={ACCOUNT}", *args, check=False)
    assert result.stdout.strip() in ("yes", "no"), result.stderr
    return result.stdout.strip() == "yes"


@pytest.mark.e2e
def test_install_brings_the_crds_and_the_objects(installed: subprocess.CompletedProcess[str],
                                                 control_plane: ControlPlane) -> None:
    control_plane.kubectl("wait", "--for=condition=established", "--timeout=60s",
                          "crd/modelrollouts.mlops.cvntrade.io", "crd/kopfpeerings.kopf.dev")
    assert control_plane.kubectl("-n", NAMESPACE, "get", "kopfpeering", "modelrollout", "-o", "name").stdout.strip()
    deployment = json.loads(control_plane.kubectl("-n", NAMESPACE, "get", "deployment", f"{RELEASE}-modelrollout",
                                                  "-o", "json").stdout)
    assert deployment["spec"]["replicas"] == 2
    notes = installed.stdout
    assert "kubectl apply -f examples/focal-loss-rollout.yaml" not in notes  # the example names "default"
    assert f"namespace: {NAMESPACE}/' examples/focal-loss-rollout.yaml | kubectl apply -f -" in notes
    assert f"kubectl get mro -n {NAMESPACE} -w" in notes
    assert f"kubectl modelrollout status focal-loss -n {NAMESPACE}" in notes


@pytest.mark.e2e
def test_the_service_account_may_do_what_the_operator_does(installed: subprocess.CompletedProcess[str],
                                                           control_plane: ControlPlane) -> None:
    allowed = [
        ("watch", "modelrollouts.mlops.cvntrade.io"),
        ("patch", "modelrollouts.mlops.cvntrade.io"),
        ("update", "modelrollouts.mlops.cvntrade.io", "--subresource=status"),
        ("create", "events"),
        ("create", "events.events.k8s.io"),
        ("patch", "kopfpeerings.kopf.dev/modelrollout"),
        ("get", "configmap/cvntrade-model-config"),
        ("patch", "configmap/cvntrade-model-config"),
        ("get", "secret/prometheus-auth"),
    ]
    for verb, *what in allowed:
        assert can_i(control_plane, verb, *what, "-n", NAMESPACE), f"{verb} {what} refused"


@pytest.mark.e2e
def test_the_service_account_is_refused_everything_else(installed: subprocess.CompletedProcess[str],
                                                        control_plane: ControlPlane) -> None:
    refused = [
        ("patch", "configmap/cvntrade-model-config", "-n", OTHER),  # another namespace
        ("patch", "configmap/unrelated", "-n", NAMESPACE),  # not a named flag ConfigMap
        ("list", "secrets", "-n", NAMESPACE),
        ("get", "secret/unrelated", "-n", NAMESPACE),
        ("get", "secret/prometheus-auth", "-n", OTHER),
        ("delete", "modelrollouts.mlops.cvntrade.io", "-n", NAMESPACE),
        ("create", "modelrollouts.mlops.cvntrade.io", "-n", NAMESPACE),
        ("watch", "modelrollouts.mlops.cvntrade.io", "-n", OTHER),
        ("list", "namespaces"),
        ("list", "customresourcedefinitions.apiextensions.k8s.io"),
        ("create", "pods", "-n", NAMESPACE),
    ]
    for verb, *what in refused:
        assert not can_i(control_plane, verb, *what), f"{verb} {what} allowed"


@pytest.mark.e2e
def test_the_service_account_really_patches_and_is_really_refused(installed: subprocess.CompletedProcess[str],
                                                                  control_plane: ControlPlane) -> None:
    """Real requests, not just can-i: a kopf-style peering keep-alive and a flag patch go
    through in the watched namespace; the same patch elsewhere and a Secret list fail."""
    keepalive = {"status": {"replica-a": {"priority": 7, "lifetime": 60, "lastseen": "2026-01-01T00:00:00Z"}}}
    control_plane.kubectl("-n", NAMESPACE, "patch", "kopfpeering", "modelrollout", "--type=merge",
                          "-p", json.dumps(keepalive), f"--as={ACCOUNT}")
    stored = json.loads(control_plane.kubectl("-n", NAMESPACE, "get", "kopfpeering", "modelrollout",
                                              "-o", "json").stdout)
    assert stored["status"] == keepalive["status"]  # kopf's free-form status survives the schema

    flag = json.dumps({"data": {"CVN_LOSS_FUNCTION__BTCUSDC": "focal:gamma=2,alpha=0.25"}})
    control_plane.kubectl("-n", NAMESPACE, "patch", "configmap", "cvntrade-model-config", "--type=merge",
                          "-p", flag, f"--as={ACCOUNT}")
    elsewhere = control_plane.kubectl("-n", OTHER, "patch", "configmap", "cvntrade-model-config", "--type=merge",
                                      "-p", flag, f"--as={ACCOUNT}", check=False)
    assert elsewhere.returncode != 0 and "forbidden" in elsewhere.stderr.lower()
    secrets = control_plane.kubectl("-n", NAMESPACE, "get", "secrets", f"--as={ACCOUNT}", check=False)
    assert secrets.returncode != 0 and "forbidden" in secrets.stderr.lower()
