"""The chart's RBAC is enough for a real rollout and no more: the chart is helm-installed into the
real kube-apiserver (RBAC authorization), the operator runs as a real process with a token of the
chart's ServiceAccount and the Deployment's own arguments, and takes a rollout through shadow,
canary and (after a human's promote) full. The same token is then refused, by real requests,
what the operator must never do. test_install.py checks the grants one by one; this checks that
they are the ones the operator actually uses."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from chart_helpers import CHART, RELEASE, Helm

from devstack.controlplane import ControlPlane, write_kubeconfig
from devstack.mlflow import MlflowServer
from devstack.operator import start_operator
from devstack.process import Server
from devstack.prometheus import PrometheusServer
from devstack.scenario import BASELINE, CONFIGMAP, FLAG_KEY, SYMBOLS, Scenario, open_scenario
from modelrollout.kube import REQUEST_ANNOTATION_PREFIX

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CANDIDATE = "focal:gamma=2,alpha=0.25"
# A refusal, or an API error the operator logged; "403" not inside a timestamp (",403") or a number.
REFUSED_IN_LOG = re.compile(r"forbidden|(?<![\d.,:])403(?!\d)", re.IGNORECASE)


@dataclass(frozen=True)
class Installed:
    """The chart installed for one scenario, and what its operator Deployment would run with."""

    scenario: Scenario
    other_namespace: str
    account: str  # system:serviceaccount:<namespace>:<name>
    kubeconfig: Path  # the ServiceAccount's token, nothing else
    namespaces: list[str]  # the Deployment's --namespace arguments
    peering: str  # the Deployment's --peering argument

    def as_operator(self, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        """Real kubectl with the operator's credentials; never raises."""
        return self.scenario.plane.kubectl(*args, input_text=input_text, kubeconfig=self.kubeconfig, check=False)


@pytest.fixture(scope="module")
def installed(helm: Helm, control_plane: ControlPlane, prometheus_server: PrometheusServer,
              mlflow_server: MlflowServer, sweep: str,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    workdir = tmp_path_factory.mktemp("operator-rbac")
    with open_scenario(control_plane, prometheus_server, mlflow_server, workdir, sweep_experiment=sweep) as scenario:
        namespace, other = scenario.namespace, f"{scenario.namespace}-other"
        plane = scenario.plane
        values = {"watchNamespaces": [namespace], "monitoring": {"enabled": False},
                  "rbac": {"create": True, "configMaps": [{"names": [CONFIGMAP]}]}}
        try:
            plane.kubectl("create", "namespace", other)
            plane.kubectl("-n", other, "create", "configmap", CONFIGMAP, f"--from-literal={FLAG_KEY}={BASELINE}")
            plane.kubectl("-n", namespace, "create", "configmap", "unrelated", "--from-literal=a=b")
            plane.kubectl("-n", namespace, "create", "secret", "generic", "unrelated", "--from-literal=token=s3cret")
            helm.run("install", RELEASE, str(CHART), "--namespace", namespace, "--kubeconfig", str(plane.kubeconfig),
                     "--values", "-", stdin=json.dumps(values))
            plane.kubectl("wait", "--for=condition=established", "--timeout=60s",
                          "crd/modelrollouts.mlops.cvntrade.io", "crd/kopfpeerings.kopf.dev")
            listed = plane.kubectl("-n", namespace, "get", "deployment", "-l", f"app.kubernetes.io/instance={RELEASE}",
                                   "-o", "json")
            (deployment,) = json.loads(listed.stdout)["items"]
            pod = deployment["spec"]["template"]["spec"]
            args, account = pod["containers"][0]["args"], pod["serviceAccountName"]
            token = plane.kubectl("-n", namespace, "create", "token", account, "--duration=1h").stdout.strip()
            ca = yaml.safe_load(plane.kubeconfig.read_text())["clusters"][0]["cluster"]["certificate-authority"]
            yield Installed(
                scenario=scenario, other_namespace=other,
                account=f"system:serviceaccount:{namespace}:{account}",
                kubeconfig=write_kubeconfig(workdir / "operator-kubeconfig", plane.url, Path(ca), {"token": token}),
                namespaces=[a.removeprefix("--namespace=") for a in args if a.startswith("--namespace=")],
                peering=next(a.removeprefix("--peering=") for a in args if a.startswith("--peering=")))
        finally:
            helm.run("uninstall", RELEASE, "--namespace", namespace, "--kubeconfig", str(plane.kubeconfig),
                     check=False)
            plane.kubectl("delete", "namespace", other, "--wait=false", check=False)


@pytest.fixture
def operator(installed: Installed) -> Iterator[Server]:
    """One replica as the chart's Deployment runs it: its namespaces, its peering, the SA's token."""
    server = start_operator(installed.scenario.workdir, installed.kubeconfig, installed.namespaces,
                            name="chart-operator", peering=installed.peering)
    yield server
    server.stop()


def test_the_chart_service_account_takes_a_rollout_to_completed(installed: Installed, operator: Server) -> None:
    scenario = installed.scenario
    assert installed.namespaces == [scenario.namespace]
    assert installed.as_operator("-n", scenario.namespace, "get", "pods").returncode != 0, \
        "the operator's kubeconfig must carry the ServiceAccount's token, not the admin's certificate"

    scenario.apply(scenario.manifest())
    scenario.wait_phase("AwaitingApproval", stage="full", timeout=120)
    flags = scenario.effective_flags()
    assert flags["BTCUSDC"] == CANDIDATE and all(flags[s] == BASELINE for s in SYMBOLS if s != "BTCUSDC")
    peering = json.loads(scenario.kubectl("get", "kopfpeering", installed.peering, "-o", "json").stdout)
    assert peering.get("status"), "the operator keeps itself alive in the chart's KopfPeering"

    scenario.kubectl("modelrollout", "promote", "focal-loss", "--ticket", "CHG-RBAC")  # a human, as admin
    # Completed first moves the champion aliases (retried until MLflow has them): wait for those moves too.
    status = scenario.wait_for(lambda s: s.get("phase") == "Completed" and all(
        a["state"] == "Done" for a in s.get("actions", [])), "Completed, and recorded in MLflow", timeout=120)
    assert status["live"] == "5/5" and status["approval"]["by"] == "admin"
    assert set(scenario.effective_flags().values()) == {CANDIDATE}
    assert scenario.aliases() == dict.fromkeys(SYMBOLS, "2")
    reasons = {e["reason"] for e in scenario.events()}  # Events are posted with the SA's token too
    assert {"StageStarted", "Approved", "ActionDone", "Completed"} <= reasons, reasons

    log = operator.log_path.read_text()
    assert "ActionDone" in log, operator.log_tail()
    refused = [line for line in log.splitlines() if REFUSED_IN_LOG.search(line)]
    assert not refused, "\n".join(refused[:20])


def test_the_same_token_is_refused_what_the_operator_must_not_do(installed: Installed) -> None:
    namespace, other = installed.scenario.namespace, installed.other_namespace
    flag = json.dumps({"data": {f"{FLAG_KEY}__BTCUSDC": CANDIDATE}})
    deployment = json.dumps({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "intruder"},
                             "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {
                                 "metadata": {"labels": {"app": "x"}},
                                 "spec": {"containers": [{"name": "x", "image": "busybox"}]}}}})
    assert installed.as_operator("-n", namespace, "get", "configmap", CONFIGMAP).returncode == 0
    assert installed.as_operator("-n", namespace, "get", "mro").returncode == 0
    refused: dict[str, tuple[str, ...]] = {
        "patch the flag ConfigMap in another namespace": (
            "-n", other, "patch", "configmap", CONFIGMAP, "--type=merge", "-p", flag),
        "patch a ConfigMap the values do not name": (
            "-n", namespace, "patch", "configmap", "unrelated", "--type=merge", "-p", flag),
        "list Secrets": ("-n", namespace, "get", "secrets"),
        "read a Secret": ("-n", namespace, "get", "secret", "unrelated"),
        "create a Deployment": ("-n", namespace, "create", "-f", "-"),
        "list ModelRollouts cluster-wide": ("get", "mro", "--all-namespaces"),
        "delete a ModelRollout": ("-n", namespace, "delete", "mro", "focal-loss", "--wait=false"),
    }
    for what, args in refused.items():
        result = installed.as_operator(*args, input_text=deployment if "create" in args else None)
        assert result.returncode != 0, f"{what}: allowed\n{result.stdout}"
        assert "forbidden" in result.stderr.lower() and f'User "{installed.account}"' in result.stderr, \
            f"{what}: not an RBAC refusal of the ServiceAccount:\n{result.stderr}"
    elsewhere = json.loads(installed.scenario.plane.kubectl("-n", other, "get", "configmap", CONFIGMAP,
                                                            "-o", "json").stdout)["data"]
    assert elsewhere == {FLAG_KEY: BASELINE}


def test_the_same_token_cannot_approve_or_abort_in_anyone_s_name(installed: Installed) -> None:
    """The operator may patch ModelRollouts (kopf's finalizer and progress annotations), and the
    admission policy still refuses it every request: in a person's name, in its own, or by naming itself."""
    namespace, name = installed.scenario.namespace, "authority-probe"
    installed.scenario.apply(installed.scenario.manifest(name))
    at = "2026-12-01T21:00:00+00:00"
    attempts = {
        "approve as alice": f"{REQUEST_ANNOTATION_PREFIX}promote=id=sa-1; by=alice@cvntrade.io; at={at}; stage=full",
        "abort as alice": f"{REQUEST_ANNOTATION_PREFIX}abort=id=sa-2; by=alice@cvntrade.io; at={at}",
        "abort as itself": f"{REQUEST_ANNOTATION_PREFIX}abort=id=sa-3; by={installed.account}; at={at}",
    }
    for what, annotation in attempts.items():
        result = installed.as_operator("-n", namespace, "annotate", "--overwrite", "mro", name, annotation)
        assert result.returncode != 0, f"{what}: allowed"
        assert "ValidatingAdmissionPolicy 'modelrollout-requests.mlops.cvntrade.io'" in result.stderr, result.stderr
        assert installed.account in result.stderr, result.stderr
    itself = json.dumps({"spec": {"accountability": {"mayApprove": {"users": [installed.account]}}}})
    named = installed.as_operator("-n", namespace, "patch", "mro", name, "--type=merge", "-p", itself)
    assert named.returncode != 0 and "system: users and groups cannot be named" in named.stderr, named.stderr
    annotations = json.loads(installed.scenario.kubectl("get", "mro", name, "-o", "json").stdout)["metadata"].get(
        "annotations") or {}
    assert not [k for k in annotations if k.startswith(REQUEST_ANNOTATION_PREFIX)]
    installed.scenario.kubectl("delete", "mro", name, "--wait=false")
