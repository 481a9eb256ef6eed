"""Prometheus gates and rollback triggers as pure functions: templates in, verdicts out.

Like Argo Rollouts' analysis metrics, every gate has three honest outcomes besides Pass:
Fail (the data says no), Inconclusive (no data, NaN, too few samples: never a pass, never a
failure) and Error (the query could not be answered). Queries are rendered here, never
concatenated elsewhere, so every symbol and window is validated before it enters PromQL,
and each gate role runs ONE query returning a vector `by (symbol)` for all symbols at once.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from statistics import NormalDist

from modelrollout.confidence_sequences import Moments, difference_interval, mean_interval, side, trades_to_decide
from modelrollout.observation import QueryResult
from modelrollout.spec import DURATION_PATTERN, SYMBOL_PATTERN, Comparator, Gate, RollbackTrigger, SequentialTest, parse_duration
from modelrollout.status import Evidence, Measurement, Verdict

PLACEHOLDERS = ("symbols", "window", "variant")
VARIANTS = ("candidate", "baseline")
ALL_SYMBOLS = "*"  # the key of a series without a `symbol` label: it applies to every symbol
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ALERT_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
COMPARATORS: dict[Comparator, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
}


def render_query(template: str, *, symbols: Sequence[str], window: str, variant: str | None = None) -> str:
    """Fill {symbols} (a regex alternation), {window} and {variant} after validating each.

    PromQL's own braces (`{symbol=~"..."}`) stay untouched: only bare `{name}` is a
    placeholder, and a name other than the three known ones is refused, not left in.
    """
    unknown = sorted({name for name in _PLACEHOLDER.findall(template) if name not in PLACEHOLDERS})
    if unknown:
        raise ValueError(f"unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)} in query "
                         f"{template!r}; known: {{symbols}}, {{window}}, {{variant}}")
    if not symbols:
        raise ValueError("no symbols to query")
    for symbol in symbols:
        if not re.fullmatch(SYMBOL_PATTERN, symbol):
            raise ValueError(f"invalid symbol {symbol!r}: must match {SYMBOL_PATTERN}")
    if not window or not re.fullmatch(DURATION_PATTERN, window):
        raise ValueError(f"invalid window {window!r}: must match {DURATION_PATTERN}")
    if "{variant}" in template and variant not in VARIANTS:
        raise ValueError(f"query {template!r} uses {{variant}} but the variant is {variant!r}, "
                         f"not one of {', '.join(VARIANTS)}")
    return (template.replace("{symbols}", "|".join(symbols))
            .replace("{window}", window)
            .replace("{variant}", variant or ""))


def stage_window(window: str, stage_ran: timedelta | None) -> str:
    """`window`, cut to the whole seconds the stage has run (at least 1s); None: not cut.

    A 7d comparison in the canary's first hour would otherwise set the candidate's hour against
    the baseline's week, and outcomes that swing with the market differ between the two for that
    reason alone.
    """
    if stage_ran is None or parse_duration(window) <= stage_ran:
        return window
    return f"{max(1, int(stage_ran.total_seconds()))}s"


def gate_queries(gate: Gate, symbols: Sequence[str], stage_ran: timedelta | None = None) -> dict[str, str]:
    """The gate's PromQL by role; sweep gates have none (modelrollout.sweep_stats reads MLflow).

    `stage_ran`: how long the stage has run; the gate's window is cut to it (`stage_window`).
    """
    window = stage_window(gate.window, stage_ran)

    def render(template: str, variant: str | None = None) -> str:
        return render_query(template, symbols=symbols, window=window, variant=variant)

    if gate.sequential is not None:
        return sequential_queries(gate.sequential, symbols, stage_ran)
    if gate.threshold is not None:
        return {"value": render(gate.threshold.query)}
    if gate.sample_size is not None:
        return {"value": render(gate.sample_size.query)}
    if gate.comparison is not None:
        comparison = gate.comparison
        if "{variant}" not in comparison.query:
            raise ValueError(f"comparison gate {gate.name}: query must contain {{variant}} "
                             "(it runs once for the candidate and once for the baseline)")
        queries = {"candidate": render(comparison.query, "candidate"),
                   "baseline": render(comparison.query, "baseline")}
        if (comparison.stddev_query is None) != (comparison.count_query is None):
            raise ValueError(f"comparison gate {gate.name}: stddevQuery and countQuery go together")
        # The confidence interval is the baseline's, so only the baseline's spread is read.
        if comparison.stddev_query is not None and comparison.count_query is not None:
            for variant in ("baseline", "candidate"):
                queries[f"{variant}_stddev"] = render(comparison.stddev_query, variant)
                queries[f"{variant}_count"] = render(comparison.count_query, variant)
        return queries
    if gate.no_firing_alert is not None:
        names = gate.no_firing_alert.alert_names
        for name in names:
            if not re.fullmatch(_ALERT_NAME, name):
                raise ValueError(f"invalid alert name {name!r}")
        # Counted by symbol so several alerts on one symbol are still one series per symbol.
        return {"alerts": f'count by (symbol) (ALERTS{{alertstate="firing",alertname=~"{"|".join(names)}"}})'}
    return {}


def evaluate_gate(gate: Gate, symbols: Sequence[str], results: Mapping[str, QueryResult],
                  now: datetime, stage_ran: timedelta | None = None) -> list[Measurement]:
    """One Measurement per symbol from the answers to `gate_queries(gate, symbols)` by role.

    `stage_ran` (sequential gates only) turns the trade count into a rate for the forecast.
    """
    if gate.kind == "sweep":
        raise ValueError(f"gate {gate.name}: sweep gates are evaluated by modelrollout.sweep_stats")
    errors = [f"{role}: {result.error}" for role, result in results.items() if result.error]
    measure = _measurer(gate.name, gate.kind, now, gate.dry_run)
    if errors:
        return [measure(symbol, "Error", _criterion(gate), "; ".join(errors)) for symbol in symbols]
    if gate.sequential is not None:
        return _queries_once([_sequential(gate.sequential, symbol, results, measure, stage_ran, as_trigger=False,
                                          family=len(symbols)) for symbol in symbols])
    return [_evaluate_symbol(gate, symbol, results, measure) for symbol in symbols]


def trigger_queries(trigger: RollbackTrigger, symbols: Sequence[str],
                    stage_ran: timedelta | None = None) -> dict[str, str]:
    """The trigger's PromQL by role ("value" and "count" for a threshold trigger).

    Its window is cut to the time the stage has run, like a gate's: a retry after a rollback must
    not re-read the losing trades of the attempt that was rolled back.
    """
    if trigger.sequential is not None:
        return sequential_queries(trigger.sequential, symbols, stage_ran)
    assert trigger.query is not None and trigger.window is not None
    window = stage_window(trigger.window, stage_ran)
    queries = {"value": render_query(trigger.query, symbols=symbols, window=window)}
    if trigger.count_query is not None:
        queries["count"] = render_query(trigger.count_query, symbols=symbols, window=window)
    return queries


def sequential_queries(test: SequentialTest, symbols: Sequence[str], stage_ran: timedelta | None) -> dict[str, str]:
    """Per variant: count, sum, sum of squares since the stage started, and the four batch-means sums.

    A block's sums are the templates with {window} set to `block`; a subquery `[stage:block]`
    evaluates them at every block's end, so sum_over_time adds up S_b^2, S_b*N_b, N_b^2 and N_b over
    the stage's blocks. (Subquery steps are aligned to multiples of `block` since the epoch, so the
    first block may begin up to one block before the stage: the variance estimate, never the mean,
    sees those trades.)
    """
    if stage_ran is None:
        raise ValueError("a sequential test reads the stage since it started, and the start is not known")
    window = f"{max(1, int(stage_ran.total_seconds()))}s"
    block = test.block
    queries: dict[str, str] = {}
    for variant in (("candidate", "baseline") if test.against == "baseline" else ("candidate",)):
        def render(template: str, over: str, v: str = variant) -> str:
            return render_query(template, symbols=symbols, window=over, variant=v)

        count, total = render(test.count_query, block), render(test.sum_query, block)
        queries |= {
            f"{variant}_count": render(test.count_query, window),
            f"{variant}_sum": render(test.sum_query, window),
            f"{variant}_squares": render(test.sum_squares_query, window),
            f"{variant}_block_squares": f"sum_over_time((({total}) ^ 2)[{window}:{block}])",
            f"{variant}_block_cross": f"sum_over_time((({total}) * ({count}))[{window}:{block}])",
            f"{variant}_block_count_squares": f"sum_over_time((({count}) ^ 2)[{window}:{block}])",
            f"{variant}_block_count": f"sum_over_time(({count})[{window}:{block}])",
        }
    return queries


def evaluate_trigger(trigger: RollbackTrigger, symbols: Sequence[str], results: Mapping[str, QueryResult],
                     now: datetime, stage_ran: timedelta | None = None) -> list[Measurement]:
    """Per symbol: "Fail" means BREACHED (roll back), "Pass" not breached, else no verdict.

    `results` answers `trigger_queries` by role. A symbol with fewer than `minSamples` (per the
    count) is not judged yet, and no symbol is before the stage has run `initialDelay`
    (`stage_ran`; None: unknown, judged): Inconclusive. A sequential trigger is breached when its
    confidence sequence lies wholly on the worse side of its bar, and otherwise not breached.
    """
    measure = _measurer(trigger.name, "rollbackTrigger", now, trigger.dry_run)
    if trigger.sequential is not None:
        errors = [f"{role}: {r.error}" for role, r in results.items() if r.error]
        if errors:
            return [measure(symbol, "Error", _sequential_criterion(trigger.sequential, True, len(symbols)),
                            "; ".join(errors)) for symbol in symbols]
        return _queries_once([_sequential(trigger.sequential, symbol, results, measure, stage_ran, as_trigger=True,
                                          family=len(symbols)) for symbol in symbols])
    return _threshold_trigger(trigger, symbols, results["value"], results.get("count"), measure, stage_ran)


def _threshold_trigger(trigger: RollbackTrigger, symbols: Sequence[str], result: QueryResult,
                       count: QueryResult | None, measure: Callable[..., Measurement],
                       stage_ran: timedelta | None) -> list[Measurement]:
    assert trigger.op is not None and trigger.value is not None
    criterion = f"breach if {trigger.op} {trigger.value:g} over {trigger.window}" + (
        f" with >= {trigger.min_samples} samples" if trigger.min_samples else "") + (
        f" after {trigger.initial_delay}" if trigger.initial_delay else "")
    errors = [r.error for r in (result, count) if r is not None and r.error]
    if errors:
        return [measure(symbol, "Error", criterion, errors[0]) for symbol in symbols]
    if trigger.initial_delay and stage_ran is not None and stage_ran < parse_duration(trigger.initial_delay):
        return [measure(symbol, "Inconclusive", criterion, f"stage has run {int(stage_ran.total_seconds())}s: "
                        f"not judged before {trigger.initial_delay}", _value(result, symbol)) for symbol in symbols]
    measurements = []
    for symbol in symbols:
        value = _value(result, symbol)
        samples = _value(count, symbol) if count is not None else None
        if value is None:
            measurements.append(measure(symbol, "Inconclusive", criterion, f"no data for {symbol}"))
        elif trigger.min_samples and (samples is None or samples < trigger.min_samples):
            measurements.append(measure(symbol, "Inconclusive", criterion,
                                        f"{0 if samples is None else samples:g} samples for {symbol}: not judged "
                                        f"before {trigger.min_samples}", value))
        elif COMPARATORS[trigger.op](value, trigger.value):
            measurements.append(measure(symbol, "Fail", criterion,
                                        f"breached: {value:g} {trigger.op} {trigger.value:g} for {symbol}", value))
        else:
            measurements.append(measure(symbol, "Pass", criterion, "not breached", value))
    return measurements


def _evaluate_symbol(gate: Gate, symbol: str, results: Mapping[str, QueryResult],
                     measure: Callable[..., Measurement]) -> Measurement:
    criterion = _criterion(gate)
    if gate.no_firing_alert is not None:
        counts = [results["alerts"].values.get(key) for key in (symbol, ALL_SYMBOLS)]
        firing = [c for c in counts if c is not None]
        if any(not math.isfinite(c) for c in firing):
            return measure(symbol, "Inconclusive", criterion, f"unreadable alert count for {symbol}")
        total = sum(firing)
        if total > 0:
            return measure(symbol, "Fail", criterion, f"{total:g} firing alert(s) for {symbol} among "
                           f"{', '.join(gate.no_firing_alert.alert_names)}", total)
        return measure(symbol, "Pass", criterion, "no firing alert", 0.0)

    if gate.comparison is None:
        value = _value(results["value"], symbol)
        if value is None:
            return measure(symbol, "Inconclusive", criterion, f"no data for {symbol}")
        if gate.sample_size is not None:
            if value >= gate.sample_size.min:
                return measure(symbol, "Pass", criterion, f"{value:g} samples", value)
            return measure(symbol, "Inconclusive", criterion,
                           f"only {value:g} of {gate.sample_size.min} samples for {symbol}", value)
        assert gate.threshold is not None
        passed = COMPARATORS[gate.threshold.op](value, gate.threshold.value)
        return measure(symbol, "Pass" if passed else "Fail", criterion,
                       f"{value:g} {'satisfies' if passed else 'violates'} {criterion}", value)

    comparison = gate.comparison
    candidate, baseline = _value(results["candidate"], symbol), _value(results["baseline"], symbol)
    if candidate is None:
        return measure(symbol, "Inconclusive", criterion, f"no data for {symbol} (candidate)", baseline=baseline)
    if baseline is None:
        return measure(symbol, "Inconclusive", criterion, f"no data for {symbol} (baseline)", candidate)
    sign = 1.0 if comparison.direction == "higherIsBetter" else -1.0
    # Everything below is phrased for higherIsBetter; `sign` mirrors it for lowerIsBetter. Values equal
    # but for float rounding are equal: the same trades summed from different running totals differ
    # in their last bits.
    if sign * (candidate - baseline) >= -comparison.tolerance or math.isclose(candidate, baseline, rel_tol=1e-9):
        return measure(symbol, "Pass", criterion,
                       f"candidate {candidate:g} vs baseline {baseline:g}", candidate, baseline)
    if "baseline_stddev" not in results:
        return measure(symbol, "Fail", criterion,
                       f"candidate {candidate:g} is worse than baseline {baseline:g}", candidate, baseline)
    stddev, count = _value(results["baseline_stddev"], symbol), _value(results["baseline_count"], symbol)
    if stddev is None or count is None or stddev < 0 or count < 1:
        return measure(symbol, "Inconclusive", criterion,
                       f"candidate {candidate:g} below baseline {baseline:g} and no usable baseline "
                       f"stddev/count for {symbol}", candidate, baseline)
    # The candidate's own uncertainty widens the band when it is known (Welch's standard error of the
    # difference): a candidate with few trades is "not shown worse", not "worse", by a noisy mean.
    variance = stddev ** 2 / count
    cand_stddev, cand_count = (_value(results[f"candidate_{k}"], symbol) if f"candidate_{k}" in results else None
                               for k in ("stddev", "count"))
    if cand_stddev is not None and cand_count is not None and cand_stddev >= 0 and cand_count >= 1:
        variance += cand_stddev ** 2 / cand_count
    half_width = _z(comparison.confidence) * math.sqrt(variance)
    low, high = baseline - half_width, baseline + half_width
    bounds = f"[{low:.6g}, {high:.6g}]"
    interval = f"{_ci(comparison.confidence)} {bounds}"
    if sign * (candidate - baseline) >= -half_width:
        return measure(symbol, "Pass", f"{criterion} {bounds}",
                       f"candidate {candidate:g} within baseline {interval}", candidate, baseline)
    return measure(symbol, "Fail", f"{criterion} {bounds}",
                   f"candidate {candidate:g} outside baseline {interval}", candidate, baseline)


def _criterion(gate: Gate) -> str:
    """The gate's rule in words for `.status` (a comparison's CI bounds are added per symbol)."""
    if gate.threshold is not None:
        return f"{gate.threshold.op} {gate.threshold.value:g}"
    if gate.sample_size is not None:
        return f">= {gate.sample_size.min}"
    if gate.no_firing_alert is not None:
        return "no firing alert"
    if gate.sequential is not None:
        return _sequential_criterion(gate.sequential, as_trigger=False)  # the family is shown where it is judged
    assert gate.comparison is not None
    comparison = gate.comparison
    op, sign = (">=", "-") if comparison.direction == "higherIsBetter" else ("<=", "+")
    text = f"{op} baseline" + (f" {sign} {comparison.tolerance:g}" if comparison.tolerance else "")
    if comparison.stddev_query is not None and comparison.count_query is not None:
        text += f" or within {_ci(comparison.confidence)}"
    return text


def _measurer(name: str, kind: str, now: datetime, dry_run: bool = False) -> Callable[..., Measurement]:
    def measure(symbol: str, verdict: Verdict, threshold: str, message: str,
                value: float | None = None, baseline: float | None = None,
                evidence: Evidence | None = None) -> Measurement:
        return Measurement(name=name, kind=kind, symbol=symbol, value=value, baseline=baseline,
                           threshold=threshold, verdict=verdict, message=message, measured_at=now,
                           dry_run=dry_run, evidence=evidence)
    return measure


def _sequential_criterion(test: SequentialTest, as_trigger: bool, family: int = 1) -> str:
    worse = "below" if test.higher_is_better else "above"
    subject = "candidate - baseline" if test.against == "baseline" else "per-trade mean"
    rule = f"{subject} {worse} {test.bar():g}" if as_trigger else f"{subject} not {worse} {test.bar():g}"
    over = "" if family == 1 else f", over {family} symbols"
    return f"{'breach if ' if as_trigger else ''}{rule} at {(1 - test.alpha) * 100:g}% (anytime-valid{over})"


def moments(results: Mapping[str, QueryResult], variant: str, symbol: str) -> Moments | None:
    """One variant's sufficient statistics for a symbol from a sequential test's answers (None: no trades)."""
    count, total, squares = (_value(results[f"{variant}_{k}"], symbol) for k in ("count", "sum", "squares"))
    if count is None or total is None or squares is None or count < 1:
        return None
    blocks = [_value(results[f"{variant}_block_{k}"], symbol) or 0.0
              for k in ("squares", "cross", "count_squares", "count")]
    return Moments(count, total, squares, *blocks)


def _sequential(test: SequentialTest, symbol: str, results: Mapping[str, QueryResult],
                measure: Callable[..., Measurement], stage_ran: timedelta | None, as_trigger: bool,
                family: int = 1) -> Measurement:
    """Gate: Pass wholly better than the bar, Fail wholly worse, else Inconclusive. Trigger: Fail (breach)
    wholly worse, else Pass; never Inconclusive once there are trades, so it holds nothing.

    `alpha` is the rule's over the `family` of symbols it judges in the stage: each symbol's sequence
    runs at alpha / family (Bonferroni), so a no-harm candidate is falsely rolled back (or failed) on
    ANY of the full stage's five symbols with probability at most alpha, not 1 - (1 - alpha)^5."""
    criterion = _sequential_criterion(test, as_trigger, family)
    alpha = test.alpha / family
    candidate = moments(results, "candidate", symbol)
    baseline = moments(results, "baseline", symbol) if test.against == "baseline" else None
    queries = {role: result.query for role, result in results.items()}
    if candidate is None or (test.against == "baseline" and baseline is None):
        missing = "candidate" if candidate is None else "baseline"
        return measure(symbol, "Inconclusive", criterion, f"no trades for {symbol} ({missing}) since the stage "
                       "started", evidence=Evidence(bar=test.bar(), alpha=alpha, queries=queries))
    fewest = min(float(m.count) for m in (candidate, baseline) if m is not None)  # type: ignore[arg-type]
    if fewest < test.min_trades:
        return measure(symbol, "Pass" if as_trigger else "Inconclusive", criterion,
                       f"{fewest:g} trades for {symbol}: not judged before {test.min_trades}",
                       evidence=Evidence(bar=test.bar(), alpha=alpha, trades=float(candidate.count),  # type: ignore[arg-type]
                                         baseline_trades=None if baseline is None else float(baseline.count),  # type: ignore[arg-type]
                                         queries=queries))
    interval = (difference_interval(candidate, baseline, alpha, test.planned_trades) if baseline is not None
                else mean_interval(candidate, alpha, test.planned_trades))
    where = str(side(interval, test.bar(), test.higher_is_better))
    more = None if where != "undecided" else trades_to_decide(interval, test.bar(), alpha, test.planned_trades)
    trades = float(candidate.count)  # type: ignore[arg-type]
    rate = trades / stage_ran.total_seconds() if stage_ran and stage_ran.total_seconds() > 0 else None
    evidence = Evidence(
        estimate=_finite(interval.estimate), lower=_finite(interval.lower), upper=_finite(interval.upper),
        bar=test.bar(), alpha=alpha, trades=trades,
        baseline_trades=float(baseline.count) if baseline is not None else None,  # type: ignore[arg-type]
        more_trades=more, more_seconds=more / rate if more is not None and rate else None, queries=queries)
    values = (float(candidate.mean), float(baseline.mean) if baseline is not None else None)
    bounds = f"[{_fmt(evidence.lower)}, {_fmt(evidence.upper)}] from {trades:g} trades"
    forecast = "" if more is None else f"; ≈ {more:g} more trades" + (
        f" (≈ {human_duration(evidence.more_seconds)} at the current rate)" if evidence.more_seconds is not None else "") \
        + " until this can decide"
    if as_trigger:
        verdict: Verdict = "Fail" if where == "worse" else "Pass"
        text = f"breached: {bounds} wholly {'below' if test.higher_is_better else 'above'} {test.bar():g}" \
            if verdict == "Fail" else f"not breached: {bounds}{forecast if where == 'undecided' else ''}"
    else:
        verdict = {"better": "Pass", "worse": "Fail", "undecided": "Inconclusive"}[where]  # type: ignore[assignment]
        text = {"better": f"shown no worse: {bounds}", "worse": f"shown worse: {bounds}",
                "undecided": f"not decided yet: {bounds}{forecast}"}[where]
    return measure(symbol, verdict, criterion, f"{symbol} {text}", *values, evidence=evidence)


def _queries_once(measurements: list[Measurement]) -> list[Measurement]:
    """One query answers every symbol, so only the first symbol's evidence carries the PromQL (status stays small)."""
    for m in measurements[1:]:
        if m.evidence is not None:
            m.evidence.queries = {}
    return measurements


def _finite(value: object) -> float | None:
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def _fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:.4g}"


def human_duration(seconds: float) -> str:
    """`90000` -> `1.0d`: a forecast's time, rounded the way a person says it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _value(result: QueryResult, symbol: str) -> float | None:
    """The symbol's finite value, else the symbol-less one ('*'), else None (no data)."""
    value = result.values.get(symbol, result.values.get(ALL_SYMBOLS))
    return value if value is not None and math.isfinite(value) else None


def _z(confidence: float) -> float:
    """Two-sided normal quantile: 1.96 for 0.95."""
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def _ci(confidence: float) -> str:
    return f"CI{confidence * 100:g}"
