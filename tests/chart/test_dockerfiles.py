"""The images, checked without a Docker engine: every COPY source exists in the build context
(the repository root), the base is a slim Python 3.11, the user is not root, the entry point is
a console script of pyproject.toml, the extras installed are declared, and that entry point
runs from the installed distribution."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from chart_helpers import REPO_ROOT

DOCKERFILES = [REPO_ROOT / "operator" / "Dockerfile", REPO_ROOT / "model_runtime" / "Dockerfile"]
PYPROJECT_TOML = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
PYPROJECT = PYPROJECT_TOML["project"]
PACKAGE_DIRS = PYPROJECT_TOML["tool"]["setuptools"]["package-dir"]


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


@pytest.fixture(params=DOCKERFILES, ids=lambda p: p.parent.name)
def dockerfile(request: pytest.FixtureRequest) -> list[tuple[str, str]]:
    return instructions(request.param)


def test_copy_sources_exist_in_the_build_context(dockerfile: list[tuple[str, str]]) -> None:
    copies = [shlex.split(args) for kind, args in dockerfile if kind == "COPY"]
    local = [words for words in copies if not any(w.startswith("--from=") for w in words)]
    assert local, "no COPY from the build context"
    for *sources, _destination in local:
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"COPY source {source} missing"
    installed_packages = {source.rstrip("/") for *sources, _ in local for source in sources}
    for package_dir in PACKAGE_DIRS.values():
        assert package_dir in installed_packages, f"{package_dir} (a package of pyproject.toml) is not copied"


def test_slim_python_base_and_a_non_root_user(dockerfile: list[tuple[str, str]]) -> None:
    bases = [args.split()[0] for kind, args in dockerfile if kind == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases)
    users = [args for kind, args in dockerfile if kind == "USER"]
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_install_uses_pyproject_and_declared_extras_only(dockerfile: list[tuple[str, str]]) -> None:
    (install,) = [args for kind, args in dockerfile if kind == "RUN" and "pip install" in args]
    targets = [w for w in shlex.split(install.split("pip install", 1)[1]) if not w.startswith("-")]
    assert targets and all(re.fullmatch(r"\.(\[[\w,]+\])?", t) for t in targets), f"installs {targets}, not ."
    for target in targets:
        for extra in re.findall(r"[\w-]+", target.partition("[")[2]):
            assert extra in PYPROJECT.get("optional-dependencies", {}), f"extra [{extra}] not in pyproject.toml"


def test_entry_point_is_a_console_script_that_runs(dockerfile: list[tuple[str, str]]) -> None:
    (entrypoint,) = [json.loads(args) for kind, args in dockerfile if kind == "ENTRYPOINT"]
    script = entrypoint[0]
    assert script in PYPROJECT["scripts"], f"{script} is not a [project.scripts] entry"
    binary = Path(sys.executable).parent / script
    result = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
