"""The loss flags read from the Kubernetes API: a list, then a watch, of the one ConfigMap that holds them.

Why not only the mounted volume (`--config-dir`): a kubelet delivers a ConfigMap volume update only at its
next sync of the pod, measured 58.6 s, 84.6 s and 76.7 s after a `kubectl patch` (kubelet defaults), while a
revert must be served in under a minute. A watch delivers the patch in about a second.

`ConfigMapWatch` runs in a daemon thread (the official client is blocking) and publishes each version of
the ConfigMap's data as one new dict, so a reader sees one whole version. It lists first (the server is not
ready before), then watches from the list's resourceVersion; a watch the apiserver ends is resumed from the
last version seen, and any error (apiserver down or restarting, 410 Gone, a deleted ConfigMap) is followed
by a re-list after a jittered backoff. Meanwhile the last data stays published and `error` says why it may
be stale. RBAC: get, list, watch on `configmaps` with `resourceNames: [<name>]`; a list or watch carrying
the `metadata.name` field selector is authorized against resourceNames.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

__all__ = ["CONFIG_MAP_PATTERN", "ConfigMapWatch", "api_client", "parse_config_map"]

log = logging.getLogger(__name__)
CONFIG_MAP_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"  # namespace/name
WATCH_SECONDS = 240  # the apiserver ends each watch after this; a silent connection is given up 30 s later
REQUEST_TIMEOUT = 10.0
BACKOFF_FIRST, BACKOFF_MAX = 0.25, 5.0
GONE = 410


def parse_config_map(reference: str) -> tuple[str, str]:
    """`namespace/name` as (namespace, name); ValueError otherwise."""
    if not re.match(CONFIG_MAP_PATTERN, reference):
        raise ValueError(f"config map {reference!r}: expected <namespace>/<name>")
    namespace, name = reference.split("/")
    return namespace, name


def api_client(kubeconfig: Path | None = None) -> client.ApiClient:
    """`kubeconfig` if given; else the pod's service account in a pod, else $KUBECONFIG or ~/.kube/config.

    urllib3's own retries are off: they retry a refused connection at once, while `ConfigMapWatch` backs off.
    """
    configuration = client.Configuration()
    try:
        if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(config_file=None if kubeconfig is None else str(kubeconfig),
                                    client_configuration=configuration)
    except config.ConfigException as error:
        raise ValueError(f"config_map: no Kubernetes credentials: {error}") from None
    configuration.retries = False
    return client.ApiClient(configuration)


class ConfigMapWatch:
    """The latest data of one ConfigMap: `data` (None until the first list succeeds) and `error`
    (None while the watch is current, else why `data` may be stale)."""

    def __init__(self, namespace: str, name: str, api: client.ApiClient) -> None:
        self.namespace, self.name = namespace, name
        self.data: Mapping[str, str] | None = None
        self.error: str | None = "not listed yet"
        self._core = client.CoreV1Api(api)
        self._selector = f"metadata.name={name}"
        self._stopping = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread = threading.Thread(target=self._run, name=f"configmap-watch:{namespace}/{name}", daemon=True)

    def start(self) -> ConfigMapWatch:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._watch is not None:
            self._watch.stop()
        self._thread.join(timeout)

    def _run(self) -> None:
        delay = BACKOFF_FIRST
        while not self._stopping.is_set():
            try:
                version = self._list()
                delay = BACKOFF_FIRST
                self._follow(version)
            except ApiException as error:
                if error.status == GONE:  # the watch fell too far behind: a fresh list, no outage
                    log.info("watch of ConfigMap %s/%s expired (410 Gone), listing again", self.namespace, self.name)
                    continue
                self._failed(f"{error.status} {error.reason}")
            except Exception as error:  # noqa: BLE001 - apiserver unreachable, restarting, a broken stream
                self._failed(f"{type(error).__name__}: {error}")
            if not self._stopping.is_set():
                self._stopping.wait(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not security
                delay = min(2 * delay, BACKOFF_MAX)

    def _list(self) -> str:
        listed = self._core.list_namespaced_config_map(self.namespace, field_selector=self._selector,
                                                       _request_timeout=REQUEST_TIMEOUT)
        if not listed.items:
            raise LookupError(f"ConfigMap {self.namespace}/{self.name} not found")
        self._publish(listed.items[0].data)
        return str(listed.metadata.resource_version)  # type: ignore[union-attr] # a list always has metadata

    def _follow(self, version: str) -> None:
        """Watch from `version`; resume from the last version seen each time the apiserver ends a watch."""
        while not self._stopping.is_set():
            self._watch = watch.Watch()
            for event in self._watch.stream(
                    self._core.list_namespaced_config_map, self.namespace, field_selector=self._selector,
                    resource_version=version, allow_watch_bookmarks=True, timeout_seconds=WATCH_SECONDS,
                    _request_timeout=(REQUEST_TIMEOUT, WATCH_SECONDS + 30)):
                if event["type"] in ("ADDED", "MODIFIED"):
                    self._publish(event["raw_object"].get("data"))
                elif event["type"] == "DELETED":
                    raise LookupError(f"ConfigMap {self.namespace}/{self.name} was deleted")
            version = self._watch.resource_version or version

    def _publish(self, data: Mapping[str, Any] | None) -> None:
        fresh = {str(key): str(value) for key, value in (data or {}).items()}
        if fresh != self.data:
            self.data = fresh  # one new dict per version: a reader never sees a mix
        if self.error is not None:
            log.info("ConfigMap %s/%s listed, watching it", self.namespace, self.name)
        self.error = None

    def _failed(self, reason: str) -> None:
        if self._stopping.is_set():
            return
        kept = "keeping the last flags" if self.data is not None else "no flags loaded yet"
        self.error = f"ConfigMap {self.namespace}/{self.name}: {reason} ({kept})"
        log.warning("%s", self.error)
