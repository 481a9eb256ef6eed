"""The ValidatingAdmissionPolicy on a real kube-apiserver with RBAC: each person is impersonated, holds
`patch` on ModelRollouts through a Role, and is let through or refused by the policy alone, with the
message `kubectl` prints. No operator runs here: what is refused never reaches the object."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from authority_helpers import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    ONCALL,
    REFUSED_BY_POLICY,
    as_person,
    grant_rollout_editing,
    plugin,
    request_annotation,
)

from devstack.controlplane import ControlPlane
from modelrollout.kube import REQUEST_ANNOTATION_PREFIX

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "focal-loss-rollout-fast.yaml"
REVISION = "ab12cd34ef56"


class Rollout:
    """One ModelRollout awaiting approval of its full stage (status written as the operator would)."""

    def __init__(self, plane: ControlPlane, namespace: str, name: str = "focal-loss") -> None:
        self.plane, self.namespace, self.name = plane, namespace, name

    def create(self) -> None:
        manifest = yaml.safe_load(EXAMPLE.read_text())
        manifest["metadata"] = {"name": self.name, "namespace": self.namespace}
        self.plane.kubectl("apply", "-f", "-", input_text=json.dumps(manifest))
        status = {"status": {"phase": "AwaitingApproval", "stage": "full", "stageIndex": 2, "revision": REVISION}}
        self.plane.kubectl("-n", self.namespace, "patch", "mro", self.name, "--subresource=status", "--type=merge",
                           "-p", json.dumps(status))

    def get(self) -> dict[str, Any]:
        return json.loads(self.plane.kubectl("-n", self.namespace, "get", "mro", self.name, "-o", "json").stdout)

    def requests(self) -> dict[str, str]:
        annotations = self.get()["metadata"].get("annotations") or {}
        return {k.removeprefix(REQUEST_ANNOTATION_PREFIX): v for k, v in annotations.items()
                if k.startswith(REQUEST_ANNOTATION_PREFIX)}

    def annotate(self, user: str, groups: tuple[str, ...], annotation: str) -> Any:
        return as_person(self.plane, user, groups, "-n", self.namespace, "annotate", "--overwrite", "mro", self.name,
                         annotation)

    def patch(self, user: str, groups: tuple[str, ...], body: dict[str, Any]) -> Any:
        return as_person(self.plane, user, groups, "-n", self.namespace, "patch", "mro", self.name, "--type=merge",
                         "-p", json.dumps(body))

    def plugin(self, user: str, groups: tuple[str, ...], *args: str) -> Any:
        return plugin(self.plane, self.namespace, user, groups, *args, self.name)


@pytest.fixture
def rollout(crd_installed: ControlPlane) -> Iterator[Rollout]:
    namespace = f"authority-{uuid.uuid4().hex[:6]}"
    crd_installed.kubectl("create", "namespace", namespace)
    grant_rollout_editing(crd_installed, namespace, [ALICE, BOB, CAROL, DAVE])
    rollout = Rollout(crd_installed, namespace)
    rollout.create()
    yield rollout
    crd_installed.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def refusal(result: Any) -> str:
    """What the policy said, from kubectl's (or the plugin's) error output; fails if it let the write through."""
    assert result.returncode != 0, f"accepted:\n{result.stdout}"
    assert REFUSED_BY_POLICY in result.stderr, result.stderr
    return result.stderr.split(REFUSED_BY_POLICY, 1)[1].strip()


def test_the_policy_is_installed_with_the_crd_and_denies(crd_installed: ControlPlane) -> None:
    binding = json.loads(crd_installed.kubectl("get", "validatingadmissionpolicybinding",
                                               "modelrollout-requests.mlops.cvntrade.io", "-o", "json").stdout)
    assert binding["spec"]["validationActions"] == ["Deny", "Audit"]
    policy = json.loads(crd_installed.kubectl("get", "validatingadmissionpolicy",
                                              "modelrollout-requests.mlops.cvntrade.io", "-o", "json").stdout)
    assert not (policy.get("status") or {}).get("typeChecking", {}).get("expressionWarnings"), policy["status"]


def test_a_named_approver_promotes(rollout: Rollout) -> None:
    result = rollout.plugin(ALICE, (), "promote", "--ticket", "CHG-1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"promote requested for {rollout.namespace}/focal-loss (stage full) by {ALICE}, "
                                    "ticket CHG-1 [request ")
    value = rollout.requests()["promote"]
    assert f"by={ALICE}; groups=; at=" in value and f"; stage=full; revision={REVISION}; ticket=CHG-1" in value


def test_someone_with_patch_rights_the_spec_does_not_name_is_refused_saying_why(rollout: Rollout) -> None:
    can_patch = as_person(rollout.plane, CAROL, (), "-n", rollout.namespace, "auth", "can-i", "patch",
                          "modelrollouts.mlops.cvntrade.io")
    assert can_patch.stdout.strip() == "yes"
    message = refusal(rollout.plugin(CAROL, (), "promote", "--ticket", "CHG-2"))
    assert message == (
        f"{CAROL} may not promote {rollout.namespace}/focal-loss: spec.accountability.mayApprove names users "
        f"[{ALICE}, {BOB}] and groups [], and this request names neither you nor a group of yours among them "
        "(a member of a named group names it in groups=, as kubectl modelrollout does)")
    assert "promote" not in rollout.requests()


def test_a_forged_requester_is_refused(rollout: Rollout) -> None:
    message = refusal(rollout.annotate(CAROL, (), request_annotation("promote", by=ALICE, revision=REVISION)))
    assert message == (f"{REQUEST_ANNOTATION_PREFIX}promote names {ALICE} as its requester, but the apiserver "
                       f"authenticated you as {CAROL}: a request is made in your own name only")
    # Even by someone who may approve: nobody writes in anyone else's name.
    message = refusal(rollout.annotate(BOB, (), request_annotation("promote", by=ALICE, revision=REVISION)))
    assert f"authenticated you as {BOB}" in message
    assert rollout.requests() == {}


def test_a_missing_requester_is_refused(rollout: Rollout) -> None:
    annotation = f"{REQUEST_ANNOTATION_PREFIX}promote=id=x1; at=2026-12-01T21:00:00+00:00; stage=full"
    message = refusal(rollout.annotate(ALICE, (), annotation))
    assert message == (f"{REQUEST_ANNOTATION_PREFIX}promote names no requester (by=): a request names who makes it, "
                       f"and the apiserver checks that it is you ({ALICE})")


def test_a_malformed_or_old_style_request_is_refused(rollout: Rollout) -> None:
    old = f'{REQUEST_ANNOTATION_PREFIX}promote={{"id": "1", "by": "{ALICE}", "at": "2026-12-01T21:00:00+00:00"}}'
    assert "must read id=...; by=...; at=..." in refusal(rollout.annotate(ALICE, (), old))
    approve = request_annotation("promote", by=ALICE).replace("request-promote=", "request-approve=")
    assert refusal(rollout.annotate(ALICE, (), approve)).startswith(f"unknown request {REQUEST_ANNOTATION_PREFIX}approve")


def test_a_group_one_is_not_in_is_refused(rollout: Rollout) -> None:
    message = refusal(rollout.annotate(CAROL, (), request_annotation("abort", by=CAROL, groups=(ONCALL,))))
    assert message == f"{REQUEST_ANNOTATION_PREFIX}abort claims group(s) {ONCALL}, but {CAROL} is not a member"


def test_a_member_of_a_named_group_can_abort_but_not_promote(rollout: Rollout) -> None:
    result = rollout.plugin(DAVE, (ONCALL,), "abort", "--ticket", "INC-9")
    assert result.returncode == 0, result.stderr
    assert f"by {DAVE} as {ONCALL}, ticket INC-9" in result.stdout
    assert f"by={DAVE}; groups={ONCALL}; " in rollout.requests()["abort"]
    message = refusal(rollout.plugin(DAVE, (ONCALL,), "promote"))
    assert message.startswith(f"{DAVE} may not promote {rollout.namespace}/focal-loss: spec.accountability.mayApprove")


def test_adding_oneself_to_may_approve_then_approving_is_refused(rollout: Rollout) -> None:
    add_carol = {"spec": {"accountability": {"mayApprove": {"users": [ALICE, BOB, CAROL]}}}}
    message = refusal(rollout.patch(CAROL, (), add_carol))
    assert message == (
        f"{CAROL} may not edit spec.accountability of {rollout.namespace}/focal-loss: only "
        f"spec.accountability.mayApprove as it stands (users [{ALICE}, {BOB}], groups []) may change who answers "
        "for, approves or rolls back this rollout")
    assert refusal(rollout.plugin(CAROL, (), "promote")).startswith(f"{CAROL} may not promote")
    # Both in one write: the request is judged by the rollout as it stood before the write.
    both = add_carol | {"metadata": {"annotations": dict([request_annotation(
        "promote", by=CAROL, revision=REVISION).split("=", 1)])}}
    assert refusal(rollout.patch(CAROL, (), both)).startswith(f"{CAROL} may not promote")
    # An approver may name her; from then on she may approve.
    assert rollout.patch(ALICE, (), add_carol).returncode == 0
    assert rollout.plugin(CAROL, (), "promote").returncode == 0


def test_one_request_per_write_and_never_at_creation(rollout: Rollout) -> None:
    two = {"metadata": {"annotations": dict(request_annotation(k, by=ALICE).split("=", 1) for k in ("promote", "retry"))}}
    assert refusal(rollout.patch(ALICE, (), two)).startswith("one request per write")
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["metadata"] = {"name": "born-approved", "namespace": rollout.namespace,
                            "annotations": dict([request_annotation("promote", by="admin").split("=", 1)])}
    created = rollout.plane.kubectl("apply", "-f", "-", input_text=json.dumps(manifest), check=False)
    assert refusal(created).startswith("a request (promote, abort, retry) is made on an existing rollout")


def test_other_writes_pass_whoever_makes_them(rollout: Rollout) -> None:
    """kopf's finalizer and progress annotations, labels, a request removed: nothing the policy judges."""
    assert rollout.annotate(CAROL, (), "kopf.zalando.org/last-handled-configuration={}").returncode == 0
    assert rollout.patch(CAROL, (), {"metadata": {"finalizers": ["kopf.zalando.org/KopfFinalizerMarker"]}}).returncode == 0
    assert rollout.plugin(ALICE, (), "promote").returncode == 0
    assert as_person(rollout.plane, CAROL, (), "-n", rollout.namespace, "annotate", "mro", "focal-loss",
                     f"{REQUEST_ANNOTATION_PREFIX}promote-").returncode == 0
    assert rollout.requests() == {}
    assert rollout.patch(CAROL, (), {"spec": {"description": "edited by carol"}}).returncode == 0
    rollout.patch(CAROL, (), {"metadata": {"finalizers": None}})


def test_a_service_account_can_neither_request_in_a_name_nor_be_named(rollout: Rollout) -> None:
    account = f"system:serviceaccount:{rollout.namespace}:modelrollout"
    rollout.plane.kubectl("-n", rollout.namespace, "create", "rolebinding", "sa-editor", "--role=rollout-editor",
                          f"--serviceaccount={rollout.namespace}:modelrollout")
    groups = ("system:serviceaccounts", f"system:serviceaccounts:{rollout.namespace}")
    forged = refusal(rollout.annotate(account, groups, request_annotation("promote", by=ALICE, revision=REVISION)))
    assert forged == (f"{REQUEST_ANNOTATION_PREFIX}promote names {ALICE} as its requester, but the apiserver "
                      f"authenticated you as {account}: a request is made in your own name only")
    own = refusal(rollout.annotate(account, groups, request_annotation("abort", by=account)))
    assert own.startswith(f"{account} may not abort {rollout.namespace}/focal-loss: spec.accountability.mayRollBack")
    named = rollout.patch(account, groups, {"spec": {"accountability": {"mayApprove": {"users": [ALICE, account]}}}})
    assert named.returncode != 0 and "system: users and groups cannot be named" in named.stderr, named.stderr
    assert rollout.requests() == {}
