"""Authority test helpers: people are impersonated by the admin (`kubectl --as --as-group`, and the plugin's own
--as/--as-group), so the apiserver authenticates each request as that person and RBAC authorises it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from devstack.controlplane import ControlPlane
from modelrollout.kube import REQUEST_ANNOTATION_PREFIX, format_request
from modelrollout.observation import Request

ALICE, BOB, CAROL, DAVE = "alice@cvntrade.io", "bob@cvntrade.io", "carol@cvntrade.io", "dave@cvntrade.io"
ONCALL = "trading-oncall"
POLICY = "modelrollout-requests.mlops.cvntrade.io"
REFUSED_BY_POLICY = f"ValidatingAdmissionPolicy '{POLICY}' with binding '{POLICY}' denied request: "


def grant_rollout_editing(plane: ControlPlane, namespace: str, users: list[str]) -> None:
    """What a team's developers usually hold: get and patch on ModelRollouts in their namespace."""
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "rollout-editor", "namespace": namespace},
            "rules": [{"apiGroups": ["mlops.cvntrade.io"], "resources": ["modelrollouts"],
                       "verbs": ["get", "list", "watch", "patch", "update"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "rollout-editor", "namespace": namespace},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rollout-editor"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u} for u in users]}
    plane.kubectl("apply", "-f", "-", input_text=json.dumps({"apiVersion": "v1", "kind": "List",
                                                             "items": [role, binding]}))


def as_person(plane: ControlPlane, user: str, groups: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
    """Real kubectl as `user` (a member of `groups`), impersonated by the admin; never raises."""
    impersonation = [f"--as={user}", *(f"--as-group={g}" for g in groups)]
    return plane.kubectl(*impersonation, *args, check=False)


def plugin(plane: ControlPlane, namespace: str, user: str, groups: tuple[str, ...],
           *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl modelrollout ...` as `user`, the way a person types it; never raises."""
    argv = ["kubectl", "modelrollout", *args, "-n", namespace, f"--as={user}", *(f"--as-group={g}" for g in groups)]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "KUBECONFIG": str(plane.kubeconfig)}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)


def request_annotation(kind: str, *, by: str, groups: tuple[str, ...] = (), stage: str = "full",
                       revision: str = "", request_id: str = "by-hand") -> str:
    """`key=value` for kubectl annotate: a request written by hand, with whatever requester it names."""
    value = format_request(Request(kind=kind, id=request_id, by=by, at=datetime.now(UTC), groups=groups,  # type: ignore[arg-type]
                                   stage=stage, revision=revision))
    return f"{REQUEST_ANNOTATION_PREFIX}{kind}={value}"
