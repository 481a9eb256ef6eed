"""Alert rules: one file that promtool checks and unit-tests, embedded as it is in the
PrometheusRule; every alert of the rollout plan is there, linked to a runbook that exists."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import CHART, REPO_ROOT, Helm, one, promtool_checks, promtool_unit_tests_pass

from devstack.prometheus import promtool

RULES = CHART / "files" / "alert-rules.yaml"
RULE_TESTS = CHART / "files" / "alert-rules.test.yaml"
PLAN = {  # alert -> priority, from the user's rollout plan
    "expectancy_negative_focal": "P1",
    "focal_training_crash": "P2",
}
FAMILIES = ("inference_latency_p99_", "training_failures_", "buy_proba_drift", "data_drift_psi_", "concept_drift_",
            "output_sharpness_high")


def alerts(groups: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in groups["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules_file() -> None:
    promtool_checks(RULES, len(alerts(yaml.safe_load(RULES.read_text()))))


@pytest.mark.slow
def test_promtool_unit_tests_pass() -> None:
    promtool_unit_tests_pass(RULE_TESTS)


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    names = {rule["alert"] for rule in alerts(yaml.safe_load(RULES.read_text()))}
    cases = [case for group in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in group["alert_rule_test"]]
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    silent = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert names - firing == set(), "alerts without a firing test"
    assert names - silent == set(), "alerts without a not-firing test"


def test_the_plans_alerts_are_there_with_runbooks_summary_and_description() -> None:
    rules = alerts(yaml.safe_load(RULES.read_text()))
    by_name = {rule["alert"]: rule for rule in rules}
    for name, priority in PLAN.items():
        assert by_name[name]["labels"]["priority"] == priority
    for family in FAMILIES:
        assert [name for name in by_name if name.startswith(family)], f"no {family} alert"
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical")
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"]
        runbook = Path(annotations["runbook_url"])
        assert runbook.parent == Path("docs/runbooks") and runbook.suffix == ".md"
        text = (REPO_ROOT / runbook).read_text()
        assert f"`{rule['alert']}`" in text, f"{runbook} does not name {rule['alert']}"
        assert "kubectl modelrollout abort" in text and "kubectl modelrollout status" in text
    assert (REPO_ROOT / "docs/runbooks/focal_loss_negative_expectancy.md").is_file()
    assert (REPO_ROOT / "docs/runbooks/focal_training_crash.md").is_file()


def test_the_prometheus_rule_embeds_the_file_with_absolute_runbook_links(helm: Helm, tmp_path: Path) -> None:
    base = "https://runbooks.example.org/modelrollout/"
    rule = one(helm.render({"monitoring": {"enabled": True, "runbookBaseUrl": base}}), "PrometheusRule",
               "mro-modelrollout")
    expected = copy.deepcopy(yaml.safe_load(RULES.read_text()))
    for alert in alerts(expected):
        alert["annotations"]["runbook_url"] = base + Path(alert["annotations"]["runbook_url"]).name
    assert rule["spec"] == expected
    rendered = tmp_path / "rendered-rules.yaml"
    rendered.write_text(yaml.safe_dump(rule["spec"]))
    check = subprocess.run([promtool(), "check", "rules", str(rendered)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
