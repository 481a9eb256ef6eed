"""The images, checked without a Docker engine. Each Dockerfile sits next to the pyproject.toml of
the one distribution it installs: every COPY source exists in the build context (the repository
root), the distribution's packages are copied and nothing else of the house (no devstack), the
base is a slim Python 3.11 by default, the user is not root, the install is that distribution with declared
extras only, and the entry point is one of its console scripts and runs from the venv."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from chart_helpers import REPO_ROOT


@dataclass(frozen=True)
class Image:
    dockerfile: Path
    instructions: list[tuple[str, str]]
    pyproject: dict

    @property
    def distribution_dir(self) -> str:
        return self.dockerfile.parent.relative_to(REPO_ROOT).as_posix()

    def package_dirs(self) -> set[str]:
        """Each top-level package's folder in the build context (setuptools' default: its name)."""
        setuptools = self.pyproject["tool"]["setuptools"]
        roots = {p for p in setuptools["packages"] if "." not in p}
        mapping = setuptools.get("package-dir", {})
        return {f"{self.distribution_dir}/{mapping.get(p, p)}" for p in roots}


IMAGES = [REPO_ROOT / "operator" / "Dockerfile", REPO_ROOT / "runtime" / "Dockerfile"]


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


@pytest.fixture(params=IMAGES, ids=lambda p: p.parent.name)
def image(request: pytest.FixtureRequest) -> Image:
    dockerfile: Path = request.param
    return Image(dockerfile, instructions(dockerfile), tomllib.loads((dockerfile.parent / "pyproject.toml").read_text()))


def local_copy_sources(image: Image) -> set[str]:
    copies = [shlex.split(args) for kind, args in image.instructions if kind == "COPY"]
    local = [words for words in copies if not any(w.startswith("--from=") for w in words)]
    assert local, "no COPY from the build context"
    return {source.rstrip("/") for *sources, _destination in local for source in sources}


def test_copies_its_distribution_and_nothing_else(image: Image) -> None:
    sources = local_copy_sources(image)
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"COPY source {source} missing"
        assert source.startswith(image.distribution_dir + "/"), f"{source} is not part of {image.distribution_dir}/"
    assert f"{image.distribution_dir}/pyproject.toml" in sources
    for package_dir in image.package_dirs():
        assert package_dir in sources, f"{package_dir} (a package of its pyproject.toml) is not copied"
    assert not any(source.startswith("hack") for source in sources), "devstack is development-only"


def test_slim_python_base_and_a_non_root_user(image: Image) -> None:
    """Every stage starts FROM the BASE argument, a slim Python 3.11 unless the build passes another
    (the local node's images pass a Debian base of their own: devstack.images)."""
    bases = [args.split()[0] for kind, args in image.instructions if kind == "FROM"]
    assert bases and all(base == "${BASE}" for base in bases)
    arguments = [args for kind, args in image.instructions if kind == "ARG"]
    assert arguments == ["BASE=python:3.11-slim"]
    users = [args for kind, args in image.instructions if kind == "USER"]
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_installs_its_distribution_with_declared_extras_only(image: Image) -> None:
    (install,) = [args for kind, args in image.instructions if kind == "RUN" and "pip install" in args]
    targets = [w for w in shlex.split(install.split("pip install", 1)[1]) if not w.startswith("-")]
    pattern = rf"\./{re.escape(image.distribution_dir)}(\[[\w,]+\])?"
    assert targets and all(re.fullmatch(pattern, t) for t in targets), f"installs {targets}, not ./{image.distribution_dir}"
    for target in targets:
        for extra in re.findall(r"[\w-]+", target.partition("[")[2]):
            assert extra in image.pyproject["project"].get("optional-dependencies", {}), f"extra [{extra}] not declared"


def test_entry_point_is_a_console_script_that_runs(image: Image) -> None:
    (entrypoint,) = [json.loads(args) for kind, args in image.instructions if kind == "ENTRYPOINT"]
    script = entrypoint[0]
    assert script in image.pyproject["project"]["scripts"], f"{script} is not a [project.scripts] entry"
    binary = Path(sys.executable).parent / script
    result = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
