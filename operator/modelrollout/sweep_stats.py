"""The shadow stage's statistical gate: sweep runs in, one Measurement per check and symbol out.

Pure: no I/O, no clock, no global random state. The MLflow adapter produces the
`SweepEvidence`; this module only judges it. Baseline and candidate runs of the same
(symbol, fold) saw the same data, so every statistic is computed on the paired
differences, which removes the fold-to-fold variance both variants share.

scipy is imported where a sweep is judged, not with the module: only the shadow stage needs it,
and the operator should not carry scipy.stats' import cost while no rollout is in shadow.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np

from modelrollout.observation import SweepEvidence, SweepRow
from modelrollout.spec import SweepGate
from modelrollout.status import Measurement, Verdict

ROWS = "sweep/rows"
LIFT_CI = "sweep/f1LiftCI"
COHENS_D = "sweep/cohensD"
BH_P = "sweep/bhP"
CALIBRATION = "sweep/calibration"
MIN_PAIRS = 3


@dataclass(frozen=True)
class _Pairs:
    """One symbol's folds that have exactly one run of each variant, and what kept the rest out."""

    folds: tuple[str, ...]
    baseline: tuple[SweepRow, ...]
    candidate: tuple[SweepRow, ...]
    ambiguous: tuple[str, ...]  # (fold, variant) with several runs: the whole symbol is inconclusive
    unpaired: tuple[str, ...]  # folds with one variant only: ignored, reported


@dataclass(frozen=True)
class _Sample:
    """One metric over the paired folds, or why it cannot be judged (`missing`)."""

    baseline: np.ndarray
    candidate: np.ndarray
    missing: str = ""


@dataclass(frozen=True)
class _Lift:
    """The paired statistics of one symbol; None where a statistic is undefined (zero variance)."""

    n: int
    mean: float
    baseline_mean: float
    ci: tuple[float, float] | None
    cohens_d: float | None
    p: float | None


@dataclass(frozen=True)
class _Check:
    """One check's outcome for one symbol, before it becomes a Measurement."""

    kind: str
    verdict: Verdict
    message: str
    value: float | None = None
    baseline: float | None = None


def evaluate_sweep(gate_name: str, sweep: SweepGate, symbols: Sequence[str], evidence: SweepEvidence,
                   now: datetime, *, seed: int = 0) -> list[Measurement]:
    """Every check of the sweep gate: the run count ('*'), then per symbol the lift CI, Cohen's d,
    the BH-adjusted p-value and calibration.

    A check passes only on complete evidence; while fewer than `sweep.min_rows` runs exist,
    per-symbol values are still reported but their verdicts are withheld (Inconclusive), so a
    half-finished sweep can neither fail nor pass the gate.
    """
    thresholds = {ROWS: f">= {sweep.min_rows} runs", LIFT_CI: f"{_level(sweep)} lower > 0",
                  COHENS_D: f">= {sweep.min_cohens_d:g}", BH_P: f"< {sweep.max_adjusted_p:g} (BH over symbols)",
                  CALIBRATION: f"<= baseline + {sweep.calibration_tolerance:g}"}

    def measurement(symbol: str, check: _Check) -> Measurement:
        return Measurement(name=gate_name, kind=check.kind, symbol=symbol, value=check.value,
                           baseline=check.baseline, threshold=thresholds[check.kind], verdict=check.verdict,
                           message=check.message, measured_at=now)

    if evidence.error:
        return [measurement("*", _Check(ROWS, "Error", f"cannot read sweep experiment {evidence.experiment!r}: "
                                        f"{evidence.error}"))]
    wanted = set(symbols)
    rows = [row for row in evidence.rows if row.symbol in wanted]
    complete = len(rows) >= sweep.min_rows
    result = [measurement("*", _Check(
        ROWS, "Pass" if complete else "Inconclusive",
        f"{len(rows)} runs for {len(symbols)} symbol(s) in experiment {evidence.experiment!r}"
        + ("" if complete else "; the sweep is not complete yet"), value=float(len(rows))))]

    by_symbol: dict[str, list[SweepRow]] = defaultdict(list)
    for row in rows:
        by_symbol[row.symbol].append(row)
    pairs = {symbol: _pair(by_symbol[symbol]) for symbol in symbols}
    samples = {symbol: _sample(pairs[symbol], sweep.metric) for symbol in symbols}
    lifts = {symbol: _lift(sample, sweep, seed) for symbol, sample in samples.items() if not sample.missing}
    adjusted = _benjamini_hochberg({symbol: lift.p for symbol, lift in lifts.items() if lift.p is not None})

    checks = {symbol: _lift_checks(samples[symbol].missing, lifts.get(symbol), adjusted.get(symbol), len(adjusted),
                                   sweep, seed, _unpaired_note(pairs[symbol])) for symbol in symbols}
    if sweep.aggregation == "anySignificantNoneWorse":
        checks = _any_significant_none_worse(checks, lifts)
    for symbol in symbols:
        judged = checks[symbol] + [_calibration_check(_sample(pairs[symbol], sweep.calibration_metric), sweep)]
        result += [measurement(symbol, check if complete else _withheld(check, sweep.min_rows)) for check in judged]
    return result


def _any_significant_none_worse(checks: dict[str, list[_Check]], lifts: dict[str, _Lift]) -> dict[str, list[_Check]]:
    """Once one symbol passes every lift check, the others need only not be shown worse.

    A symbol's failed lift checks then pass, unless its lift CI lies wholly below 0. Under no lift
    anywhere, promotion needs one symbol's BH-adjusted p below the bar, which BH bounds by the bar.
    """
    if not any(all(c.verdict == "Pass" for c in found) for found in checks.values()):
        return checks
    adjusted = {}
    for symbol, found in checks.items():
        lift = lifts.get(symbol)
        worse = lift is not None and lift.ci is not None and lift.ci[1] < 0
        adjusted[symbol] = found if worse else [
            replace(c, verdict="Pass", message=f"not shown better, not shown worse (aggregation "
                                               f"anySignificantNoneWorse): {c.message}") if c.verdict == "Fail" else c
            for c in found]
    return adjusted


def _benjamini_hochberg(p_values: dict[str, float]) -> dict[str, float]:
    """Benjamini-Hochberg adjusted p-values (step-up, capped at 1) over the symbols tested."""
    if not p_values:
        return {}
    from scipy.stats import false_discovery_control

    adjusted = false_discovery_control(list(p_values.values()), method="bh")
    return dict(zip(p_values, (float(p) for p in adjusted), strict=True))


def _lift_checks(missing: str, lift: _Lift | None, p_adjusted: float | None, family: int, sweep: SweepGate,
                 seed: int, note: str) -> list[_Check]:
    if lift is None:
        return [_Check(kind, "Inconclusive", missing + note) for kind in (LIFT_CI, COHENS_D, BH_P)]
    undefined = _undefined_verdict(lift.mean)
    no_variance = (f"undefined: the {lift.n} paired {sweep.metric} differences (mean {lift.mean:+.4g}) have no "
                   "variance")
    checks = []
    if lift.ci is None:
        checks.append(_Check(LIFT_CI, undefined, no_variance + note, value=lift.mean, baseline=lift.baseline_mean))
    else:
        low, high = lift.ci
        checks.append(_Check(
            LIFT_CI, "Pass" if low > 0 else "Fail",
            f"{sweep.metric} lift (candidate - baseline) mean {lift.mean:+.4g}, {_level(sweep)} "
            f"[{low:+.4g}, {high:+.4g}] over {lift.n} paired folds (BCa bootstrap, "
            f"{sweep.bootstrap_resamples} resamples, seed {seed}); baseline mean {lift.baseline_mean:.4g}" + note,
            value=low, baseline=lift.baseline_mean))
    if lift.cohens_d is None:
        checks.append(_Check(COHENS_D, undefined, no_variance))
    else:
        checks.append(_Check(
            COHENS_D, "Pass" if lift.cohens_d >= sweep.min_cohens_d else "Fail",
            f"d_z = mean / sd (ddof=1) of {lift.n} paired {sweep.metric} differences", value=lift.cohens_d))
    if lift.p is None or p_adjusted is None:
        checks.append(_Check(BH_P, undefined, no_variance))
    else:
        checks.append(_Check(
            BH_P, "Pass" if p_adjusted < sweep.max_adjusted_p else "Fail",
            f"one-sided paired t-test p = {lift.p:.4g}, Benjamini-Hochberg adjusted over {family} symbol(s) "
            f"= {p_adjusted:.4g}", value=p_adjusted))
    return checks


def _calibration_check(sample: _Sample, sweep: SweepGate) -> _Check:
    if sample.missing:
        return _Check(CALIBRATION, "Inconclusive", sample.missing)
    candidate, baseline = float(np.mean(sample.candidate)), float(np.mean(sample.baseline))
    return _Check(
        CALIBRATION, "Pass" if candidate <= baseline + sweep.calibration_tolerance else "Fail",
        f"mean {sweep.calibration_metric} over {len(sample.candidate)} paired folds: candidate {candidate:.4g}, "
        f"baseline {baseline:.4g}", value=candidate, baseline=baseline)


def _pair(rows: Sequence[SweepRow]) -> _Pairs:
    runs: dict[str, dict[str, list[SweepRow]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        runs[row.fold][row.variant].append(row)
    folds: list[str] = []
    baseline: list[SweepRow] = []
    candidate: list[SweepRow] = []
    ambiguous: list[str] = []
    unpaired: list[str] = []
    for fold in sorted(runs, key=_fold_order):
        variants = runs[fold]
        ambiguous += [f"fold {fold} {variant} has {len(found)} runs ({', '.join(r.run_id for r in found)})"
                      for variant, found in sorted(variants.items()) if len(found) > 1]
        if len(variants) == 1:
            (variant,) = variants
            unpaired.append(f"fold {fold} ({variant} only)")
        elif all(len(found) == 1 for found in variants.values()):
            folds.append(fold)
            baseline.append(variants["baseline"][0])
            candidate.append(variants["candidate"][0])
    return _Pairs(tuple(folds), tuple(baseline), tuple(candidate), tuple(ambiguous), tuple(unpaired))


def _sample(pairs: _Pairs, metric: str) -> _Sample:
    """Missing or non-finite values, ambiguous runs and too few pairs make a metric unjudgeable."""
    baseline = np.array([row.metrics.get(metric, np.nan) for row in pairs.baseline], dtype=float)
    candidate = np.array([row.metrics.get(metric, np.nan) for row in pairs.candidate], dtype=float)
    if not (pairs.folds or pairs.unpaired or pairs.ambiguous):
        return _Sample(baseline, candidate, "no sweep runs for this symbol")
    if pairs.ambiguous:
        return _Sample(baseline, candidate, "ambiguous evidence: " + "; ".join(pairs.ambiguous))
    holes = [f"fold {row.fold} {row.variant} (run {row.run_id})"
             for row in (*pairs.baseline, *pairs.candidate) if not np.isfinite(row.metrics.get(metric, np.nan))]
    if holes:
        return _Sample(baseline, candidate, f"{metric} missing or not finite in {len(holes)} run(s): "
                       + ", ".join(holes))
    if len(pairs.folds) < MIN_PAIRS:
        return _Sample(baseline, candidate, f"only {len(pairs.folds)} paired fold(s) with baseline and candidate "
                       f"(need >= {MIN_PAIRS})")
    return _Sample(baseline, candidate)


def _lift(sample: _Sample, sweep: SweepGate, seed: int) -> _Lift:
    """Bootstrap CI of the mean paired difference, Cohen's d_z, and the one-sided p-value.

    The p-value comes from the paired t-test (`ttest_rel`, alternative='greater'), not the
    Wilcoxon signed-rank test: it tests the same quantity the CI and d_z describe (the mean
    difference), it has more power at the 5-25 folds a sweep has, and Wilcoxon's exact
    p-value cannot go below 2**-n, which after BH over several symbols would make small
    sweeps unable to pass at all. Each symbol gets a fresh generator from `seed`, so its CI
    depends only on its own data, not on the order of the symbols.
    """
    from scipy.stats import bootstrap, ttest_rel

    diffs = sample.candidate - sample.baseline
    mean, baseline_mean = float(np.mean(diffs)), float(np.mean(sample.baseline))
    if np.ptp(diffs) == 0:
        return _Lift(len(diffs), mean, baseline_mean, None, None, None)
    ci = bootstrap((diffs,), np.mean, n_resamples=sweep.bootstrap_resamples, confidence_level=sweep.confidence,
                   method="BCa", rng=np.random.default_rng(seed)).confidence_interval
    p = float(ttest_rel(sample.candidate, sample.baseline, alternative="greater").pvalue)
    interval = (float(ci.low), float(ci.high))
    return _Lift(len(diffs), mean, baseline_mean, interval if all(np.isfinite(interval)) else None,
                 mean / float(np.std(diffs, ddof=1)), p if np.isfinite(p) else None)


def _undefined_verdict(mean: float) -> Verdict:
    """A statistic without variance cannot show a lift: no lift fails, a constant lift needs a human."""
    return "Fail" if mean <= 0 else "Inconclusive"


def _withheld(check: _Check, min_rows: int) -> _Check:
    if check.verdict not in ("Pass", "Fail"):
        return check
    return replace(check, verdict="Inconclusive",
                   message=f"verdict withheld until the sweep has {min_rows} runs (would be {check.verdict}): "
                           f"{check.message}")


def _unpaired_note(pairs: _Pairs) -> str:
    return f"; ignored unpaired: {', '.join(pairs.unpaired)}" if pairs.unpaired else ""


def _fold_order(fold: str) -> tuple[int, int, str]:
    return (0, int(fold), "") if fold.isdigit() else (1, 0, fold)


def _level(sweep: SweepGate) -> str:
    return f"CI{sweep.confidence * 100:g}"
