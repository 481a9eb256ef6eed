"""The operator distribution carries only what it imports: the operator and the kubectl plugin import
in a process that sees only the operator's dependency closure (as its image does; the dev venv also
holds the model runtime's), load none of the model stack and no devstack, and leave scipy out until
a sweep is judged and MLflow out until it is first called."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import distribution, requires
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOADED_TOP_LEVEL = """
import json, sys
import modelrollout.handlers, modelrollout.cli
from modelrollout.mlflow_provider import MlflowProvider
at_import = sorted({name.partition(".")[0] for name in sys.modules})
MlflowProvider("http://127.0.0.1:9")._client  # the first MLflow call imports the client (no request yet)
print(json.dumps([at_import, sorted({name.partition(".")[0] for name in sys.modules})]))
"""
OPERATOR_SOURCE = Path(__file__).resolve().parents[2] / "operator"
MODEL_STACK = {"statsmodels", "pandas", "pyarrow", "xgboost", "sklearn", "numba", "sympy", "matplotlib",
               "sqlalchemy", "model_runtime", "devstack"}


def dependency_closure(distribution: str) -> set[str]:
    """The distribution and everything it requires, transitively, without extras."""
    environment = {**default_environment(), "extra": ""}
    seen: set[str] = set()
    todo = [distribution]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for line in requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                todo.append(requirement.name)
    return seen


def site_of(closure: set[str], folder: Path) -> Path:
    """A site-packages holding the closure's files alone (links into this venv's), as the image's does."""
    for name in closure - {"modelrollout"}:
        installed = distribution(name)
        for top in {Path(str(f)).parts[0] for f in installed.files or [] if ".." not in Path(str(f)).parts}:
            source = Path(str(installed.locate_file(top)))
            if source.exists() and not (folder / top).exists():
                (folder / top).symlink_to(source)
    return folder


def loaded_in_the_image(tmp_path: Path) -> tuple[set[str], set[str]]:
    """Top-level modules loaded by importing the operator and the plugin, and after the first MLflow call."""
    site = site_of(dependency_closure("modelrollout"), tmp_path)
    # -S: no site-packages of this venv, only the closure's and the operator's source.
    result = subprocess.run([sys.executable, "-S", "-c", LOADED_TOP_LEVEL], capture_output=True, text=True,
                            timeout=120, check=False, env={**os.environ, "PYTHONPATH": f"{site}:{OPERATOR_SOURCE}"})
    assert result.returncode == 0, result.stderr  # a missing dependency fails here
    at_import, after_mlflow = json.loads(result.stdout)
    return set(at_import), set(after_mlflow)


def test_the_operator_declares_the_client_distributions_only() -> None:
    closure = dependency_closure("modelrollout")
    assert {"kopf", "kubernetes", "pydantic", "prometheus-client", "prometheus-api-client", "mlflow-skinny",
            "scipy"} <= closure
    assert closure.isdisjoint({"mlflow", "statsmodels", "pandas", "xgboost", "scikit-learn", "matplotlib",
                               "sqlalchemy", "model-runtime", "modelrollout-devstack"})


def test_the_operator_imports_without_the_model_stack_and_without_scipy(tmp_path: Path) -> None:
    loaded, after_mlflow = loaded_in_the_image(tmp_path)
    assert {"kopf", "kubernetes", "pydantic", "prometheus_client", "prometheus_api_client"} <= loaded
    assert "mlflow" not in loaded  # its ~35 MB come with the first MLflow call
    assert "mlflow" in after_mlflow  # mlflow-skinny alone suffices for the client
    assert after_mlflow.isdisjoint(MODEL_STACK | {"scipy"})


def test_the_operator_loads_no_core_v1_api() -> None:
    """kubernetes' CoreV1Api imports the model classes of every core/v1 kind (about 19 MB resident); the
    operator's few core calls (ConfigMaps, Secrets, Events) go through `kube.CoreApi` without it."""
    code = ("import sys, modelrollout.handlers, modelrollout.cli, modelrollout.events\n"
            "print('kubernetes.client.api.core_v1_api' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                            env={**os.environ, "PYTHONPATH": str(OPERATOR_SOURCE)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
