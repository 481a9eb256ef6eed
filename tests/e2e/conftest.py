"""End-to-end harness: the operator as a real process against the real apiserver, Prometheus and
MLflow, driven with the real kubectl and `kubectl modelrollout` (devstack.scenario.Scenario)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.controlplane import ControlPlane
from devstack.mlflow import MlflowServer
from devstack.prometheus import PrometheusServer
from devstack.scenario import Scenario, open_scenario


@pytest.fixture
def scenario(crd_installed: ControlPlane, prometheus_server: PrometheusServer, mlflow_server: MlflowServer,
             sweep: str, tmp_path: Path) -> Iterator[Scenario]:
    with open_scenario(crd_installed, prometheus_server, mlflow_server, tmp_path, sweep_experiment=sweep) as scenario:
        yield scenario
