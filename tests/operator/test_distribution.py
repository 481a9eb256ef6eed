"""The operator distribution carries only what it imports: importing the operator and the kubectl
plugin loads modules of declared dependencies only (none of the model stack, no devstack), and
scipy stays out until a sweep is judged."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import packages_distributions, requires

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOADED_TOP_LEVEL = """
import json, sys
import modelrollout.handlers, modelrollout.cli
print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
"""


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


def loaded_top_level_modules() -> list[str]:
    result = subprocess.run([sys.executable, "-c", LOADED_TOP_LEVEL], capture_output=True, text=True, timeout=120,
                            check=True)
    modules: list[str] = json.loads(result.stdout)
    return modules


def test_the_operator_imports_only_its_declared_dependencies() -> None:
    allowed = dependency_closure("modelrollout")
    providers = packages_distributions()
    undeclared = {module: providers[module] for module in loaded_top_level_modules()
                  if module in providers and not {canonicalize_name(d) for d in providers[module]} & allowed}
    assert undeclared == {}
    assert "mlflow-skinny" in allowed and "mlflow" not in allowed and "statsmodels" not in allowed


def test_scipy_and_the_model_stack_load_only_when_needed() -> None:
    loaded = set(loaded_top_level_modules())
    assert loaded.isdisjoint({"scipy", "statsmodels", "pandas", "pyarrow", "xgboost", "sklearn", "numba",
                              "sympy", "matplotlib", "sqlalchemy", "model_runtime", "devstack"})
    assert {"kopf", "kubernetes", "pydantic", "mlflow", "prometheus_client", "prometheus_api_client"} <= loaded
