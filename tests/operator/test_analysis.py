"""One analysis cycle of the example rollout against a real Prometheus fed with known series."""

from __future__ import annotations

import math
import re
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from devstack.process import free_port
from devstack.prometheus import PrometheusServer
from devstack.series import SeriesFeed
from modelrollout.analysis import measure_stage, prometheus_for
from modelrollout.controller import Controller
from modelrollout.engine import MeasurementPlan
from modelrollout.kube import RolloutObject
from modelrollout.metrics import OperatorMetrics
from modelrollout.observation import QueryResult, SweepEvidence, SweepRow
from modelrollout.prometheus_provider import PrometheusProvider, SharedQueries
from modelrollout.spec import ModelRolloutSpec
from modelrollout.status import Measurement

NOW = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
EXAMPLE = Path(__file__).resolve().parent / "plan_as_written.yaml"  # gauges: the fixed-sample kinds
SPEC = ModelRolloutSpec.model_validate(yaml.safe_load(EXAMPLE.read_text())["spec"])
SHADOW, CANARY, FULL = SPEC.stages

# symbol: (expectancy candidate, baseline, stddev, trades candidate, baseline, ECE candidate, baseline)
SERIES = {
    "BTCUSDC": (0.015, 0.012, 0.01, 80, 200, 0.050, 0.045),  # better on every gate
    "ETHUSDC": (0.0105, 0.012, 0.01, 30, 100, 0.070, 0.050),  # inside CI95, too few trades, worse calibration
    "SOLUSDC": (-0.004, 0.012, 0.01, 60, 100, 0.050, 0.050),  # far below baseline, negative: breach
    "XRPUSDC": (math.nan, 0.012, 0.01, 60, 100, 0.050, 0.050),  # NaN candidate expectancy
}  # BNBUSDC exports nothing at all


@pytest.fixture(scope="module")
def feed(prometheus_server: PrometheusServer) -> Iterator[SeriesFeed]:
    feed = SeriesFeed(prometheus_server)
    for symbol, (e_cand, e_base, stddev, n_cand, n_base, ece_cand, ece_base) in SERIES.items():
        for variant, expectancy, trades, ece in (("candidate", e_cand, n_cand, ece_cand),
                                                 ("baseline", e_base, n_base, ece_base)):
            feed.set("expectancy_net_realized", expectancy, symbol=symbol, variant=variant)
            feed.set("expectancy_net_stddev", stddev, symbol=symbol, variant=variant)
            feed.set("n_trades", trades, symbol=symbol, variant=variant)
            feed.set("model_ece_hold", ece, symbol=symbol, variant=variant)
    feed.scrape()
    for metric in ("expectancy_net_realized", "expectancy_net_stddev", "n_trades", "model_ece_hold"):
        feed.wait_for(f"count({metric})", lambda r: r.values.get("*") == 2 * len(SERIES))
    yield feed
    feed.close()


class CountingProvider(PrometheusProvider):
    """The real adapter, counting the queries it is asked."""

    def __init__(self, url: str, timeout_s: float = 5) -> None:
        super().__init__(url, timeout_s)
        self.asked: list[str] = []

    def query(self, promql: str) -> QueryResult:
        self.asked.append(promql)
        return super().query(promql)


def no_sweep(experiment: str) -> SweepEvidence:
    raise AssertionError(f"a stage without a sweep gate read sweep {experiment!r}")


def table(measurements: list[Measurement]) -> dict[tuple[str, str], str]:
    return {(m.name, m.symbol): m.verdict for m in measurements}


def test_the_canary_passes_on_good_series_with_each_query_run_once(feed: SeriesFeed) -> None:
    provider = CountingProvider(feed.prometheus.url)
    gates, triggers = measure_stage(SPEC, CANARY, provider, no_sweep, NOW)
    assert table(gates) == {("expectancy-vs-baseline", "BTCUSDC"): "Pass", ("trades", "BTCUSDC"): "Pass",
                            ("no-drift-alerts", "BTCUSDC"): "Pass", ("calibration", "BTCUSDC"): "Pass"}
    assert table(triggers) == {("expectancy-negative", "BTCUSDC"): "Pass"}
    expectancy = gates[0]
    assert (expectancy.value, expectancy.baseline) == (pytest.approx(0.015), pytest.approx(0.012))
    assert all(m.measured_at == NOW for m in gates + triggers)
    # 6 expectancy roles (the candidate count shares the trades gate's query) + trades + alerts + 2 calibration
    # + the trigger and its sample count: each distinct query once, none per symbol
    assert len(provider.asked) == len(set(provider.asked)) == 11
    assert all('symbol=~"BTCUSDC"' in q for q in provider.asked if "ALERTS" not in q)


def test_every_symbol_of_the_full_stage_gets_its_own_verdict(feed: SeriesFeed) -> None:
    gates, triggers = measure_stage(SPEC, FULL, CountingProvider(feed.prometheus.url), no_sweep, NOW)
    verdicts = table(gates)
    assert {s: verdicts[("expectancy-vs-baseline", s)] for s in SPEC.symbols} == {
        "BTCUSDC": "Pass", "ETHUSDC": "Pass", "SOLUSDC": "Fail", "BNBUSDC": "Inconclusive",
        "XRPUSDC": "Inconclusive"}
    assert {s: verdicts[("trades", s)] for s in SPEC.symbols} == {
        "BTCUSDC": "Pass", "ETHUSDC": "Inconclusive", "SOLUSDC": "Pass", "BNBUSDC": "Inconclusive",
        "XRPUSDC": "Pass"}
    assert {s: verdicts[("calibration", s)] for s in SPEC.symbols} == {
        "BTCUSDC": "Pass", "ETHUSDC": "Fail", "SOLUSDC": "Pass", "BNBUSDC": "Inconclusive", "XRPUSDC": "Pass"}
    assert {verdicts[("no-drift-alerts", s)] for s in SPEC.symbols} == {"Pass"}
    assert {verdicts[("sortino-vs-baseline", s)] for s in SPEC.symbols} == {"Inconclusive"}  # never exported
    assert table(triggers) == {("expectancy-negative", "BTCUSDC"): "Pass", ("expectancy-negative", "ETHUSDC"): "Pass",
                               ("expectancy-negative", "SOLUSDC"): "Fail",
                               ("expectancy-negative", "BNBUSDC"): "Inconclusive",
                               ("expectancy-negative", "XRPUSDC"): "Inconclusive"}
    eth = next(m for m in gates if (m.name, m.symbol) == ("expectancy-vs-baseline", "ETHUSDC"))
    lower = float(eth.threshold.removeprefix(">= baseline or within CI95 [").split(",")[0])
    assert lower < 0.01004  # wider than the baseline's own CI: the candidate's uncertainty counts too


def test_a_query_shared_by_a_gate_and_a_trigger_runs_once(feed: SeriesFeed) -> None:
    trigger = CANARY.rollback_triggers[0].model_copy(update={"window": "7d"})  # = the gate's candidate query
    stage = CANARY.model_copy(update={"rollback_triggers": [trigger]})
    provider = CountingProvider(feed.prometheus.url)
    gates, triggers = measure_stage(SPEC, stage, provider, no_sweep, NOW)
    assert len(provider.asked) == len(set(provider.asked)) == 9
    assert triggers[0].value == gates[0].value == pytest.approx(0.015)


def test_bad_promql_and_a_bad_template_are_errors_of_their_own_gate_only(feed: SeriesFeed) -> None:
    broken = CANARY.gates[1].model_copy(update={"sample_size": CANARY.gates[1].sample_size.model_copy(
        update={"query": 'max_over_time(n_trades{symbol=~"{symbols}"}[{window}]'})})
    unknown = CANARY.gates[1].model_copy(update={"name": "strategy", "sample_size": CANARY.gates[1].sample_size
                                                 .model_copy(update={"query": 'n{strategy="{strategy}"}'})})
    stage = CANARY.model_copy(update={"gates": [CANARY.gates[0], broken, unknown]})
    gates, _ = measure_stage(SPEC, stage, CountingProvider(feed.prometheus.url), no_sweep, NOW)
    assert [(m.name, m.verdict) for m in gates] == [
        ("expectancy-vs-baseline", "Pass"), ("trades", "Error"), ("strategy", "Error")]
    assert "parse error" in gates[1].message
    assert "invalid query template: unknown placeholder(s) {strategy}" in gates[2].message


def test_an_unreachable_prometheus_makes_every_gate_and_trigger_an_error_within_the_timeout() -> None:
    provider = CountingProvider(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    started = time.monotonic()
    gates, triggers = measure_stage(SPEC, FULL, provider, no_sweep, NOW)
    assert time.monotonic() - started < 3
    assert {m.verdict for m in gates + triggers} == {"Error"}
    assert len(gates) == 5 * len(FULL.gates) and len(triggers) == 5
    assert all(f"Prometheus at {provider.url}: ConnectionError" in m.message for m in gates + triggers)


def test_a_firing_alert_fails_its_symbol_and_an_alert_without_symbol_fails_all(
        feed: SeriesFeed, tmp_path: Path) -> None:
    btc_rule = {"alert": "data_drift_psi_warning", "expr": "vector(1)", "labels": {"symbol": "BTCUSDC"}}
    global_rule = {"alert": "concept_drift_warning", "expr": "vector(1)"}
    alerts = 'count by (symbol) (ALERTS{alertstate="firing"})'
    symbol_rules, all_rules = tmp_path / "symbol.rules.yaml", tmp_path / "all.rules.yaml"
    symbol_rules.write_text(yaml.safe_dump({"groups": [{"name": "t", "rules": [btc_rule]}]}))
    all_rules.write_text(yaml.safe_dump({"groups": [{"name": "t", "rules": [btc_rule, global_rule]}]}))
    try:
        feed.scrape(rule_files=[symbol_rules])
        feed.wait_for(alerts, lambda r: r.values == {"BTCUSDC": 1.0})
        gates, _ = measure_stage(SPEC, FULL, CountingProvider(feed.prometheus.url), no_sweep, NOW)
        alert_gate = {m.symbol: m for m in gates if m.name == "no-drift-alerts"}
        assert {s: m.verdict for s, m in alert_gate.items()} == {
            "BTCUSDC": "Fail", "ETHUSDC": "Pass", "SOLUSDC": "Pass", "BNBUSDC": "Pass", "XRPUSDC": "Pass"}
        assert "data_drift_psi_warning" in alert_gate["BTCUSDC"].message

        feed.scrape(rule_files=[all_rules])
        feed.wait_for(alerts, lambda r: r.values == {"BTCUSDC": 1.0, "*": 1.0})
        gates, _ = measure_stage(SPEC, FULL, CountingProvider(feed.prometheus.url), no_sweep, NOW)
        assert {m.verdict for m in gates if m.name == "no-drift-alerts"} == {"Fail"}
        assert next(m.value for m in gates if (m.name, m.symbol) == ("no-drift-alerts", "BTCUSDC")) == 2.0
    finally:
        feed.scrape()
        feed.wait_for(alerts, lambda r: r.values == {})  # other tests must not see these alerts


def test_the_shadow_stage_judges_the_sweep_without_prometheus() -> None:
    asked: list[str] = []

    def evidence(experiment: str) -> SweepEvidence:
        asked.append(experiment)
        rows = [SweepRow(f"{symbol}-{fold}-{variant}", symbol, str(fold), variant,
                         {"f1_buy": 0.40 + 0.01 * (fold % 5) + (0.05 + 0.002 * fold if variant == "candidate" else 0),
                          "ece_hold": 0.05})
                for symbol in SPEC.symbols for fold in range(13) for variant in ("baseline", "candidate")]
        return SweepEvidence(experiment=experiment, rows=tuple(rows))

    provider = CountingProvider(f"http://127.0.0.1:{free_port()}")  # unreachable: must not matter
    gates, triggers = measure_stage(SPEC, SHADOW, provider, evidence, NOW)
    assert asked == ["focal-loss-sweep"] and provider.asked == [] and triggers == []
    assert {m.symbol for m in gates} == {"*", *SPEC.symbols}
    assert {m.verdict for m in gates} == {"Pass"}


def test_prometheus_for_uses_the_specs_url_and_timeout() -> None:
    provider = prometheus_for(SPEC, "token")
    assert (provider.url, provider.timeout_s) == ("http://prometheus-operated.monitoring.svc:9090", 10.0)


def queries_served(prometheus_url: str) -> float:
    """Prometheus' own count of the instant queries it has answered."""
    with urllib.request.urlopen(f"{prometheus_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(value) for value in re.findall(
        r'^prometheus_http_requests_total\{[^}]*handler="/api/v1/query"[^}]*\} (\S+)$', text, re.M))


def test_two_rollouts_asking_the_same_queries_at_once_send_each_query_once(feed: SeriesFeed) -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    # A long sharing time so a slow machine cannot split the two cycles; the 1 s default is unit-tested.
    controller = Controller(kube=None, emit=lambda *_: None, metrics=metrics,  # type: ignore[arg-type]
                            shared_queries=SharedQueries(shared_for_s=60, counted=metrics.count_query))
    spec = SPEC.model_copy(update={"prometheus": SPEC.prometheus.model_copy(update={"url": feed.prometheus.url})})
    plan = MeasurementPlan(gates=CANARY, triggers=CANARY, versions=False)
    served_before = queries_served(feed.prometheus.url)

    first, second = (controller.observe(RolloutObject("focal-loss", namespace, f"uid-{namespace}", 1, "1", {}, {}, {},
                                                      False), spec, plan, NOW)
                     for namespace in ("desk-a", "desk-b"))

    time.sleep(0.5)  # Prometheus counts a request once it has answered it
    assert queries_served(feed.prometheus.url) - served_before == 11  # the canary's distinct queries, once
    sent = metrics.registry.get_sample_value("modelrollout_prometheus_queries_total")
    shared = metrics.registry.get_sample_value("modelrollout_prometheus_queries_shared_total")
    assert (sent, shared) == (11, 11)
    assert first.gates == second.gates and first.triggers == second.triggers
    assert {m.verdict for m in first.gates} == {"Pass"}
