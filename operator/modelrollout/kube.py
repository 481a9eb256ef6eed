"""Thin Kubernetes adapter: read a rollout, write its status safely, move the ConfigMap lever.

Status writes are full replacements guarded by `resourceVersion`, so a concurrent write
(a human's annotation, a second replica during a peering hand-over) answers 409 and the
cycle is simply redone from fresh state: nothing half-applied, nothing lost.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import kubernetes
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from modelrollout.crd import GROUP, KIND, PLURAL, VERSION
from modelrollout.observation import Request, RequestKind
from modelrollout.status import ModelRolloutStatus

REQUEST_ANNOTATION_PREFIX = f"{GROUP}/request-"  # request-promote, request-abort, request-retry


class Conflict(Exception):
    """The rollout changed since it was read (HTTP 409); redo the cycle from fresh state."""


@dataclass(frozen=True)
class RolloutObject:
    name: str
    namespace: str
    uid: str
    generation: int
    resource_version: str
    spec: dict[str, Any]
    status: dict[str, Any]
    annotations: dict[str, str]
    deleting: bool


def load_config() -> None:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG)."""
    kubernetes.config.load_config()


def parse_requests(annotations: dict[str, str]) -> list[Request]:
    """Human requests written by `kubectl modelrollout promote|abort|retry`; malformed ones are skipped."""
    requests = []
    for key, raw in sorted(annotations.items()):
        if not key.startswith(REQUEST_ANNOTATION_PREFIX):
            continue
        try:
            data = json.loads(raw)
            kind = cast(RequestKind, key.removeprefix(REQUEST_ANNOTATION_PREFIX))  # filtered below
            requests.append(Request(kind=kind, id=str(data["id"]),
                                    by=str(data["by"]), at=datetime.fromisoformat(data["at"]),
                                    ticket=str(data.get("ticket", "")), stage=str(data.get("stage", "")),
                                    revision=str(data.get("revision", ""))))
        except (ValueError, KeyError, TypeError):
            continue
    return [r for r in requests if r.kind in ("promote", "abort", "retry")]


class Kube:
    def __init__(self, api_client: ApiClient | None = None) -> None:
        client = api_client or ApiClient()
        self.custom = CustomObjectsApi(client)
        self.core = CoreV1Api(client)

    def get_rollout(self, namespace: str, name: str) -> RolloutObject | None:
        try:
            obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return _rollout(cast(dict[str, Any], obj))

    def write_status(self, rollout: RolloutObject, status: ModelRolloutStatus) -> RolloutObject:
        """Replace the status if nobody changed the object since it was read; raises Conflict otherwise."""
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": rollout.name, "namespace": rollout.namespace,
                         "resourceVersion": rollout.resource_version},
            "spec": rollout.spec,
            "status": status.model_dump(mode="json", by_alias=True, exclude_none=True),
        }
        try:
            obj = self.custom.replace_namespaced_custom_object_status(GROUP, VERSION, rollout.namespace, PLURAL,
                                                                      rollout.name, body)
        except ApiException as error:
            if error.status == 409:
                raise Conflict(f"{rollout.namespace}/{rollout.name} changed while the operator decided") from error
            raise
        return _rollout(cast(dict[str, Any], obj))

    def set_flags(self, namespace: str, configmap: str, flags: dict[str, str]) -> bool:
        """Set ConfigMap keys to target values; returns False when they already held them (no write)."""
        try:
            current = self.core.read_namespaced_config_map(configmap, namespace).data or {}
        except ApiException as error:
            if error.status == 404:
                raise LookupError(f"ConfigMap {namespace}/{configmap} not found") from error
            raise
        changes = {k: v for k, v in flags.items() if current.get(k) != v}
        if not changes:
            return False
        self.core.patch_namespaced_config_map(configmap, namespace, {"data": changes})
        return True

    def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        secret = self.core.read_namespaced_secret(name, namespace)
        if not secret.data or key not in secret.data:
            raise LookupError(f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(secret.data[key]).decode().strip()


def _rollout(obj: dict[str, Any]) -> RolloutObject:
    meta = obj["metadata"]
    return RolloutObject(
        name=meta["name"], namespace=meta["namespace"], uid=meta["uid"], generation=int(meta.get("generation", 0)),
        resource_version=meta["resourceVersion"], spec=obj.get("spec") or {}, status=obj.get("status") or {},
        annotations=meta.get("annotations") or {}, deleting=bool(meta.get("deletionTimestamp")))
