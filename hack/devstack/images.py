"""The project's images built without a Docker engine or a registry, for the local node.

A base root filesystem comes from Debian's packages (debootstrap: Python 3.11, venv, CA
certificates, the OpenMP runtime XGBoost needs); the pause image is the static `pause` binary
`hack/build-controlplane.sh --node` compiles from the pinned Kubernetes module; the project's
images are built from their own Dockerfiles by buildah with that base as the `BASE` build
argument. Everything is cached under `~/.cache/modelrollout/node`: buildah's layer cache makes an
unchanged Dockerfile and context a no-op, and an image is exported once per image ID.

A machine whose HTTPS goes through an intercepting proxy trusts it through `/etc/pip.conf` and
its CA bundle; both are mounted into the build (never committed into an image) when present.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from devstack.controlplane import REPO_ROOT

CACHE = Path(os.environ.get("MODELROLLOUT_CACHE", Path.home() / ".cache" / "modelrollout")) / "node"
MIRROR = os.environ.get("MODELROLLOUT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates", "libgomp1")
BASE_REF = "localhost/modelrollout/debian-python:bookworm"
PAUSE_REF = "localhost/modelrollout/pause:dev"
# The project's images, by the chart's names: (reference, Dockerfile).
PROJECT_IMAGES = {
    "operator": ("localhost/modelrollout/operator:dev", REPO_ROOT / "operator" / "Dockerfile"),
    "model-runtime": ("localhost/modelrollout/model-runtime:dev", REPO_ROOT / "runtime" / "Dockerfile"),
}
BUILD_TRUST = (Path("/etc/pip.conf"), Path("/etc/ssl/certs/ca-certificates.crt"))


@dataclass(frozen=True)
class Image:
    """One built image: its reference, buildah's image ID, its size, and the OCI archive to import."""

    ref: str
    image_id: str
    size: str  # as buildah reports it, e.g. "687 MB"
    archive: Path


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """buildah on the project's own storage (overlay, chroot isolation: no daemon, no registry)."""
    argv = ["buildah", f"--root={CACHE / 'buildah'}", f"--runroot={CACHE / 'buildah-run'}", "--storage-driver=overlay", *args]
    return subprocess.run(argv, check=check, text=True, capture_output=True, env={**os.environ, "BUILDAH_ISOLATION": "chroot"})


def buildah(*args: str) -> str:
    """buildah's output, or CalledProcessError with its stderr."""
    try:
        return _run(*args).stdout.strip()
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"buildah {' '.join(args[:2])} failed:\n{error.stderr[-4000:]}") from error


def _exists(ref: str) -> bool:
    return _run("inspect", "--type=image", ref, check=False).returncode == 0


def _from_directory(ref: str, directory: Path, config: list[str]) -> None:
    container = buildah("from", "scratch")
    try:
        buildah("copy", container, f"{directory}/.", "/")
        buildah("config", *config, container)
        buildah("commit", "--quiet", container, ref)
    finally:
        buildah("rm", container)


def base_image() -> str:
    """Debian bookworm (minbase) with Python 3.11: the `BASE` of the project's Dockerfiles."""
    if not _exists(BASE_REF):
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
            rootfs = Path(scratch) / "rootfs"
            subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                            "bookworm", str(rootfs), MIRROR], check=True, capture_output=True)
            for leftovers in (rootfs / "var/cache/apt/archives", rootfs / "var/lib/apt/lists"):
                for item in leftovers.glob("*"):
                    if item.is_file():
                        item.unlink()
            _from_directory(BASE_REF, rootfs, ["--cmd", '["/bin/bash"]'])
    return BASE_REF


def _export(ref: str) -> Image:
    [info] = json.loads(buildah("images", "--json", ref))
    image_id, size = info["id"], info["size"]
    name, tag = ref.rsplit("/", 1)[-1].split(":")
    archive = CACHE / "archives" / f"{name}-{tag}-{image_id[:16]}.tar"
    if not archive.exists():
        archive.parent.mkdir(parents=True, exist_ok=True)
        for stale in archive.parent.glob(f"{name}-*.tar"):
            stale.unlink()
        partial = archive.with_suffix(".partial")
        buildah("push", "--quiet", ref, f"oci-archive:{partial}:{ref}")
        partial.rename(archive)
    return Image(ref=ref, image_id=image_id, size=size, archive=archive)


def build_project_image(name: str) -> Image:
    """Build `name` (a key of PROJECT_IMAGES) from its Dockerfile on the Debian base; export it."""
    ref, dockerfile = PROJECT_IMAGES[name]
    trust = [f"--volume={path}:{path}:ro" for path in BUILD_TRUST if path.exists()]
    buildah("bud", "--quiet", "--layers", "--network=host", *trust, f"--build-arg=BASE={base_image()}",
            f"--file={dockerfile}", f"--tag={ref}", str(REPO_ROOT))
    # The image a rebuild superseded is left untagged with its layers (gigabytes for the model runtime):
    # remove dangling images, which keeps the layer cache of every tagged image (its chain has children).
    _run("rmi", "--prune", check=False)
    return _export(ref)


def pause(pause_binary: Path) -> Image:
    """The pod sandbox's image: the pinned Kubernetes' own pause program, alone; exported for containerd."""
    if not _exists(PAUSE_REF):
        with tempfile.TemporaryDirectory() as scratch:
            shutil.copy2(pause_binary, Path(scratch) / "pause")
            _from_directory(PAUSE_REF, Path(scratch), ["--entrypoint", '["/pause"]', "--user", "65535:65535"])
    return _export(PAUSE_REF)
