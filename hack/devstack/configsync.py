"""Mirror a ConfigMap into a directory the way the kubelet mounts it, for a model server run
outside a cluster (there is no kubelet in the local stack).

The kubelet's AtomicWriter layout: the data lives in a timestamped folder, `..data` is a
symlink to it, and each key is a symlink `KEY -> ..data/KEY`. An update writes a new folder
and renames a fresh symlink over `..data`, so a reader sees the old or the new version whole,
never a mix. `model_runtime.loss_flag.read_config_dir` relies on exactly that.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)
DATA = "..data"


def write_volume(directory: Path, data: Mapping[str, str]) -> None:
    """Publish `data` into `directory` atomically (one `..data` rename), then drop the old version."""
    directory.mkdir(parents=True, exist_ok=True)
    link = directory / DATA
    previous = os.readlink(link) if link.is_symlink() else None
    version = Path(tempfile.mkdtemp(prefix="..", dir=directory))
    for key, value in data.items():
        (version / key).write_text(value)
    staging = directory / "..data_tmp"
    staging.unlink(missing_ok=True)
    staging.symlink_to(version.name)
    staging.rename(link)  # the atomic swap
    for key in data:
        user_link = directory / key
        if not user_link.is_symlink():
            user_link.symlink_to(f"{DATA}/{key}")
    for entry in directory.iterdir():  # keys that left the ConfigMap: their links now dangle
        if not entry.name.startswith("..") and entry.is_symlink() and entry.name not in data:
            entry.unlink()
    if previous:
        shutil.rmtree(directory / previous, ignore_errors=True)


class ConfigMapMirror:
    """Copies a ConfigMap's data into `directory` every `interval` seconds when it changed.

    `read` returns the ConfigMap's current data; a failed read keeps the last published version
    (as the kubelet does when the apiserver is unreachable).
    """

    def __init__(self, read: Callable[[], Mapping[str, str]], directory: Path, interval: float = 1.0) -> None:
        self.read = read
        self.directory = directory
        self.interval = interval
        self.published: dict[str, str] | None = None
        self.updates = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"configmap-mirror:{directory.name}", daemon=True)

    def sync_once(self) -> bool:
        """One read and, if the data changed, one publish; True when it published."""
        data = dict(self.read())
        if data == self.published:
            return False
        write_volume(self.directory, data)
        self.published = data
        self.updates += 1
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except Exception as error:  # noqa: BLE001 - keep the last version, retry next tick
                log.warning("cannot mirror the ConfigMap into %s: %s", self.directory, error)
            self._stop.wait(self.interval)

    def start(self) -> ConfigMapMirror:
        self.sync_once()  # the first version is there before anything reads the directory
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)


def configmap_reader(kubeconfig: Path, namespace: str, name: str) -> Callable[[], dict[str, str]]:
    """A reader of one ConfigMap's data through the apiserver (the kubelet's view of it)."""
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))

    def read() -> dict[str, str]:
        return dict(api.read_namespaced_config_map(name, namespace, _request_timeout=5).data or {})

    return read
