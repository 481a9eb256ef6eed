"""Recording rules of the per-trade outcome statistics: one file that promtool checks and
unit-tests, embedded as it is in a PrometheusRule; every statistic over every standard window;
and the product's any-window gate queries read what the rules record and agree with them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from chart_helpers import CHART, SERIES_NAMES, Helm, metric_names, one, promtool_checks, promtool_unit_tests_pass

from modelrollout.gates import render_query
from modelrollout.outcome_queries import COUNTERS, STANDARD_WINDOWS, per_trade_queries, recorded_counter

RULES = CHART / "files" / "recording-rules.yaml"
RULE_TESTS = CHART / "files" / "recording-rules.test.yaml"
STATISTICS = ("trades_closed:growth", "trade_pnl_net:growth", "trade_pnl_net:mean_per_trade",
              "trade_pnl_net:sd_per_trade", "trade_pnl_net:sortino")
# The gate query of each statistic, by the name of the recorded 1h statistic it must equal.
GATE_QUERY_OF = {"trades_closed:growth1h": "count", "trade_pnl_net:mean_per_trade1h": "expectancy",
                 "trade_pnl_net:sd_per_trade1h": "stddev", "trade_pnl_net:sortino1h": "sortino"}


def records() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"]: rule["expr"] for group in groups for rule in group["rules"]}


def test_promtool_checks_the_rules_file() -> None:
    promtool_checks(RULES, len(records()))


def test_promtool_unit_tests_pass() -> None:
    promtool_unit_tests_pass(RULE_TESTS)


def test_every_statistic_over_every_standard_window_and_each_counter_summed() -> None:
    expected = {recorded_counter(c) for c in COUNTERS} | {
        f"symbol_variant:{statistic}{window}" for statistic in STATISTICS for window in STANDARD_WINDOWS}
    assert set(records()) == expected


def test_the_rules_read_only_the_exporters_counters_and_what_they_record() -> None:
    recorded = set(records())
    used = set().union(*(metric_names(expr) for expr in records().values()))
    assert used - recorded == set(COUNTERS)
    assert set(COUNTERS) <= SERIES_NAMES


def test_every_window_rule_is_unit_tested() -> None:
    tested = {case["expr"] for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in group["promql_expr_test"]}
    windowed = {name for name in records() if not name.endswith(":sum")}
    assert {f"symbol_variant:{s}1h" for s in STATISTICS} <= tested
    assert {f"symbol_variant:trades_closed:growth{w}" for w in STANDARD_WINDOWS} <= tested
    assert tested <= windowed


def test_the_prometheus_rule_embeds_the_file_unchanged(helm: Helm) -> None:
    rule = one(helm.render({"monitoring": {"enabled": True}}), "PrometheusRule", "mro-modelrollout-outcomes")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    assert not [d for d in helm.render({"monitoring": {"enabled": False}}) if d["kind"] == "PrometheusRule"]


def test_the_gate_queries_read_the_recorded_counters_and_equal_the_recorded_1h_statistics(tmp_path: Path) -> None:
    """The unit tests' first case again, asking the product's gate queries (window 1h) instead of the
    recorded statistics: the same samples, labels but the name."""
    suite = yaml.safe_load(RULE_TESTS.read_text())
    case: dict[str, Any] = suite["tests"][0]
    symbols = sorted({s["series"].split('symbol="')[1].split('"')[0] for s in case["input_series"]})
    exprs = []
    for test in case["promql_expr_test"]:
        statistic = test["expr"].removeprefix("symbol_variant:")
        if statistic not in GATE_QUERY_OF:
            continue
        for variant in ("candidate", "baseline"):
            query = per_trade_queries(variant)[GATE_QUERY_OF[statistic]]
            assert metric_names(query) <= {recorded_counter(c) for c in COUNTERS}
            samples = [{"labels": sample["labels"].removeprefix(test["expr"]), "value": sample["value"]}
                       for sample in test["exp_samples"] if f'variant="{variant}"' in sample["labels"]]
            exprs.append({"expr": render_query(query, symbols=symbols, window="1h", variant=variant),
                          "eval_time": test["eval_time"], "exp_samples": samples})
    assert len(exprs) == 2 * len(GATE_QUERY_OF)
    (tmp_path / RULES.name).write_text(RULES.read_text())
    gate_suite = {**suite, "tests": [{**case, "name": "gate queries", "promql_expr_test": exprs}]}
    (tmp_path / "gate-queries.test.yaml").write_text(yaml.safe_dump(gate_suite))
    promtool_unit_tests_pass(tmp_path / "gate-queries.test.yaml")
