"""Grafana dashboards: valid JSON models whose every query parses (promtool) and selects only
metric names from the components' contract; each dashboard shows what the plan asks of it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import CHART, SERIES_NAMES, metric_names

from devstack.prometheus import promtool

DASHBOARDS = sorted((CHART / "files" / "dashboards").glob("*.json"))
# What each dashboard must show, as metrics its queries must use.
REQUIRED = {
    "ModelRollout / Pipeline Health": {"xgboost_training_failed_total", "inference_latency_seconds_bucket"},
    "ModelRollout / MLOps Overview": {"focal_loss_active", "expectancy_net_realized", "modelrollout_stage_info",
                                      "modelrollout_rollouts"},
    "ModelRollout / Testing & Backtest": {"buy_proba_bucket"},
}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in panels(dashboard) for t in p["targets"]]
    variables = [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs + [re.sub(r"^label_values\((\w+),.*\)$", r"\1", q) for q in variables]


@pytest.fixture(scope="module", params=DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    return json.loads(Path(request.param).read_text())


def test_the_three_dashboards_exist_with_unique_uids() -> None:
    loaded = [json.loads(p.read_text()) for p in DASHBOARDS]
    assert sorted(d["title"] for d in loaded) == sorted(REQUIRED)
    assert len({d["uid"] for d in loaded}) == len(loaded)


def test_every_panel_queries_prometheus_through_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    assert any(v["name"] == "datasource" and v["query"] == "prometheus" for v in dashboard["templating"]["list"])
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert panel["title"] and panel["description"] and set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


def test_queries_use_only_contract_metric_names(dashboard: dict[str, Any]) -> None:
    used = set().union(*(metric_names(q) for q in queries(dashboard)))
    assert used - SERIES_NAMES == set(), "metrics outside the contract"
    assert REQUIRED[dashboard["title"]] <= used


def test_alert_rules_use_only_contract_metric_names() -> None:
    rules = yaml.safe_load((CHART / "files" / "alert-rules.yaml").read_text())
    used = set().union(*(metric_names(r["expr"]) for g in rules["groups"] for r in g["rules"]))
    assert used - SERIES_NAMES == set()


def test_every_query_is_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """promtool parses each query as a recording rule, Grafana's variables given sample values."""
    substitute = {"$__rate_interval": "5m", "$symbol": "BTCUSDC", "${datasource}": "prometheus"}
    exprs = [t["expr"] for p in panels(dashboard) for t in p["targets"]]
    for variable, value in substitute.items():
        exprs = [e.replace(variable, value) for e in exprs]
    assert not [e for e in exprs if "$" in e], "an unknown Grafana variable"
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query:{i}", "expr": e}
                                                         for i, e in enumerate(exprs)]}]}
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
