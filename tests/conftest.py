"""Session fixtures: the real local stack (kube-apiserver + etcd, Prometheus, MLflow) on loopback."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from devstack.controlplane import ControlPlane, start_control_plane
from devstack.mlflow import MlflowServer, start_mlflow
from devstack.prometheus import PrometheusServer, start_prometheus
from devstack.registry import log_sweep
from devstack.scenario import SWEEP_EXPERIMENT, SYMBOLS

REPO_ROOT = Path(__file__).resolve().parents[1]
LOG_TAIL_LINES = 30


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    """A failed test shows the tails of the server logs in its own tmp_path: a server that died
    mid-test (MLflow, Prometheus, an exporter) says why in the report, not only on this machine."""
    outcome = yield
    report = outcome.get_result()
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if not report.failed or not isinstance(tmp_path, Path):
        return
    for log in sorted(tmp_path.rglob("*.log")):
        lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        report.sections.append((f"log {log.relative_to(tmp_path)}", "\n".join(lines)))


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A real kube-apiserver (RBAC authorization) and etcd; the kubeconfig is an admin's."""
    plane = start_control_plane(tmp_path_factory.mktemp("controlplane"))
    yield plane
    plane.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real `mlflow server` with a SQLite backend store."""
    server = start_mlflow(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus with no targets yet; tests add theirs with `.reload([...])`."""
    server = start_prometheus(tmp_path_factory.mktemp("prometheus"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def crd_installed(control_plane: ControlPlane) -> ControlPlane:
    """The control plane with the ModelRollout CRD (and kopf's peering CRD) established."""
    for crd in sorted((REPO_ROOT / "crds").glob("*.yaml")):
        control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    control_plane.kubectl("wait", "--for=condition=established", "--timeout=60s",
                          "crd/modelrollouts.mlops.cvntrade.io")
    return control_plane


@pytest.fixture(scope="session")
def sweep(mlflow_server: MlflowServer) -> str:
    """130 sweep runs (5 symbols x 13 folds x 2 variants) with a clear F1 lift for the candidate."""
    assert log_sweep(mlflow_server.url, SWEEP_EXPERIMENT, SYMBOLS) == 130
    return SWEEP_EXPERIMENT
