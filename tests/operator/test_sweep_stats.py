"""The shadow sweep gate: verdicts from known paired data, and the ways evidence can be incomplete."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ttest_rel

from modelrollout.observation import SweepEvidence, SweepRow
from modelrollout.spec import SweepGate
from modelrollout.status import Measurement
from modelrollout.sweep_stats import BH_P, CALIBRATION, COHENS_D, LIFT_CI, ROWS, _benjamini_hochberg, evaluate_sweep

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SYMBOLS = ("BTCUSDC", "ETHUSDC", "SOLUSDC")


def runs(symbol: str, baseline: Sequence[float], candidate: Sequence[float], *, ece_baseline: float = 0.05,
         ece_candidate: float = 0.05) -> list[SweepRow]:
    """One baseline and one candidate run per fold, paired by position."""
    rows = []
    for fold, (b, c) in enumerate(zip(baseline, candidate, strict=True)):
        rows.append(SweepRow(f"{symbol}-{fold}-b", symbol, str(fold), "baseline",
                             {"f1_buy": b, "ece_hold": ece_baseline}))
        rows.append(SweepRow(f"{symbol}-{fold}-c", symbol, str(fold), "candidate",
                             {"f1_buy": c, "ece_hold": ece_candidate}))
    return rows


def lifted(symbol: str, lift: float, *, seed: int, folds: int = 10, **ece: float) -> list[SweepRow]:
    rng = np.random.default_rng(seed)
    baseline = 0.5 + rng.normal(0, 0.05, folds)
    return runs(symbol, baseline, baseline + lift + rng.normal(0, 0.01, folds), **ece)


def evaluate(rows: Sequence[SweepRow], *, symbols: Sequence[str] = SYMBOLS, seed: int = 0, **gate: float
             ) -> list[Measurement]:
    sweep = SweepGate(experiment="sweep-xgb", **{"min_rows": 4, "bootstrap_resamples": 2000, **gate})
    return evaluate_sweep("shadow-sweep", sweep, symbols, SweepEvidence("sweep-xgb", tuple(rows)), NOW, seed=seed)


def check(measurements: Sequence[Measurement], kind: str, symbol: str) -> Measurement:
    (found,) = [m for m in measurements if m.kind == kind and m.symbol == symbol]
    return found


def test_a_clear_lift_passes_every_check() -> None:
    rows = [row for i, symbol in enumerate(SYMBOLS) for row in lifted(symbol, 0.03, seed=i)]
    result = evaluate(rows, min_rows=60)

    assert [(m.kind, m.symbol) for m in result] == [(ROWS, "*")] + [
        (kind, symbol) for symbol in SYMBOLS for kind in (LIFT_CI, COHENS_D, BH_P, CALIBRATION)]
    assert {m.verdict for m in result} == {"Pass"}
    assert all(m.name == "shadow-sweep" and m.measured_at == NOW for m in result)
    assert check(result, ROWS, "*").value == 60
    lift = check(result, LIFT_CI, "BTCUSDC")
    assert lift.threshold == "CI95 lower > 0"
    assert 0 < lift.value < 0.03 and lift.baseline == pytest.approx(0.5, abs=0.05)
    assert "CI95 [" in lift.message
    assert check(result, COHENS_D, "BTCUSDC").value > 1
    assert check(result, BH_P, "BTCUSDC").value < 0.05
    assert check(result, CALIBRATION, "BTCUSDC").threshold == "<= baseline + 0.01"


def test_no_lift_fails_the_ci_the_effect_size_and_the_p_value() -> None:
    rows = [row for i, symbol in enumerate(SYMBOLS) for row in lifted(symbol, 0.0, seed=i)]
    result = evaluate(rows)

    for symbol in SYMBOLS:
        lift = check(result, LIFT_CI, symbol)
        assert lift.verdict == "Fail" and lift.value <= 0
        assert check(result, COHENS_D, symbol).verdict == "Fail"
        assert check(result, BH_P, symbol).verdict == "Fail"


def test_benjamini_hochberg_rejects_an_effect_that_only_the_raw_p_value_would_accept() -> None:
    baseline = [0.50, 0.52, 0.48, 0.51, 0.49, 0.50, 0.53, 0.47, 0.50, 0.52]
    effect = [0.02, -0.01, 0.03, 0.0, 0.015, -0.005, 0.025, 0.01, -0.01, 0.02]
    noise = [0.01, -0.01, 0.02, -0.02, 0.0, 0.01, -0.01, 0.005, -0.005, 0.0]
    symbols = ("BTCUSDC", "ETHUSDC", "SOLUSDC", "BNBUSDC", "XRPUSDC")
    rows = runs("BTCUSDC", baseline, np.add(baseline, effect))
    for symbol in symbols[1:]:
        rows += runs(symbol, baseline, np.add(baseline, noise))
    raw_p = ttest_rel(np.add(baseline, effect), baseline, alternative="greater").pvalue

    result = evaluate(rows, symbols=symbols)

    bh = check(result, BH_P, "BTCUSDC")
    assert raw_p < 0.05  # alone, this symbol would pass
    assert bh.value == pytest.approx(raw_p * len(symbols))  # the smallest of 5 p-values, the others being large
    assert bh.value >= 0.05 and bh.verdict == "Fail"
    assert f"p = {raw_p:.4g}" in bh.message and "over 5 symbol(s)" in bh.message


def test_benjamini_hochberg_adjusted_p_values_are_those_statsmodels_gave() -> None:
    """The adjustment moved from statsmodels' multipletests(method='fdr_bh') to scipy's
    false_discovery_control: these are the values the gate reported before, to the last bits."""
    symbols = ("BTCUSDC", "ETHUSDC", "SOLUSDC", "BNBUSDC")
    lifts = (0.005, 0.005, 0.003, 0.007)
    rows = [row for i, (symbol, lift) in enumerate(zip(symbols, lifts, strict=True))
            for row in lifted(symbol, lift, seed=i)]

    result = evaluate(rows, symbols=symbols)

    before = (0.43474930062052747, 0.04340380575744065, 0.20895653654861857, 0.029423518289441175)
    assert [check(result, BH_P, symbol).value for symbol in symbols] == pytest.approx(before, rel=1e-12)
    assert [check(result, BH_P, symbol).verdict for symbol in symbols] == ["Fail", "Pass", "Fail", "Pass"]


def test_benjamini_hochberg_on_the_papers_example() -> None:
    """Benjamini & Hochberg (1995), section 4: 15 p-values, q = 0.05 rejects the four smallest."""
    p = (0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.3240, 0.4262, 0.5719,
         0.6528, 0.7590, 1.000)
    adjusted = _benjamini_hochberg({f"S{i}": value for i, value in enumerate(p)})

    assert list(adjusted) == [f"S{i}" for i in range(len(p))]
    assert [value < 0.05 for value in adjusted.values()] == [True] * 4 + [False] * 11
    statsmodels_fdr_bh = (0.0015, 0.003, 0.0095, 0.035625, 0.0603, 0.06385714285714286, 0.06385714285714286,
                          0.0645, 0.0765, 0.486, 0.5811818181818182, 0.714875, 0.7532307692307693,
                          0.8132142857142857, 1.0)
    assert list(adjusted.values()) == pytest.approx(statsmodels_fdr_bh, rel=1e-12)


def test_calibration_worse_than_baseline_plus_tolerance_fails() -> None:
    worse = evaluate(lifted("BTCUSDC", 0.03, seed=1, ece_baseline=0.05, ece_candidate=0.07), symbols=["BTCUSDC"])
    within = evaluate(lifted("BTCUSDC", 0.03, seed=1, ece_baseline=0.05, ece_candidate=0.059), symbols=["BTCUSDC"])

    calibration = check(worse, CALIBRATION, "BTCUSDC")
    assert calibration.verdict == "Fail"
    assert (calibration.value, calibration.baseline) == (pytest.approx(0.07), pytest.approx(0.05))
    assert check(within, CALIBRATION, "BTCUSDC").verdict == "Pass"
    assert check(worse, LIFT_CI, "BTCUSDC").verdict == "Pass"  # calibration is judged on its own


def test_too_few_rows_is_inconclusive_and_withholds_every_per_symbol_verdict() -> None:
    rows = [row for i, symbol in enumerate(SYMBOLS) for row in lifted(symbol, 0.03, seed=i)]
    result = evaluate(rows, min_rows=125)

    count = check(result, ROWS, "*")
    assert (count.verdict, count.value, count.threshold) == ("Inconclusive", 60, ">= 125 runs")
    assert {m.verdict for m in result} == {"Inconclusive"}
    lift = check(result, LIFT_CI, "ETHUSDC")
    assert lift.value > 0 and "would be Pass" in lift.message


def test_rows_of_other_symbols_do_not_count() -> None:
    rows = lifted("BTCUSDC", 0.03, seed=1) + lifted("DOGEUSDC", 0.03, seed=2)
    assert check(evaluate(rows, symbols=["BTCUSDC"], min_rows=40), ROWS, "*").verdict == "Inconclusive"


def test_a_symbol_with_fewer_than_three_pairs_is_inconclusive() -> None:
    rows = lifted("BTCUSDC", 0.03, seed=1, folds=2) + lifted("ETHUSDC", 0.03, seed=2)
    result = evaluate(rows, symbols=["BTCUSDC", "ETHUSDC", "SOLUSDC"])

    for kind in (LIFT_CI, COHENS_D, BH_P, CALIBRATION):
        btc = check(result, kind, "BTCUSDC")
        assert btc.verdict == "Inconclusive" and "only 2 paired fold(s)" in btc.message and btc.value is None
        assert check(result, kind, "SOLUSDC").message == "no sweep runs for this symbol"
        assert check(result, kind, "ETHUSDC").verdict == "Pass"
    assert "over 1 symbol(s)" in check(result, BH_P, "ETHUSDC").message


def test_a_missing_or_nan_metric_makes_its_checks_inconclusive_and_names_the_run() -> None:
    rows = lifted("BTCUSDC", 0.03, seed=1)
    rows[3] = SweepRow(rows[3].run_id, "BTCUSDC", "1", "candidate", {"ece_hold": 0.05})
    rows[6] = SweepRow(rows[6].run_id, "BTCUSDC", "3", "baseline", {"f1_buy": 0.5, "ece_hold": float("nan")})
    result = evaluate(rows, symbols=["BTCUSDC"])

    lift = check(result, LIFT_CI, "BTCUSDC")
    assert lift.verdict == "Inconclusive"
    assert lift.message == "f1_buy missing or not finite in 1 run(s): fold 1 candidate (run BTCUSDC-1-c)"
    calibration = check(result, CALIBRATION, "BTCUSDC")
    assert calibration.verdict == "Inconclusive" and "ece_hold" in calibration.message
    assert "fold 3 baseline (run BTCUSDC-3-b)" in calibration.message


def test_unpaired_runs_are_ignored_but_reported() -> None:
    rows = lifted("BTCUSDC", 0.03, seed=1) + [
        SweepRow("stray", "BTCUSDC", "10", "candidate", {"f1_buy": 0.0, "ece_hold": 0.9})]
    result = evaluate(rows, symbols=["BTCUSDC"])

    lift = check(result, LIFT_CI, "BTCUSDC")
    assert lift.verdict == "Pass"
    assert lift.message.endswith("; ignored unpaired: fold 10 (candidate only)")
    assert check(result, CALIBRATION, "BTCUSDC").verdict == "Pass"  # the stray 0.9 was not averaged in


def test_two_runs_for_the_same_fold_and_variant_are_ambiguous() -> None:
    rows = lifted("BTCUSDC", 0.03, seed=1) + [
        SweepRow("rerun", "BTCUSDC", "4", "candidate", {"f1_buy": 0.9, "ece_hold": 0.05})]
    result = evaluate(rows, symbols=["BTCUSDC"])

    for kind in (LIFT_CI, COHENS_D, BH_P, CALIBRATION):
        measurement = check(result, kind, "BTCUSDC")
        assert measurement.verdict == "Inconclusive"
        assert "fold 4 candidate has 2 runs (BTCUSDC-4-c, rerun)" in measurement.message


def test_evidence_that_could_not_be_read_is_one_error() -> None:
    sweep = SweepGate(experiment="sweep-xgb")
    evidence = SweepEvidence("sweep-xgb", error="connection refused")
    (measurement,) = evaluate_sweep("shadow-sweep", sweep, SYMBOLS, evidence, NOW)
    assert (measurement.kind, measurement.symbol, measurement.verdict) == (ROWS, "*", "Error")
    assert "connection refused" in measurement.message


def test_the_same_seed_gives_the_same_result_and_symbol_order_does_not_matter() -> None:
    rows = [row for i, symbol in enumerate(SYMBOLS) for row in lifted(symbol, 0.01, seed=i)]
    first, again = evaluate(rows, seed=7), evaluate(list(reversed(rows)), seed=7)
    reordered = evaluate(rows, seed=7, symbols=tuple(reversed(SYMBOLS)))
    other_seed = evaluate(rows, seed=8)

    assert first == again
    assert sorted(first, key=lambda m: (m.kind, m.symbol)) == sorted(reordered, key=lambda m: (m.kind, m.symbol))
    assert check(first, LIFT_CI, "BTCUSDC").value != check(other_seed, LIFT_CI, "BTCUSDC").value


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=3, max_size=15),
       st.integers(0, 2**32 - 1))
def test_identical_baseline_and_candidate_never_pass_the_lift_check(f1: list[float], seed: int) -> None:
    result = evaluate(runs("BTCUSDC", f1, f1), symbols=["BTCUSDC"], seed=seed, bootstrap_resamples=100, min_cohens_d=0)
    for kind in (LIFT_CI, COHENS_D, BH_P):
        assert check(result, kind, "BTCUSDC").verdict == "Fail"
