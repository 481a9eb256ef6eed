"""Chart test helpers: running the pinned helm and picking objects out of what it renders."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devstack.prometheus import promtool

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "modelrollout"
RELEASE, NAMESPACE = "mro", "trading"


@dataclass(frozen=True)
class Helm:
    binary: Path

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.binary), *args], input=stdin, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def template(self, values: dict[str, Any] | None = None, *extra: str,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        """`helm template` of the chart in NAMESPACE, `values` passed as a values file on stdin."""
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, *extra]
        if values is not None:
            args += ["--values", "-"]
        return self.run(*args, stdin=json.dumps(values) if values is not None else None, check=check)

    def render(self, values: dict[str, Any] | None = None, *extra: str) -> list[dict[str, Any]]:
        """The rendered manifests as objects (empty documents dropped)."""
        return [doc for doc in yaml.safe_load_all(self.template(values, *extra).stdout) if doc]


def promtool_checks(rules: Path, count: int) -> None:
    """`promtool check rules` passes and finds `count` rules in the file."""
    result = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {count} rules found" in result.stdout


def promtool_unit_tests_pass(rule_tests: Path) -> None:
    """`promtool test rules` passes, run where the file's rule_files are."""
    result = subprocess.run([promtool(), "test", "rules", rule_tests.name], capture_output=True, text=True,
                            cwd=rule_tests.parent, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc.get("kind") == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [doc for doc in of_kind(docs, kind) if name is None or doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# The metric names the components agreed on (inference server, trainer, journal exporter,
# operator). Dashboards and alert rules may use these and nothing else.
HISTOGRAMS = {"buy_proba", "inference_latency_seconds", "modelrollout_reconcile_duration_seconds"}
CONTRACT = HISTOGRAMS | {
    "focal_loss_active", "feature_psi", "output_sharpness", "model_training_f1_buy", "model_ece_hold",
    "model_training_sharpness", "predict_requests_total",
    "xgboost_training_failed_total",
    "expectancy_net_realized", "expectancy_net_stddev", "n_trades", "sortino_ratio", "live_f1_buy",
    "trades_closed_total", "trade_pnl_net_profit_total", "trade_pnl_net_loss_total", "trade_pnl_net_squared_total",
    "trade_pnl_net_loss_squared_total",
    "journal_exporter_up", "journal_exporter_malformed_rows", "journal_exporter_last_refresh_timestamp_seconds",
    "modelrollout_rollouts", "modelrollout_gate_evaluations_total", "modelrollout_rollback_actions_total",
    "modelrollout_stage_info",
}
SERIES_NAMES = CONTRACT | {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless",
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "group", "inf", "nan",
}
_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"' + r"|'(?:\\.|[^'\\])*'")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GRAFANA_VARIABLES = re.compile(r"\$\{?\w+\}?")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords and labels left out)."""
    text = _GRAFANA_VARIABLES.sub(" ", _RANGES.sub(" ", _MATCHERS.sub(" ", _STRINGS.sub(" ", expr))))
    text = _LABEL_LISTS.sub(" ", text)
    return {m.group(1) for m in _IDENTIFIER.finditer(text) if not m.group(2) and m.group(1) not in _KEYWORDS}
