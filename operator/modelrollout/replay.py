"""A plan's rules against the baseline's own history: how often would they have fired on a change that is no change?

`kubectl modelrollout replay` reads the baseline's outcome series from Prometheus (`query_range`,
one sample per `step`) and asks, for every stage-long window of the history (starting every
`every`), whether each rollback trigger would have rolled the baseline back, and whether each
sequential gate against a fixed value would have failed it. The baseline stands in for the
candidate (`variant="candidate"` is read as `variant="baseline"`), so every firing is a false
alarm: a plan that "rolls back the baseline in 62 % of 7-day windows" will roll back a harmless
change about as often.

Approximations, stated in the report: rules are looked at once per `step`, not every analysis
cycle (firing can only be under-counted); a threshold trigger's window is not cut to the stage's
start; a sequential rule's blocks are `step`-aligned. Rules that compare candidate with baseline
are not replayed (the baseline against itself is no test).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial

import numpy as np

from modelrollout.confidence_sequences import Moments, mean_interval, side
from modelrollout.gates import human_duration, render_query
from modelrollout.observation import RangeResult
from modelrollout.spec import (
    Comparator,
    ModelRolloutSpec,
    RollbackTrigger,
    SequentialTest,
    Stage,
    parse_duration,
    stage_duration,
)
from modelrollout.status import ReplayFinding

History = Callable[[str, datetime, datetime, float], RangeResult]


# The gates' comparators, elementwise over a history.
_ARRAY_COMPARATORS: dict[Comparator, Callable[..., object]] = {
    ">=": np.greater_equal, ">": np.greater, "<=": np.less_equal, "<": np.less,
}

Found = partial[ReplayFinding]  # a finding with its stage, rule, role and window count filled in


def share(finding: ReplayFinding) -> float:
    """The share of windows in which the rule fired (NaN for no window)."""
    return finding.fired / finding.windows if finding.windows else float("nan")


def describe(finding: ReplayFinding, length: timedelta) -> str:
    """One line for a person: what the rule would have done to the baseline, or why it was not replayed."""
    if finding.note.startswith(("not replayed", "error")):
        return f"{finding.rule} {finding.symbol}: {finding.note}"
    if not finding.windows:
        return f"{finding.rule} {finding.symbol}: history shorter than one window"
    verb = "rolled back" if finding.role == "rollbackTrigger" else "failed"
    return (f"{finding.rule} would have {verb} the baseline {finding.symbol} in {share(finding):.0%} of "
            f"{finding.windows} {human_duration(length.total_seconds())} windows"
            + (f" ({finding.note})" if finding.note else ""))


def alarming(findings: Sequence[ReplayFinding], warn_above: float) -> list[ReplayFinding]:
    """The findings whose rule fired against the baseline in more than `warn_above` of the windows, worst first."""
    loud = [f for f in findings if f.windows and share(f) > warn_above]
    return sorted(loud, key=share, reverse=True)


def as_baseline(template: str) -> str:
    """The candidate's query read for the baseline."""
    return template.replace('variant="candidate"', 'variant="baseline"')


def window_starts(start: datetime, end: datetime, length: timedelta, every: timedelta) -> list[datetime]:
    starts, at = [], start
    while at + length <= end:
        starts.append(at)
        at += every
    return starts


def replay_plan(spec: ModelRolloutSpec, history: History, now: datetime, since: timedelta, every: timedelta,
                step: timedelta) -> list[ReplayFinding]:
    """Every lever stage's replayable rules over the last `since` of the baseline's history."""
    start = now - since
    return [finding for stage in spec.stages if stage.type != "shadow"
            for finding in replay_stage(stage, spec.stage_symbols(stage), history, start, now, stage_duration(stage),
                                        every, step)]


def replay_stage(stage: Stage, symbols: Sequence[str], history: History, start: datetime, end: datetime,
                 length: timedelta, every: timedelta, step: timedelta) -> list[ReplayFinding]:
    """Every replayable rule of `stage` on each symbol's baseline history between `start` and `end`."""
    starts = window_starts(start, end, length, every)
    findings: list[ReplayFinding] = []
    for trigger in stage.rollback_triggers:
        found = partial(ReplayFinding, stage=stage.name, rule=trigger.name, role="rollbackTrigger",
                        windows=len(starts))
        if trigger.sequential is not None:
            findings += _sequential(found, trigger.sequential, symbols, history, start, end, starts, length, step)
        else:
            findings += _threshold(found, trigger, symbols, history, start, end, starts, length, step)
    for gate in stage.gates:
        if gate.sequential is not None:
            found = partial(ReplayFinding, stage=stage.name, rule=gate.name, role="gate", windows=len(starts))
            findings += _sequential(found, gate.sequential, symbols, history, start, end, starts, length, step)
    return findings


def _grid(result: RangeResult, symbol: str, times: np.ndarray) -> np.ndarray:
    """The symbol's samples on the step grid; NaN where there is none."""
    values = np.full(times.shape, np.nan)
    index = dict(result.values.get(symbol, []))
    for i, t in enumerate(times):
        values[i] = index.get(float(t), np.nan)
    return values


def _sequential(found: Found, test: SequentialTest, symbols: Sequence[str], history: History, start: datetime,
                end: datetime, starts: list[datetime], length: timedelta, step: timedelta) -> list[ReplayFinding]:
    if test.against == "baseline":
        return [found(symbol=s, fired=0, note="not replayed: compares with the baseline itself") for s in symbols]
    step_s = step.total_seconds()
    window = f"{int(step_s)}s"
    results = {role: history(render_query(as_baseline(template), symbols=symbols, window=window, variant="baseline"),
                             start, end, step_s)
               for role, template in (("count", test.count_query), ("sum", test.sum_query),
                                      ("squares", test.sum_squares_query))}
    errors = [r.error for r in results.values() if r.error]
    if errors:
        return [found(symbol=s, fired=0, note=f"error: {errors[0]}") for s in symbols]
    times = np.arange(start.timestamp(), end.timestamp() + 1e-9, step_s)
    per_block = max(1, int(parse_duration(test.block).total_seconds() // step_s))
    findings = []
    as_trigger = found.keywords["role"] == "rollbackTrigger"
    for symbol in symbols:
        count, total, squares = (np.nan_to_num(np.maximum(_grid(results[r], symbol, times), 0.0) if r == "count"
                                               else _grid(results[r], symbol, times)) for r in ("count", "sum", "squares"))
        fired = 0
        for begin in starts:
            first = round((begin.timestamp() - start.timestamp()) / step_s) + 1
            last = first + int(length.total_seconds() // step_s)
            sides = _sides(test, count[first:last], total[first:last], squares[first:last], per_block)
            worse = sides == "worse"
            fired += bool(worse.any()) if as_trigger else bool(sides.size and sides[-1] == "worse")
        findings.append(found(symbol=symbol, fired=fired))
    return findings


def _sides(test: SequentialTest, count: np.ndarray, total: np.ndarray, squares: np.ndarray,
           per_block: int) -> np.ndarray:
    """The sequence's side at every step of one window (blocks of `per_block` steps)."""
    n, s, q = np.cumsum(count), np.cumsum(total), np.cumsum(squares)
    steps = np.arange(count.size)
    block_n = np.add.reduceat(count, np.arange(0, count.size, per_block)) if count.size else count
    block_s = np.add.reduceat(total, np.arange(0, count.size, per_block)) if count.size else total
    done = steps // per_block  # blocks completed before each step's own block
    prefix = [np.concatenate([[0.0], np.cumsum(x)]) for x in (block_s ** 2, block_s * block_n, block_n ** 2, block_n)]
    moments = Moments(n, s, q, *(p[done] for p in prefix))
    sides = side(mean_interval(moments, test.alpha, test.planned_trades), test.bar(), test.higher_is_better)
    return np.where(n >= test.min_trades, sides, "undecided")


def _threshold(found: Found, trigger: RollbackTrigger, symbols: Sequence[str], history: History, start: datetime,
               end: datetime, starts: list[datetime], length: timedelta, step: timedelta) -> list[ReplayFinding]:
    assert trigger.query is not None and trigger.window is not None and trigger.op is not None
    step_s = step.total_seconds()
    value = history(render_query(as_baseline(trigger.query), symbols=symbols, window=trigger.window), start, end,
                    step_s)
    count = (history(render_query(as_baseline(trigger.count_query), symbols=symbols, window=trigger.window), start,
                     end, step_s) if trigger.count_query else None)
    errors = [r.error for r in (value, count) if r is not None and r.error]
    if errors:
        return [found(symbol=s, fired=0, note=f"error: {errors[0]}") for s in symbols]
    times = np.arange(start.timestamp(), end.timestamp() + 1e-9, step_s)
    delay = parse_duration(trigger.initial_delay).total_seconds() if trigger.initial_delay else 0.0
    assert trigger.op is not None and trigger.value is not None  # a threshold trigger (the schema requires both)
    findings = []
    for symbol in symbols:
        values = _grid(value, symbol, times)
        samples = _grid(count, symbol, times) if count is not None else np.full(times.shape, np.inf)
        with np.errstate(invalid="ignore"):
            breach = np.asarray(_ARRAY_COMPARATORS[trigger.op](values, trigger.value)) & np.isfinite(values) & (
                np.nan_to_num(samples, nan=0.0) >= trigger.min_samples)
        fired = sum(bool(breach[(times >= b.timestamp() + delay) & (times <= (b + length).timestamp())].any())
                    for b in starts)
        findings.append(found(symbol=symbol, fired=fired, note="window not cut to the stage; looked at once per step"))
    return findings
