"""Thin Kubernetes adapter: read a rollout, write its status safely, move the ConfigMap lever.

Status writes are full replacements guarded by `resourceVersion`, so a concurrent write
(a human's annotation, a second replica during a peering hand-over) answers 409 and the
cycle is simply redone from fresh state: nothing half-applied, nothing lost.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import kubernetes
from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from modelrollout.crd import GROUP, KIND, PLURAL, VERSION
from modelrollout.observation import Request, RequestKind
from modelrollout.status import ModelRolloutStatus

REQUEST_ANNOTATION_PREFIX = f"{GROUP}/request-"  # request-promote, request-abort, request-retry
REQUEST_KINDS = ("promote", "abort", "retry")
REQUEST_FIELDS = ("id", "by", "groups", "at", "stage", "revision", "ticket")
REQUEST_FIELD_SEPARATOR = "; "
# crds/modelrollout-requests.yaml: the policy that checks a request's requester and authority at admission
ADMISSION_POLICY = f"modelrollout-requests.{GROUP}"
PROBE_REQUESTER = "modelrollout-admission-probe"


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


def api_client(connections: int) -> ApiClient:
    """A client on the in-cluster credentials in a pod, else the kubeconfig (KUBECONFIG), keeping up
    to `connections` connections open: one per thread that calls the apiserver at once.

    The client's default pool (5 per CPU) is smaller than kopf's workers; a connection handed back
    to a full pool is closed, and the next call opens a new one and pays its TLS handshake, most of
    whose CPU is the apiserver's.
    """
    kubernetes.config.load_config()
    configuration = kubernetes.client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = connections
    return ApiClient(configuration)


def format_request(request: Request) -> str:
    """The annotation value: `id=..; by=..; groups=a,b; at=..; stage=..; revision=..; ticket=..`.

    Flat fields, not JSON, because CEL cannot parse JSON: the admission policy splits the
    value on `; ` and compares `by=` and `groups=` with the identity the apiserver
    authenticated. A value holding the separators could not be told apart, so it is refused.
    """
    fields = {"id": request.id, "by": request.by, "groups": ",".join(request.groups), "at": request.at.isoformat(),
              "stage": request.stage, "revision": request.revision, "ticket": request.ticket}
    bad = [f"{name} {value!r}" for name, value in fields.items() if ";" in value or "\n" in value]
    bad += [f"group {group!r}" for group in request.groups if "," in group or not group]
    if bad:
        raise ValueError(f"a request cannot carry ';' or a line break, nor a group with ',' or none: {', '.join(bad)}")
    return REQUEST_FIELD_SEPARATOR.join(f"{name}={value}" for name, value in fields.items())


def parse_request(kind: str, value: str) -> Request | None:
    """One request annotation's value, or None when it is not one the admission policy would admit."""
    if kind not in REQUEST_KINDS:
        return None
    fields: dict[str, str] = {}
    for part in value.split(REQUEST_FIELD_SEPARATOR):
        name, equals, text = part.partition("=")
        if not equals or name not in REQUEST_FIELDS or name in fields:
            return None
        fields[name] = text
    if not fields.get("id") or not fields.get("by") or "at" not in fields:
        return None
    try:
        at = datetime.fromisoformat(fields["at"])
    except ValueError:
        return None
    return Request(kind=cast(RequestKind, kind), id=fields["id"], by=fields["by"], at=at,
                   groups=tuple(g for g in fields.get("groups", "").split(",") if g), ticket=fields.get("ticket", ""),
                   stage=fields.get("stage", ""), revision=fields.get("revision", ""))


def parse_requests(annotations: dict[str, str]) -> list[Request]:
    """Human requests written by `kubectl modelrollout promote|abort|retry`; malformed ones are skipped."""
    parsed = (parse_request(key.removeprefix(REQUEST_ANNOTATION_PREFIX), value)
              for key, value in sorted(annotations.items()) if key.startswith(REQUEST_ANNOTATION_PREFIX))
    return [request for request in parsed if request is not None]


class RawApi:
    """Calls to built-in kinds, objects in and out as dicts.

    kubernetes' `CoreV1Api` (and `BatchV1Api`) import the model classes of every kind of their group with
    their module (core/v1: about 250 modules, 19 MB resident for the life of the process); these calls go
    through the same `ApiClient` (its configuration, authentication, connection pool and errors:
    `ApiException`), with the same paths, query parameters and content types as the generated methods of
    the same name.
    """

    def __init__(self, api_client: ApiClient) -> None:
        self.api_client = api_client

    def _call(self, method: str, path: str, *, body: dict[str, Any] | None = None, query: list[tuple[str, str]] | None = None,
              content_type: str | None = None) -> dict[str, Any]:
        headers = {"Accept": "application/json"} | ({"Content-Type": content_type} if content_type else {})
        request = self.api_client.param_serialize(method=method, resource_path=path, query_params=query or [],
                                                  header_params=headers, body=body, auth_settings=["BearerToken"])
        response = self.api_client.call_api(*request)
        response.read()
        return cast(dict[str, Any], self.api_client.response_deserialize(response, {"2XX": "object"}).data)


class CoreApi(RawApi):
    """The few core/v1 calls the operator makes: ConfigMaps, Secrets, Events."""

    def read_namespaced_config_map(self, name: str, namespace: str) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}")

    def patch_namespaced_config_map(self, name: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", f"/api/v1/namespaces/{namespace}/configmaps/{name}", body=body,
                          content_type=_PATCH)

    def read_namespaced_secret(self, name: str, namespace: str) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")

    def create_namespaced_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"/api/v1/namespaces/{namespace}/events", body=body)

    def read_namespaced_event(self, name: str, namespace: str) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/namespaces/{namespace}/events/{name}")

    def patch_namespaced_event(self, name: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", f"/api/v1/namespaces/{namespace}/events/{name}", body=body, content_type=_PATCH)

    def list_namespaced_event(self, namespace: str, field_selector: str) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/namespaces/{namespace}/events", query=[("fieldSelector", field_selector)])


class BatchApi(RawApi):
    """The batch/v1 calls the operator makes: the shadow stage's sweep Job."""

    def create_namespaced_job(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"/apis/batch/v1/namespaces/{namespace}/jobs", body=body)

    def read_namespaced_job(self, name: str, namespace: str) -> dict[str, Any]:
        return self._call("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")


# CoreV1Api's content type for a patch; the client sends a dict body as a strategic merge patch
_PATCH = "application/json-patch+json"


class Kube:
    def __init__(self, api_client: ApiClient | None = None) -> None:
        client = api_client or ApiClient()
        self.custom = CustomObjectsApi(client)
        self.core = CoreApi(client)
        self.batch = BatchApi(client)

    def get_rollout(self, namespace: str, name: str) -> RolloutObject | None:
        try:
            obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return rollout_from_body(cast(dict[str, Any], obj))

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
        return rollout_from_body(cast(dict[str, Any], obj))

    def admission_refuses_forgery(self, rollout: RolloutObject, now: datetime) -> str:
        """"" when the apiserver refuses a request in someone else's name on this rollout, else why not.

        A dry run (nothing is written): it proves the policy, its binding and its reach over
        this namespace are in force right now, and needs no right beyond the `patch` the
        operator already has (reading cluster-scoped policies would need a ClusterRole).
        """
        forged = Request(kind="abort", id="admission-probe", by=PROBE_REQUESTER, at=now)
        patch = {"metadata": {"annotations": {f"{REQUEST_ANNOTATION_PREFIX}abort": format_request(forged)}}}
        try:
            self.custom.patch_namespaced_custom_object(GROUP, VERSION, rollout.namespace, PLURAL, rollout.name, patch,
                                                       dry_run="All")
        except ApiException as error:
            if f"ValidatingAdmissionPolicy '{ADMISSION_POLICY}'" in str(error.body or ""):
                return ""
            return f"could not check that the apiserver verifies requesters ({error.status} {error.reason})"
        return (f"the apiserver accepted a request in someone else's name: the ValidatingAdmissionPolicy "
                f"{ADMISSION_POLICY} or its binding is missing (crds/modelrollout-requests.yaml)")

    def set_flags(self, namespace: str, configmap: str, flags: dict[str, str]) -> bool:
        """Set ConfigMap keys to target values; returns False when they already held them (no write)."""
        try:
            current = self.core.read_namespaced_config_map(configmap, namespace).get("data") or {}
        except ApiException as error:
            if error.status == 404:
                raise LookupError(f"ConfigMap {namespace}/{configmap} not found") from error
            raise
        changes = {k: v for k, v in flags.items() if current.get(k) != v}
        if not changes:
            return False
        self.core.patch_namespaced_config_map(configmap, namespace, {"data": changes})
        return True

    def create_job(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create a Job; False when one of that name already exists (a retry after a crash: the name is the key)."""
        try:
            self.batch.create_namespaced_job(namespace, body)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def read_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.batch.read_namespaced_job(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        data = self.core.read_namespaced_secret(name, namespace).get("data") or {}
        if key not in data:
            raise LookupError(f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(data[key]).decode().strip()


def rollout_from_body(obj: Mapping[str, Any]) -> RolloutObject:
    """A rollout from its object as the apiserver or a watch gives it."""
    meta = obj["metadata"]
    return RolloutObject(
        name=meta["name"], namespace=meta["namespace"], uid=meta["uid"], generation=int(meta.get("generation", 0)),
        resource_version=meta["resourceVersion"], spec=obj.get("spec") or {}, status=obj.get("status") or {},
        annotations=meta.get("annotations") or {}, deleting=bool(meta.get("deletionTimestamp")))
