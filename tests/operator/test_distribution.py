"""The operator distribution carries only what it imports: the operator and the kubectl plugin import
in a process where only the operator's dependency closure is importable (as in its image; the dev
venv also holds the model runtime's), load none of the model stack and no devstack, and leave scipy
out until a sweep is judged."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import packages_distributions, requires

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# Top-level modules of installed distributions outside the closure raise ModuleNotFoundError, as
# they would where they are not installed; the standard library and the closure import as usual.
IMPORT_AS_IN_THE_IMAGE = """
import importlib.abc, json, sys
hidden = set(json.loads(sys.argv[1]))

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Absent())
import modelrollout.handlers, modelrollout.cli
print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
"""
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


def outside(closure: set[str]) -> set[str]:
    """Top-level modules that only distributions outside `closure` provide."""
    return {module for module, providers in packages_distributions().items()
            if not {canonicalize_name(p) for p in providers} & closure}


def loaded_in_the_image() -> set[str]:
    hidden = outside(dependency_closure("modelrollout")) - {"modelrollout"}
    result = subprocess.run([sys.executable, "-c", IMPORT_AS_IN_THE_IMAGE, json.dumps(sorted(hidden))],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr  # a missing dependency fails here
    return set(json.loads(result.stdout))


def test_the_operator_declares_the_client_distributions_only() -> None:
    closure = dependency_closure("modelrollout")
    assert {"kopf", "kubernetes", "pydantic", "prometheus-client", "prometheus-api-client", "mlflow-skinny",
            "scipy"} <= closure
    assert closure.isdisjoint({"mlflow", "statsmodels", "pandas", "xgboost", "scikit-learn", "matplotlib",
                               "sqlalchemy", "model-runtime", "modelrollout-devstack"})


def test_the_operator_imports_without_the_model_stack_and_without_scipy() -> None:
    loaded = loaded_in_the_image()
    assert {"kopf", "kubernetes", "pydantic", "mlflow", "prometheus_client", "prometheus_api_client"} <= loaded
    assert loaded.isdisjoint(MODEL_STACK | {"scipy"})
