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

from modelrollout.observation import QueryResult
from modelrollout.spec import DURATION_PATTERN, SYMBOL_PATTERN, Comparator, Gate, RollbackTrigger, parse_duration
from modelrollout.status import Measurement, Verdict

PLACEHOLDERS = ("symbols", "window", "variant")
VARIANTS = ("candidate", "baseline")
ALL_SYMBOLS = "*"  # the key of a series without a `symbol` label: it applies to every symbol
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ALERT_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_OPS: dict[Comparator, Callable[[float, float], bool]] = {
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
                  now: datetime) -> list[Measurement]:
    """One Measurement per symbol from the answers to `gate_queries(gate, symbols)` by role."""
    if gate.kind == "sweep":
        raise ValueError(f"gate {gate.name}: sweep gates are evaluated by modelrollout.sweep_stats")
    errors = [f"{role}: {result.error}" for role, result in results.items() if result.error]
    measure = _measurer(gate.name, gate.kind, now)
    if errors:
        return [measure(symbol, "Error", _criterion(gate), "; ".join(errors)) for symbol in symbols]
    return [_evaluate_symbol(gate, symbol, results, measure) for symbol in symbols]


def trigger_query(trigger: RollbackTrigger, symbols: Sequence[str]) -> str:
    return render_query(trigger.query, symbols=symbols, window=trigger.window)


def trigger_count_query(trigger: RollbackTrigger, symbols: Sequence[str]) -> str | None:
    """The sample count a trigger needs before it judges a symbol (None: it judges at once)."""
    if trigger.count_query is None:
        return None
    return render_query(trigger.count_query, symbols=symbols, window=trigger.window)


def evaluate_trigger(trigger: RollbackTrigger, symbols: Sequence[str], result: QueryResult,
                     now: datetime, count: QueryResult | None = None,
                     stage_ran: timedelta | None = None) -> list[Measurement]:
    """Per symbol: "Fail" means BREACHED (roll back), "Pass" not breached, else no verdict.

    A symbol with fewer than `minSamples` (per `count`) is not judged yet, and no symbol is
    before the stage has run `initialDelay` (`stage_ran`; None: unknown, judged): Inconclusive.
    """
    criterion = f"breach if {trigger.op} {trigger.value:g} over {trigger.window}" + (
        f" with >= {trigger.min_samples} samples" if trigger.min_samples else "") + (
        f" after {trigger.initial_delay}" if trigger.initial_delay else "")
    measure = _measurer(trigger.name, "rollbackTrigger", now)
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
        elif _OPS[trigger.op](value, trigger.value):
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
        passed = _OPS[gate.threshold.op](value, gate.threshold.value)
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
    assert gate.comparison is not None
    comparison = gate.comparison
    op, sign = (">=", "-") if comparison.direction == "higherIsBetter" else ("<=", "+")
    text = f"{op} baseline" + (f" {sign} {comparison.tolerance:g}" if comparison.tolerance else "")
    if comparison.stddev_query is not None and comparison.count_query is not None:
        text += f" or within {_ci(comparison.confidence)}"
    return text


def _measurer(name: str, kind: str, now: datetime) -> Callable[..., Measurement]:
    def measure(symbol: str, verdict: Verdict, threshold: str, message: str,
                value: float | None = None, baseline: float | None = None) -> Measurement:
        return Measurement(name=name, kind=kind, symbol=symbol, value=value, baseline=baseline,
                           threshold=threshold, verdict=verdict, message=message, measured_at=now)
    return measure


def _value(result: QueryResult, symbol: str) -> float | None:
    """The symbol's finite value, else the symbol-less one ('*'), else None (no data)."""
    value = result.values.get(symbol, result.values.get(ALL_SYMBOLS))
    return value if value is not None and math.isfinite(value) else None


def _z(confidence: float) -> float:
    """Two-sided normal quantile: 1.96 for 0.95."""
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def _ci(confidence: float) -> str:
    return f"CI{confidence * 100:g}"
