"""The chart renders cleanly and says what the product needs: lint, CRDs from one source,
the operator Deployment's contract, values validation, monitoring and dashboards switches."""

from __future__ import annotations

import json

import yaml
from chart_helpers import CHART, NAMESPACE, REPO_ROOT, Helm, of_kind, one


def test_lint_is_clean_and_strict(helm: Helm) -> None:
    result = helm.run("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_template_renders_only_the_expected_objects(helm: Helm) -> None:
    result = helm.template()
    assert not [line for line in result.stderr.splitlines() if "symbolic link" not in line], result.stderr
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(result.stdout) if doc)
    assert kinds == sorted(["ServiceAccount", "Role", "RoleBinding", "Role", "RoleBinding", "Deployment",
                            "PodDisruptionBudget", "Service", "ServiceMonitor", "PrometheusRule", "PrometheusRule",
                            "KopfPeering", "ConfigMap", "ConfigMap", "ConfigMap"])


def test_crds_come_from_the_repository_crds_folder_once(helm: Helm) -> None:
    assert (CHART / "crds").is_symlink() and (CHART / "crds").resolve() == (REPO_ROOT / "crds").resolve()
    crds = of_kind(helm.render(None, "--include-crds"), "CustomResourceDefinition")
    names = sorted(crd["metadata"]["name"] for crd in crds)
    assert names == ["kopfpeerings.kopf.dev", "modelrollouts.mlops.cvntrade.io"]
    source = yaml.safe_load((REPO_ROOT / "crds" / "modelrollout.yaml").read_text())
    assert one(crds, "CustomResourceDefinition", "modelrollouts.mlops.cvntrade.io") == source
    peering = one(crds, "CustomResourceDefinition", "kopfpeerings.kopf.dev")
    assert peering["spec"]["scope"] == "Namespaced"
    assert peering["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"][
        "x-kubernetes-preserve-unknown-fields"] is True


def test_operator_deployment_contract(helm: Helm) -> None:
    docs = helm.render({"watchNamespaces": ["trading", "research"], "prometheusUrl": "http://prom:9090"})
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/cvntrade/modelrollout-operator:0.1.0"
    assert container["args"] == ["--namespace=trading", "--namespace=research", "--peering=modelrollout",
                                 "--metrics-port=9102", "--health-port=8080"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["MODELROLLOUT_PROMETHEUS_URL"]["value"] == "http://prom:9090"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(container["resources"]) == {"requests", "limits"}
    assert all(set(container["resources"][k]) == {"cpu", "memory"} for k in ("requests", "limits"))
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9102, "health": 8080}
    # kopf's mandatory peering: the object exists in every watched namespace, named as the flag says
    peerings = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in of_kind(docs, "KopfPeering")}
    assert peerings == {("trading", "modelrollout"), ("research", "modelrollout")}
    service = one(docs, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9102, "targetPort": "metrics"}]
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]


def test_values_schema_refuses_bad_values_with_the_field_named(helm: Helm) -> None:
    cases = {
        "replicaCount": {"replicaCount": 0},
        "watchNamespaces": {"watchNamespaces": ["Not_A_Namespace"]},
        "names": {"rbac": {"create": True, "configMaps": [], "secrets": [{"namespace": "trading"}]}},
        "bogus": {"bogus": True},
        "runbookBaseUrl": {"monitoring": {"enabled": True, "runbookBaseUrl": "docs/runbooks"}},
        "window": {"journalExporter": {"window": "2 days"}},
    }
    for field, values in cases.items():
        result = helm.template(values, check=False)
        assert result.returncode != 0, f"{values} was accepted"
        assert field in result.stderr, f"{field} not named in: {result.stderr}"


def test_a_namespace_named_twice_or_a_secret_without_names_is_refused(helm: Helm) -> None:
    twice = helm.template({"rbac": {"create": True, "secrets": [],
                                    "configMaps": [{"namespace": "a"}, {"namespace": "a", "names": ["x"]}]}},
                          check=False)
    assert twice.returncode != 0 and 'namespace "a" twice' in twice.stderr


def test_monitoring_switched_off_renders_no_monitoring_coreos_objects(helm: Helm) -> None:
    docs = helm.render({"monitoring": {"enabled": False, "runbookBaseUrl": "https://example.org/runbooks"}})
    assert not [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert of_kind(docs, "Deployment") and of_kind(docs, "Service")


def test_a_further_shard_scrapes_its_operator_but_leaves_the_rules_to_the_first(helm: Helm) -> None:
    shard = helm.render({"watchNamespaces": ["desk-c"], "peering": {"name": "mr-desk-c"},
                         "monitoring": {"enabled": True, "rules": False, "runbookBaseUrl": "https://example.org/r"}})
    assert of_kind(shard, "ServiceMonitor") and not of_kind(shard, "PrometheusRule")
    assert of_kind(helm.render({}), "PrometheusRule")  # by default the release carries them


def test_service_monitor_scrapes_the_metrics_port(helm: Helm) -> None:
    docs = helm.render({"monitoring": {"enabled": True, "labels": {"release": "kube-prometheus-stack"},
                                       "runbookBaseUrl": "https://example.org/runbooks"}})
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    service_labels = one(docs, "Service")["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()


def test_dashboards_are_configmaps_for_the_grafana_sidecar(helm: Helm) -> None:
    maps = of_kind(helm.render(), "ConfigMap")
    files = {path.name: path.read_text() for path in (CHART / "files" / "dashboards").glob("*.json")}
    assert len(maps) == len(files) == 3
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((name, body),) = config_map["data"].items()
        assert json.loads(body) == json.loads(files[name])
    assert not of_kind(helm.render({"dashboards": {"enabled": False, "labels": {}}}), "ConfigMap")


def test_journal_exporter_reads_its_database_url_from_a_secret(helm: Helm) -> None:
    exporter = {"enabled": True, "image": {"repository": "reg/model-runtime", "tag": "1.2", "pullPolicy": "Always"},
                "dbUrlSecret": {"name": "journal-db", "key": "url"}, "window": "48h", "maxStaleness": "2h",
                "refreshInterval": "15s", "port": 9103}
    docs = helm.render({"journalExporter": exporter})
    deployment = one(docs, "Deployment", "mro-modelrollout-journal-exporter")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "reg/model-runtime:1.2"
    assert container["args"][0] == "journal-exporter" and "--window=48h" in container["args"]
    assert not [a for a in container["args"] if a.startswith("--db-url")]
    (env,) = container["env"]
    assert env["name"] == "MODELROLLOUT_JOURNAL_DB_URL"
    assert env["valueFrom"]["secretKeyRef"] == {"name": "journal-db", "key": "url"}
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert one(docs, "Service", "mro-modelrollout-journal-exporter")["spec"]["ports"][0]["name"] == "metrics"

    without_secret = helm.template({"journalExporter": {**exporter, "dbUrlSecret": {"name": "", "key": "url"}}},
                                   check=False)
    assert without_secret.returncode != 0 and "dbUrlSecret.name is required" in without_secret.stderr
