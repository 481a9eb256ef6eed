"""The chart's RBAC is least privilege: namespaced only, no wildcard, Secrets by name only,
ConfigMaps only where the values say, and exactly the verbs the operator and kopf use."""

from __future__ import annotations

from typing import Any

import pytest
from chart_helpers import NAMESPACE, Helm, of_kind, one

WIDE = {
    "watchNamespaces": ["trading", "research"],
    "rbac": {
        "create": True,
        "configMaps": [{"names": ["cvntrade-model-config"]}, {"namespace": "research"}],
        "secrets": [{"namespace": "trading", "names": ["prometheus-auth"]}],
    },
}


def rules_by_namespace(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for role in of_kind(docs, "Role"):
        found.setdefault(role["metadata"]["namespace"], []).extend(role["rules"])
    return found


def grants(rules: list[dict[str, Any]], resource: str) -> list[dict[str, Any]]:
    return [rule for rule in rules if resource in rule["resources"]]


# Everything the operator may do, per resource: kopf watches and patches its objects
# (finalizers, progress annotations, peering keep-alives), the operator replaces status,
# posts Events, reads Secrets and patches flag ConfigMaps. Nothing may be deleted.
ALLOWED_VERBS = {
    "modelrollouts": {"get", "list", "watch", "patch"},
    "modelrollouts/status": {"patch", "update"},
    "events": {"create", "patch"},
    "kopfpeerings": {"get", "list", "watch", "patch"},
    "configmaps": {"get", "list", "watch", "patch"},
    "secrets": {"get"},
    "jobs": {"create", "get"},
}


@pytest.mark.parametrize("values", [None, WIDE, {"rbac": {**WIDE["rbac"], "sweepJobs": True}}],
                         ids=["defaults", "two-namespaces", "sweep-jobs"])
def test_nothing_cluster_wide_no_wildcards_no_extra_verbs(helm: Helm, values: dict[str, Any] | None) -> None:
    docs = helm.render(values)
    assert not of_kind(docs, "ClusterRole") and not of_kind(docs, "ClusterRoleBinding")
    for role in of_kind(docs, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), f"wildcard {field} in {role['metadata']['name']}"
            for resource in rule["resources"]:
                assert set(rule["verbs"]) <= ALLOWED_VERBS[resource], (resource, rule["verbs"])


def test_every_role_is_bound_to_the_operator_service_account_only(helm: Helm) -> None:
    docs = helm.render(WIDE)
    account = one(docs, "ServiceAccount")["metadata"]
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in of_kind(docs, "Role")}
    bindings = of_kind(docs, "RoleBinding")
    assert {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in bindings} == roles
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"],
                                        "namespace": account["namespace"]}]
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == account["name"]


def test_watched_namespaces_get_the_operator_and_kopf_verbs(helm: Helm) -> None:
    rules = rules_by_namespace(helm.render(WIDE))
    for namespace in ("trading", "research"):
        found = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in rules[namespace]}
        assert found[(("mlops.cvntrade.io",), ("modelrollouts",))] == {"get", "list", "watch", "patch"}
        assert found[(("mlops.cvntrade.io",), ("modelrollouts/status",))] == {"patch", "update"}
        assert found[(("", "events.k8s.io"), ("events",))] == {"create", "patch"}
        assert found[(("kopf.dev",), ("kopfpeerings",))] == {"get", "list", "watch", "patch"}


def test_jobs_only_when_shadow_sweeps_run_as_jobs_and_only_create_and_get(helm: Helm) -> None:
    assert not any(grants(rules, "jobs") for rules in rules_by_namespace(helm.render(WIDE)).values())
    rules = rules_by_namespace(helm.render({**WIDE, "rbac": {**WIDE["rbac"], "sweepJobs": True}}))
    for namespace in ("trading", "research"):
        assert grants(rules[namespace], "jobs") == [{"apiGroups": ["batch"], "resources": ["jobs"],
                                                     "verbs": ["create", "get"]}]


def test_configmaps_only_in_the_named_namespaces_and_by_name_where_given(helm: Helm) -> None:
    rules = rules_by_namespace(helm.render(WIDE))
    (trading,) = grants(rules["trading"], "configmaps")
    assert trading["resourceNames"] == ["cvntrade-model-config"]
    assert set(trading["verbs"]) == {"get", "list", "watch", "patch"}
    (research,) = grants(rules["research"], "configmaps")
    assert "resourceNames" not in research
    defaults = rules_by_namespace(helm.render())
    assert set(defaults) == {NAMESPACE}
    assert len(grants(defaults[NAMESPACE], "configmaps")) == 1
    none = rules_by_namespace(helm.render({"rbac": {"create": True, "configMaps": [], "secrets": []}}))
    assert not [r for rules in none.values() for r in grants(rules, "configmaps")]


def test_secrets_are_read_by_name_only(helm: Helm) -> None:
    assert not [r for rules in rules_by_namespace(helm.render()).values() for r in grants(rules, "secrets")]
    rules = rules_by_namespace(helm.render(WIDE))
    (secret,) = [r for rules in rules.values() for r in grants(rules, "secrets")]
    assert secret == {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                      "resourceNames": ["prometheus-auth"]}
    assert not grants(rules["research"], "secrets")


def test_rbac_can_be_left_to_the_cluster_admin(helm: Helm) -> None:
    docs = helm.render({"rbac": {"create": False, "configMaps": [], "secrets": []},
                        "serviceAccount": {"create": False, "name": "preexisting"}})
    assert not of_kind(docs, "Role") and not of_kind(docs, "RoleBinding") and not of_kind(docs, "ServiceAccount")
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "preexisting"
