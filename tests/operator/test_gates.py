"""Pure tests of query rendering and verdicts: every gate kind, every outcome, every edge."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from modelrollout.gates import (
    evaluate_gate,
    evaluate_trigger,
    gate_queries,
    render_query,
    stage_window,
    trigger_queries,
)
from modelrollout.observation import QueryResult
from modelrollout.spec import SYMBOL_PATTERN, Gate, ModelRolloutSpec, NoFiringAlertGate, RollbackTrigger

NOW = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
PLAN = Path(__file__).resolve().parent / "plan_as_written.yaml"  # the fixed-sample kinds
SPEC = ModelRolloutSpec.model_validate(yaml.safe_load(PLAN.read_text())["spec"])
CANARY = next(s for s in SPEC.stages if s.type == "canary")
EXPECTANCY, TRADES, ALERTS, CALIBRATION = CANARY.gates
TRIGGER = CANARY.rollback_triggers[0]
TWO = ["BTCUSDC", "ETHUSDC"]


def gate(kind: str, **config: object) -> Gate:
    return Gate.model_validate({"name": "g", "kind": kind, "window": "5m", kind: config})


def ok(query: str = "q", **values: float) -> QueryResult:
    return QueryResult(query=query, values=dict(values))


def verdicts(measurements: list) -> dict[str, str]:
    return {m.symbol: m.verdict for m in measurements}


# --- render_query ------------------------------------------------------------------------

def test_render_fills_the_three_placeholders_and_keeps_promql_braces() -> None:
    query = render_query('avg_over_time(x{symbol=~"{symbols}",variant="{variant}"}[{window}])',
                         symbols=TWO, window="7d", variant="candidate")
    assert query == 'avg_over_time(x{symbol=~"BTCUSDC|ETHUSDC",variant="candidate"}[7d])'


def test_render_without_variant_placeholder_needs_no_variant() -> None:
    assert render_query('x{symbol=~"{symbols}"}', symbols=["BTCUSDC"], window="5m") == 'x{symbol=~"BTCUSDC"}'


@pytest.mark.parametrize("symbol", ['BTC"}', "btcusdc", "BTC|.*", "BTCUSDC\n", "", "A" * 21, 'X"} or vector(1) #'])
def test_render_refuses_a_symbol_that_could_inject_promql(symbol: str) -> None:
    with pytest.raises(ValueError, match="invalid symbol"):
        render_query('x{symbol=~"{symbols}"}', symbols=["BTCUSDC", symbol], window="5m")


@pytest.mark.parametrize("window", ["5m]", "5m] or vector(1)", "", "5", "5m\n", "-5m", "5 m"])
def test_render_refuses_a_window_that_could_inject_promql(window: str) -> None:
    with pytest.raises(ValueError, match="invalid window"):
        render_query("x[{window}]", symbols=["BTCUSDC"], window=window)


def test_render_refuses_unknown_placeholders_by_name() -> None:
    with pytest.raises(ValueError, match=r"unknown placeholder\(s\) \{strategy\}, \{symbol\}"):
        render_query('x{symbol="{symbol}",s="{strategy}"}', symbols=["BTCUSDC"], window="5m")


def test_render_refuses_no_symbols() -> None:
    with pytest.raises(ValueError, match="no symbols"):
        render_query('x{symbol=~"{symbols}"}', symbols=[], window="5m")


@pytest.mark.parametrize("variant", [None, "champion", 'candidate"}'])
def test_render_refuses_a_variant_placeholder_without_a_valid_variant(variant: str | None) -> None:
    with pytest.raises(ValueError, match="variant"):
        render_query('x{variant="{variant}"}', symbols=["BTCUSDC"], window="5m", variant=variant)


# --- gate_queries ------------------------------------------------------------------------

def test_comparison_queries_one_per_role_covering_all_symbols() -> None:
    queries = gate_queries(EXPECTANCY, TWO)
    assert set(queries) == {"candidate", "baseline", "baseline_stddev", "baseline_count", "candidate_stddev",
                            "candidate_count"}
    assert queries["candidate"] == ('avg_over_time(expectancy_net_realized{symbol=~"BTCUSDC|ETHUSDC",'
                                    'variant="candidate"}[7d])')
    assert 'variant="baseline"' in queries["baseline"]
    assert queries["baseline_count"].startswith("max_over_time(n_trades{")
    assert all("BTCUSDC|ETHUSDC" in q for q in queries.values())


def test_gate_windows_are_cut_to_the_time_the_stage_has_run() -> None:
    assert stage_window("7d", None) == "7d"
    assert stage_window("7d", timedelta(hours=3, seconds=0.6)) == "10800s"
    assert stage_window("7d", timedelta(days=9)) == "7d"
    assert stage_window("30s", timedelta(0)) == "1s"  # never an empty range
    queries = gate_queries(EXPECTANCY, TWO, stage_ran=timedelta(hours=1))
    assert all("[3600s]" in q and "[7d]" not in q for q in queries.values())  # both variants, same interval
    assert "[7d]" in gate_queries(TRADES, TWO, stage_ran=timedelta(days=8))["value"]


def test_comparison_without_spread_queries_has_two_roles() -> None:
    assert set(gate_queries(CALIBRATION, TWO)) == {"candidate", "baseline"}


def test_comparison_refuses_a_query_without_variant() -> None:
    with pytest.raises(ValueError, match="must contain \\{variant\\}"):
        gate_queries(gate("comparison", query='x{symbol=~"{symbols}"}'), TWO)


def test_comparison_refuses_stddev_without_count() -> None:
    with pytest.raises(ValueError, match="go together"):
        gate_queries(gate("comparison", query='x{variant="{variant}"}', stddevQuery='s{variant="{variant}"}'), TWO)


def test_threshold_and_sample_size_have_one_value_query() -> None:
    assert gate_queries(TRADES, TWO) == {
        "value": 'max_over_time(n_trades{symbol=~"BTCUSDC|ETHUSDC",variant="candidate"}[7d])'}
    assert gate_queries(gate("threshold", query="up", op=">=", value=1), TWO) == {"value": "up"}


def test_alert_query_counts_firing_alerts_by_symbol() -> None:
    assert gate_queries(gate("noFiringAlert", alertNames=["A", "B_c"]), TWO) == {
        "alerts": 'count by (symbol) (ALERTS{alertstate="firing",alertname=~"A|B_c"})'}


def test_alert_names_are_validated_even_past_the_schema() -> None:
    unchecked = gate("noFiringAlert", alertNames=["A"]).model_copy(
        update={"no_firing_alert": NoFiringAlertGate.model_construct(alert_names=['A"}|x'])})
    with pytest.raises(ValueError, match="invalid alert name"):
        gate_queries(unchecked, TWO)


def test_sweep_gates_have_no_prometheus_queries_and_no_prometheus_verdict() -> None:
    sweep = SPEC.stages[0].gates[0]
    assert gate_queries(sweep, TWO) == {}
    with pytest.raises(ValueError, match="sweep_stats"):
        evaluate_gate(sweep, TWO, {}, NOW)


# --- evaluate_gate: threshold and sampleSize ---------------------------------------------

@pytest.mark.parametrize(("op", "value", "expected"), [
    (">=", 1.0, "Pass"), (">=", 0.99, "Fail"), (">", 1.0, "Fail"), (">", 1.01, "Pass"),
    ("<=", 1.0, "Pass"), ("<=", 1.01, "Fail"), ("<", 1.0, "Fail"), ("<", 0.99, "Pass"),
])
def test_threshold_applies_its_operator(op: str, value: float, expected: str) -> None:
    [m] = evaluate_gate(gate("threshold", query="q", op=op, value=1.0), ["BTCUSDC"],
                        {"value": ok(BTCUSDC=value)}, NOW)
    assert (m.verdict, m.value, m.threshold, m.measured_at) == (expected, value, f"{op} 1", NOW)
    assert (m.name, m.kind, m.symbol) == ("g", "threshold", "BTCUSDC")


def test_threshold_one_measurement_per_symbol() -> None:
    results = {"value": ok(BTCUSDC=2.0, ETHUSDC=0.0, SOLUSDC=5.0)}
    measurements = evaluate_gate(gate("threshold", query="q", op=">", value=1), TWO, results, NOW)
    assert verdicts(measurements) == {"BTCUSDC": "Pass", "ETHUSDC": "Fail"}


def test_a_series_without_symbol_applies_to_every_symbol_unless_the_symbol_has_its_own() -> None:
    results = {"value": ok(**{"*": 5.0, "ETHUSDC": 0.0})}
    measurements = evaluate_gate(gate("threshold", query="q", op=">", value=1), TWO, results, NOW)
    assert verdicts(measurements) == {"BTCUSDC": "Pass", "ETHUSDC": "Fail"}


@pytest.mark.parametrize("values", [{}, {"BTCUSDC": math.nan}, {"BTCUSDC": math.inf}, {"BTCUSDC": -math.inf},
                                    {"ETHUSDC": 1.0}])
def test_no_data_or_non_finite_is_inconclusive(values: dict[str, float]) -> None:
    [m] = evaluate_gate(gate("threshold", query="q", op=">=", value=0), ["BTCUSDC"], {"value": ok(**values)}, NOW)
    assert (m.verdict, m.value, m.message) == ("Inconclusive", None, "no data for BTCUSDC")


def test_a_query_error_is_an_error_for_every_symbol() -> None:
    results = {"value": QueryResult(query="q", values={"BTCUSDC": 1.0}, error="Prometheus at x: timeout")}
    measurements = evaluate_gate(gate("threshold", query="q", op=">=", value=0), TWO, results, NOW)
    assert verdicts(measurements) == {"BTCUSDC": "Error", "ETHUSDC": "Error"}
    assert all("value: Prometheus at x: timeout" in m.message for m in measurements)


@pytest.mark.parametrize(("samples", "expected"), [(50.0, "Pass"), (1e6, "Pass"), (49.0, "Inconclusive"),
                                                   (0.0, "Inconclusive")])
def test_sample_size_below_min_is_inconclusive_never_failed(samples: float, expected: str) -> None:
    [m] = evaluate_gate(TRADES, ["BTCUSDC"], {"value": ok(BTCUSDC=samples)}, NOW)
    assert (m.verdict, m.value, m.threshold) == (expected, samples, ">= 50")
    assert m.verdict != "Fail"


# --- evaluate_gate: comparison -----------------------------------------------------------

def comparison_results(cand: float | None, base: float | None, sd: float | None = None,
                       n: float | None = None) -> dict[str, QueryResult]:
    def one(value: float | None) -> QueryResult:
        return ok(**({} if value is None else {"BTCUSDC": value}))
    return {"candidate": one(cand), "baseline": one(base), "baseline_stddev": one(sd), "baseline_count": one(n)}


def test_comparison_higher_is_better_passes_at_or_above_baseline() -> None:
    [m] = evaluate_gate(EXPECTANCY, ["BTCUSDC"], comparison_results(0.012, 0.012, 0.01, 100), NOW)
    assert (m.verdict, m.value, m.baseline) == ("Pass", 0.012, 0.012)
    assert m.threshold == ">= baseline or within CI95"


def test_comparison_takes_values_equal_but_for_float_rounding_as_equal() -> None:
    no_spread = EXPECTANCY.model_copy(update={"comparison": EXPECTANCY.comparison.model_copy(
        update={"stddev_query": None, "count_query": None})})
    equal = 1.7219231
    rounded = equal * (1 - 1e-13)  # the same trades, summed from different running totals
    [m] = evaluate_gate(no_spread, ["BTCUSDC"], {"candidate": ok(BTCUSDC=rounded), "baseline": ok(BTCUSDC=equal)}, NOW)
    assert m.verdict == "Pass"
    [m] = evaluate_gate(no_spread, ["BTCUSDC"], {"candidate": ok(BTCUSDC=equal * (1 - 1e-6)),
                                                 "baseline": ok(BTCUSDC=equal)}, NOW)
    assert m.verdict == "Fail"


def test_comparison_passes_within_the_baselines_ci() -> None:
    # half width = 1.959964 * 0.01 / sqrt(100) = 0.00196
    [m] = evaluate_gate(EXPECTANCY, ["BTCUSDC"], comparison_results(0.0101, 0.012, 0.01, 100), NOW)
    assert m.verdict == "Pass"
    assert m.threshold == ">= baseline or within CI95 [0.01004, 0.01396]"


def test_comparison_fails_below_the_baselines_ci() -> None:
    [m] = evaluate_gate(EXPECTANCY, ["BTCUSDC"], comparison_results(0.0100, 0.012, 0.01, 100), NOW)
    assert (m.verdict, m.value, m.baseline) == ("Fail", 0.01, 0.012)
    assert "outside baseline CI95 [0.01004, 0.01396]" in m.message


def test_comparison_confidence_widens_the_interval() -> None:
    wide = EXPECTANCY.model_copy(update={"comparison": EXPECTANCY.comparison.model_copy(update={"confidence": 0.99})})
    # z(0.99) = 2.5758: half width 0.002576 admits 0.0100 that CI95 refused
    [m] = evaluate_gate(wide, ["BTCUSDC"], comparison_results(0.0100, 0.012, 0.01, 100), NOW)
    assert m.verdict == "Pass" and "CI99 [" in m.threshold


@pytest.mark.parametrize(("sd", "n"), [(None, 100), (0.01, None), (math.nan, 100), (0.01, 0), (-0.01, 100)])
def test_comparison_below_baseline_without_a_usable_spread_is_inconclusive(sd: float | None, n: float | None) -> None:
    [m] = evaluate_gate(EXPECTANCY, ["BTCUSDC"], comparison_results(0.0, 0.012, sd, n), NOW)
    assert m.verdict == "Inconclusive"


def test_comparison_at_or_above_baseline_passes_even_without_a_spread() -> None:
    """The CI only widens acceptance; a candidate at least as good as the baseline needs none."""
    [m] = evaluate_gate(EXPECTANCY, ["BTCUSDC"], comparison_results(0.02, 0.012, None, None), NOW)
    assert m.verdict == "Pass"


@pytest.mark.parametrize(("cand", "base", "message"), [(None, 0.01, "candidate"), (0.01, None, "baseline"),
                                                      (math.nan, 0.01, "candidate"), (0.01, math.inf, "baseline")])
def test_comparison_missing_side_is_inconclusive(cand: float | None, base: float | None, message: str) -> None:
    [m] = evaluate_gate(EXPECTANCY, ["BTCUSDC"], comparison_results(cand, base, 0.01, 100), NOW)
    assert (m.verdict, m.message) == ("Inconclusive", f"no data for BTCUSDC ({message})")


def test_comparison_error_in_any_role_is_an_error() -> None:
    results = {**comparison_results(0.02, 0.01, 0.01, 100),
               "baseline_count": QueryResult(query="q", error="boom")}
    [m] = evaluate_gate(EXPECTANCY, ["BTCUSDC"], results, NOW)
    assert m.verdict == "Error" and "baseline_count: boom" in m.message


@pytest.mark.parametrize(("cand", "expected"), [(0.05, "Pass"), (0.06, "Pass"), (0.0601, "Fail"), (0.01, "Pass")])
def test_comparison_lower_is_better_with_tolerance(cand: float, expected: str) -> None:
    [m] = evaluate_gate(CALIBRATION, ["BTCUSDC"], {"candidate": ok(BTCUSDC=cand), "baseline": ok(BTCUSDC=0.05)}, NOW)
    assert (m.verdict, m.threshold) == (expected, "<= baseline + 0.01")


def test_comparison_higher_is_better_with_tolerance() -> None:
    tolerant = gate("comparison", query='x{variant="{variant}"}', tolerance=0.5)
    results = {"candidate": ok(BTCUSDC=1.5, ETHUSDC=1.49), "baseline": ok(BTCUSDC=2.0, ETHUSDC=2.0)}
    measurements = evaluate_gate(tolerant, TWO, results, NOW)
    assert verdicts(measurements) == {"BTCUSDC": "Pass", "ETHUSDC": "Fail"}
    assert measurements[0].threshold == ">= baseline - 0.5"


def test_comparison_lower_is_better_mirrors_the_ci() -> None:
    lower = gate("comparison", query='x{variant="{variant}"}', stddevQuery='s{variant="{variant}"}',
                 countQuery='n{variant="{variant}"}', direction="lowerIsBetter")
    # baseline 1.0, half width 1.96 * 1 / sqrt(4) = 0.98
    passing = evaluate_gate(lower, ["BTCUSDC"], comparison_results(1.97, 1.0, 1.0, 4), NOW)
    failing = evaluate_gate(lower, ["BTCUSDC"], comparison_results(1.99, 1.0, 1.0, 4), NOW)
    assert (passing[0].verdict, failing[0].verdict) == ("Pass", "Fail")
    assert passing[0].threshold.startswith("<= baseline or within CI95 [0.0200")


# --- evaluate_gate: noFiringAlert --------------------------------------------------------

def test_no_alert_passes_every_symbol() -> None:
    measurements = evaluate_gate(ALERTS, TWO, {"alerts": ok()}, NOW)
    assert verdicts(measurements) == {"BTCUSDC": "Pass", "ETHUSDC": "Pass"}
    assert measurements[0].threshold == "no firing alert"


def test_an_alert_for_one_symbol_fails_only_that_symbol_and_names_the_alerts() -> None:
    measurements = evaluate_gate(ALERTS, TWO, {"alerts": ok(ETHUSDC=2.0, SOLUSDC=1.0)}, NOW)
    assert verdicts(measurements) == {"BTCUSDC": "Pass", "ETHUSDC": "Fail"}
    assert measurements[1].value == 2.0
    assert "data_drift_psi_warning" in measurements[1].message and "ETHUSDC" in measurements[1].message


def test_an_alert_without_symbol_fails_every_symbol() -> None:
    measurements = evaluate_gate(ALERTS, TWO, {"alerts": ok(**{"*": 1.0})}, NOW)
    assert verdicts(measurements) == {"BTCUSDC": "Fail", "ETHUSDC": "Fail"}


def test_an_alert_query_error_is_an_error_never_a_pass() -> None:
    measurements = evaluate_gate(ALERTS, TWO, {"alerts": QueryResult(query="q", error="connection refused")}, NOW)
    assert verdicts(measurements) == {"BTCUSDC": "Error", "ETHUSDC": "Error"}


def test_a_nan_alert_count_is_inconclusive() -> None:
    [m] = evaluate_gate(ALERTS, ["BTCUSDC"], {"alerts": ok(BTCUSDC=math.nan)}, NOW)
    assert m.verdict == "Inconclusive"


# --- triggers ----------------------------------------------------------------------------

def judge(trigger: RollbackTrigger, symbols: list[str], value: QueryResult, count: QueryResult | None = None,
          stage_ran: timedelta | None = None) -> list:
    return evaluate_trigger(trigger, symbols, {"value": value} | ({"count": count} if count else {}), NOW, stage_ran)


def test_trigger_query_uses_the_trigger_window() -> None:
    assert trigger_queries(TRIGGER, ["BTCUSDC"])["value"] == (
        'avg_over_time(expectancy_net_realized{symbol=~"BTCUSDC",variant="candidate"}[48h])')


def test_trigger_window_is_cut_to_the_stage_so_a_retry_does_not_reread_the_last_attempt() -> None:
    queries = trigger_queries(TRIGGER, ["BTCUSDC"], stage_ran=timedelta(hours=2))
    assert queries["value"].endswith("[7200s])") and queries["count"].endswith("[7200s])")
    assert trigger_queries(TRIGGER, ["BTCUSDC"], stage_ran=timedelta(days=3))["value"].endswith("[48h])")


def test_trigger_fail_means_breached() -> None:
    measurements = judge(TRIGGER, ["BTCUSDC", "ETHUSDC", "SOLUSDC"], ok(BTCUSDC=-0.001, ETHUSDC=0.0, SOLUSDC=math.nan),
                         ok(BTCUSDC=50, ETHUSDC=50, SOLUSDC=50))
    assert verdicts(measurements) == {"BTCUSDC": "Fail", "ETHUSDC": "Pass", "SOLUSDC": "Inconclusive"}
    assert measurements[0].threshold == "breach if < 0 over 48h with >= 20 samples"
    assert measurements[0].kind == "rollbackTrigger" and measurements[0].value == -0.001
    assert "breached" in measurements[0].message


def test_trigger_does_not_judge_a_symbol_before_its_minimum_samples() -> None:
    assert trigger_queries(TRIGGER, ["BTCUSDC"])["count"] == ('max_over_time(n_trades{symbol=~"BTCUSDC",'
                                                              'variant="candidate"}[48h])')
    measurements = judge(TRIGGER, ["BTCUSDC", "ETHUSDC", "SOLUSDC"], ok(BTCUSDC=-5.0, ETHUSDC=-5.0, SOLUSDC=-5.0),
                         ok(BTCUSDC=19, ETHUSDC=20))
    assert verdicts(measurements) == {"BTCUSDC": "Inconclusive", "ETHUSDC": "Fail", "SOLUSDC": "Inconclusive"}
    assert "not judged before 20" in measurements[0].message
    [m] = judge(TRIGGER, ["BTCUSDC"], ok(BTCUSDC=-5.0), QueryResult(query="c", error="timeout"))
    assert m.verdict == "Error"


def test_trigger_does_not_judge_before_its_initial_delay() -> None:
    delayed = TRIGGER.model_copy(update={"initial_delay": "6h"})
    values, counts = ok(BTCUSDC=-5.0), ok(BTCUSDC=50)
    [early] = judge(delayed, ["BTCUSDC"], values, counts, stage_ran=timedelta(hours=5))
    assert early.verdict == "Inconclusive" and "not judged before 6h" in early.message and early.value == -5.0
    assert early.threshold.endswith("after 6h")
    [late] = judge(delayed, ["BTCUSDC"], values, counts, stage_ran=timedelta(hours=6))
    assert late.verdict == "Fail"
    [unknown] = judge(delayed, ["BTCUSDC"], values, counts)  # no stage clock: judged
    assert unknown.verdict == "Fail"


def test_trigger_error_is_error() -> None:
    [m] = judge(TRIGGER, ["BTCUSDC"], QueryResult(query="q", error="timeout"))
    assert (m.verdict, m.message) == ("Error", "timeout")


def test_trigger_refuses_injection_through_its_window() -> None:
    unchecked = RollbackTrigger.model_construct(name="t", query="x[{window}]", op="<", value=0.0, window="5m]")
    with pytest.raises(ValueError, match="invalid window"):
        trigger_queries(unchecked, ["BTCUSDC"])


# --- properties --------------------------------------------------------------------------

MISSING = st.one_of(st.none(), st.just(math.nan), st.just(math.inf), st.just(-math.inf))
NUMBER = st.floats(allow_nan=False, allow_infinity=False, width=32)


def as_result(value: float | None) -> QueryResult:
    return ok(**({} if value is None else {"BTCUSDC": value}))


@given(missing=MISSING, op=st.sampled_from([">=", ">", "<=", "<"]), bound=NUMBER)
def test_property_missing_value_never_passes_a_threshold_or_sample_size(missing: float | None, op: str,
                                                                       bound: float) -> None:
    threshold = gate("threshold", query="q", op=op, value=bound)
    for g in (threshold, TRADES):
        [m] = evaluate_gate(g, ["BTCUSDC"], {"value": as_result(missing)}, NOW)
        assert m.verdict == "Inconclusive"


@given(missing=MISSING, other=NUMBER, missing_side=st.sampled_from(["candidate", "baseline"]),
       sd=st.one_of(MISSING, NUMBER), n=st.one_of(MISSING, NUMBER), g=st.sampled_from([EXPECTANCY, CALIBRATION]))
def test_property_missing_candidate_or_baseline_never_passes_a_comparison(
        missing: float | None, other: float, missing_side: str, sd: float | None, n: float | None, g: Gate) -> None:
    sides = {"candidate": other, "baseline": other, missing_side: missing}
    results = {role: as_result(value) for role, value in
               {**sides, "baseline_stddev": sd, "baseline_count": n, "candidate_stddev": sd,
                "candidate_count": n}.items()}
    [m] = evaluate_gate(g, ["BTCUSDC"], {role: results[role] for role in gate_queries(g, ["BTCUSDC"])}, NOW)
    assert m.verdict == "Inconclusive"


@given(missing=MISSING, op=st.sampled_from([">=", ">", "<=", "<"]), bound=NUMBER)
def test_property_missing_value_never_passes_or_breaches_a_trigger(missing: float | None, op: str,
                                                                  bound: float) -> None:
    trigger = RollbackTrigger(name="t", query="q", op=op, value=bound, window="1m")
    [m] = judge(trigger, ["BTCUSDC"], as_result(missing))
    assert m.verdict == "Inconclusive"


@given(value=st.one_of(MISSING, NUMBER), role=st.sampled_from(["candidate", "baseline", "baseline_stddev",
                                                               "baseline_count"]))
def test_property_an_error_in_any_role_is_always_an_error(value: float | None, role: str) -> None:
    results = {r: as_result(value) for r in gate_queries(EXPECTANCY, ["BTCUSDC"])}
    results[role] = QueryResult(query="q", values=results[role].values, error="e")
    [m] = evaluate_gate(EXPECTANCY, ["BTCUSDC"], results, NOW)
    assert m.verdict == "Error"


@given(symbol=st.text(min_size=0, max_size=25))
def test_property_only_valid_symbols_enter_promql(symbol: str) -> None:
    try:
        query = render_query('x{symbol=~"{symbols}"}', symbols=[symbol], window="5m")
    except ValueError:
        assert not re.fullmatch(SYMBOL_PATTERN, symbol)
    else:
        assert re.fullmatch(SYMBOL_PATTERN, symbol) and query == f'x{{symbol=~"{symbol}"}}'


def test_the_candidates_own_uncertainty_widens_the_band() -> None:
    """Welch: a candidate mean from few trades is 'not shown worse', a precise one is 'worse'."""
    gate = next(g for g in CANARY.gates if g.comparison is not None and g.comparison.stddev_query)
    base = {"baseline": ok(BTCUSDC=1.0), "baseline_stddev": ok(BTCUSDC=1.0), "baseline_count": ok(BTCUSDC=400)}
    precise = {**base, "candidate": ok(BTCUSDC=0.7), "candidate_stddev": ok(BTCUSDC=1.0),
               "candidate_count": ok(BTCUSDC=400)}
    noisy = {**precise, "candidate_count": ok(BTCUSDC=10)}
    assert evaluate_gate(gate, ["BTCUSDC"], precise, NOW)[0].verdict == "Fail"
    assert evaluate_gate(gate, ["BTCUSDC"], noisy, NOW)[0].verdict == "Pass"
