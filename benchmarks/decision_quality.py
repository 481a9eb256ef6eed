"""Decision quality: how often the canary's gates and triggers decide right, over simulated trade streams.

A 7-day canary at 60 s cycles (10,080 looks) on one symbol, candidate and baseline each trading
Poisson arrivals at 5, 20 or 60 trades a day, per-trade PnL with mean/sd 0.05, 0.1 or 0.2 (sd 1):

* iid: normal; t3: Student-t with 3 degrees of freedom (scaled to sd 1); ar1: AR(1) in trade
  order, rho 0.3; regime: a market regime shared by both variants adds +-0.25 sd to the mean and
  flips at 0.5 a day (the noise is scaled so the sd stays 1).

Rules judged, as `examples/focal-loss-rollout.yaml` writes them (read from the file):
* the sequential trigger (candidate minus baseline, anytime-valid) and the sequential comparison
  gate (candidate not worse than baseline by more than its margin);
* the raw threshold trigger of the user's plan, "expectancy < 0 over 48 h, minSamples 20", in the
  gauge form the plan wrote (the average over 48 h of the exporter's 48 h-window mean) and in the
  counter form (per-trade mean over exactly the last 48 h of the stage).

Figures, each with a Wilson 95 % interval over the runs (`..._lo`, `..._hi`):
* `false_rollback`, `false_fail`: a no-harm candidate (identical to the baseline) rolled back by
  the trigger at any of the 10,080 looks, or with the gate's sequence ever wholly on the worse
  side during the stage (which bounds what `engine.decide` counts after minDuration);
* `pass_share`: no-harm candidates whose stage `engine.decide` completes at 7 d;
* `detect_hours`: median hours from a drop of the candidate's mean to -0.5 sd at day 2 to the
  rollback (over runs rolled back after the drop; `early_alarm`: the share rolled back before it),
  and `power`: the share rolled back within the stage; `oracle_power`: a one-sided z-test
  at 5 % on candidate minus baseline with ONE look at 7 d on the same data (the cost of being
  anytime-valid is power minus oracle_power);
* the shadow gate (`modelrollout.sweep_stats`): A/A false promotion and power for an F1 lift of
  +0.01/+0.02/+0.03 at 13 and 25 folds, with the default aggregation (every symbol must pass) and
  the documented alternative (`aggregation: anySignificantNoneWorse`).

Vectorised, and exact at every cycle: a sequence's verdict changes only when a trade closes or a
block of the batch-means variance completes, so it is evaluated at exactly those cycles, with the
same `modelrollout.confidence_sequences` arithmetic the gate runs (`tests/benchmarks` checks that
this form equals `gates.evaluate_gate`/`evaluate_trigger` on the same evidence). Each run's outcome
is then decided by `engine.decide` from the Measurements `gates.evaluate_*` produce.

    .venv/bin/python benchmarks/decision_quality.py          # 400 runs per cell (BENCH_RUNS=N)
    BENCH_QUICK=1 .venv/bin/python benchmarks/decision_quality.py   # 60 runs, fewer cells: < 2 min
    BENCH_PARTS=canary (or shadow) runs one half
    BENCH_STREAMS=ar1 BENCH_RATES=20 BENCH_RUNS=4000 ...   # some cells, with more runs for a tighter interval
"""

from __future__ import annotations

import copy
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import numpy as np
import yaml

from devstack.bench import emit
from modelrollout.confidence_sequences import Moments, difference_interval, mean_interval, side
from modelrollout.engine import decide, mark_action
from modelrollout.gates import evaluate_gate, evaluate_trigger, gate_queries, trigger_queries
from modelrollout.observation import Observation, QueryResult, SweepEvidence, SweepRow
from modelrollout.spec import Gate, ModelRolloutSpec, RollbackTrigger, SequentialTest, parse_duration
from modelrollout.status import ModelRolloutStatus, ModelVersions
from modelrollout.sweep_stats import evaluate_sweep

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "focal-loss-rollout.yaml"
CYCLE_S = 60
DAYS = 7
CYCLES = DAYS * 86400 // CYCLE_S
DROP_CYCLE = 2 * 86400 // CYCLE_S
SYMBOL = "BTCUSDC"
STREAMS = ("iid", "t3", "ar1", "regime")
RATES = (5, 20, 60)
RATIOS = (0.05, 0.1, 0.2)
MARGIN_SD = 0.25  # the gate's "no harm" margin, per trade, in sd units
AR_RHO, REGIME_SHIFT, REGIME_FLIPS_PER_DAY = 0.3, 0.25, 0.5
START = datetime(2026, 1, 5, tzinfo=UTC)
PLAN_TRIGGER = RollbackTrigger.model_validate({  # the user's plan, as written: a fixed-sample rule
    "name": "plan-expectancy-negative", "op": "<", "value": 0, "window": "48h", "minSamples": 20,
    "query": 'avg_over_time(expectancy_net_realized{symbol=~"{symbols}",variant="candidate"}[{window}])',
    "countQuery": 'max_over_time(n_trades{symbol=~"{symbols}",variant="candidate"}[{window}])'})


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the plan ------------------------------------------------------------------------------
@cache
def plan() -> ModelRolloutSpec:
    """The production example without its shadow stage: the canary is what is judged here."""
    spec = yaml.safe_load(EXAMPLE.read_text())["spec"]
    spec["stages"] = spec["stages"][1:]
    return ModelRolloutSpec.model_validate(spec)


def canary_rules() -> tuple[Gate, list[RollbackTrigger]]:
    """The canary's sequential gate and triggers, with the margin in sd units (the streams have sd 1)."""
    canary = plan().stages[0]
    gate = next(g for g in canary.gates if g.sequential is not None)
    assert gate.sequential is not None
    gate = gate.model_copy(update={"sequential": gate.sequential.model_copy(update={"margin": MARGIN_SD})})
    return gate, [t for t in canary.rollback_triggers if t.sequential is not None]


def tuned(test: SequentialTest, rate: int) -> SequentialTest:
    """The test as a user at `rate` trades a day would set it: tightest at the stage's expected trades."""
    return test.model_copy(update={"planned_trades": rate * DAYS})


# -- trade streams ------------------------------------------------------------------------
@dataclass(frozen=True)
class Trades:
    """Padded per-run trades: cycle (CYCLES where there is none) and net PnL (0 there)."""

    cycle: np.ndarray  # (runs, slots) int
    pnl: np.ndarray  # (runs, slots) float

    @property
    def real(self) -> np.ndarray:
        return self.cycle < CYCLES


def regimes(rng: np.random.Generator, runs: int) -> tuple[np.ndarray, np.ndarray]:
    """Shared market regimes: per run, the cycles at which the regime flips, and the starting sign."""
    flips = np.cumsum(rng.exponential(86400 / CYCLE_S / REGIME_FLIPS_PER_DAY, (runs, 24)), axis=1)
    return flips, rng.choice([-1.0, 1.0], runs)


def trades(rng: np.random.Generator, stream: str, rate: int, ratio: float, runs: int,
           market: tuple[np.ndarray, np.ndarray], drop: bool = False) -> Trades:
    counts = rng.poisson(rate * DAYS, runs)
    slots = int(counts.max()) + 1
    cycle = np.sort(rng.integers(0, CYCLES, (runs, slots)), axis=1)
    cycle = np.where(np.arange(slots) < counts[:, None], cycle, CYCLES)
    noise = rng.standard_normal((runs, slots))
    if stream == "t3":
        noise = rng.standard_t(3, (runs, slots)) / np.sqrt(3.0)
    elif stream == "ar1":
        for j in range(1, slots):
            noise[:, j] = AR_RHO * noise[:, j - 1] + np.sqrt(1 - AR_RHO ** 2) * noise[:, j]
    mean = np.full((runs, slots), ratio)
    if stream == "regime":
        flips, sign = market
        state = sign[:, None] * (-1.0) ** (flips[:, None, :] <= cycle[:, :, None]).sum(axis=2)
        mean = mean + REGIME_SHIFT * state
        noise = noise * np.sqrt(1 - REGIME_SHIFT ** 2)
    if drop:
        mean = np.where(cycle >= DROP_CYCLE, -0.5, mean)
    return Trades(cycle, np.where(cycle < CYCLES, mean + noise, 0.0))


# -- the sequential statistic at every cycle -----------------------------------------------
@dataclass(frozen=True)
class SidePath:
    """A sequence's side at each evaluated cycle of each run (the verdict holds until the next one)."""

    cycle: np.ndarray  # (runs, events), CYCLES + 1 where padded
    side: np.ndarray  # (runs, events) "better" / "worse" / "undecided"
    moments: dict[str, list[Moments]]  # per variant, per event


def block_prefix(t: Trades, block: int, blocks: int) -> list[np.ndarray]:
    """Per run, sums over the first k completed blocks (k = 0..blocks) of S_b^2, S_b*N_b, N_b^2, N_b."""
    runs = t.cycle.shape[0]
    index = np.minimum(t.cycle // block, blocks)  # trades beyond the stage land in a spare block
    sums, counts = np.zeros((runs, blocks + 1)), np.zeros((runs, blocks + 1))
    rows = np.repeat(np.arange(runs), t.cycle.shape[1]).reshape(t.cycle.shape)
    np.add.at(sums, (rows, index), t.pnl)
    np.add.at(counts, (rows, index), t.real.astype(float))
    sums, counts = sums[:, :blocks], counts[:, :blocks]
    zero = np.zeros((runs, 1))
    return [np.hstack([zero, np.cumsum(x, axis=1)]) for x in (sums ** 2, sums * counts, counts ** 2, counts)]


def sequential_path(test: SequentialTest, candidate: Trades, baseline: Trades | None) -> SidePath:
    """The test's side at every cycle where its evidence changes, for every run at once."""
    block = int(parse_duration(test.block).total_seconds()) // CYCLE_S
    blocks = CYCLES // block
    runs = candidate.cycle.shape[0]
    streams = {"candidate": candidate} | ({"baseline": baseline} if baseline is not None else {})
    block_ends = np.broadcast_to(np.arange(1, blocks + 1) * block, (runs, blocks))
    cycles = np.hstack([t.cycle for t in streams.values()] + [block_ends])
    order = np.argsort(cycles, axis=1, kind="stable")
    cycle = np.take_along_axis(cycles, order, axis=1)
    moments: dict[str, list[Moments]] = {}
    offset = 0
    for variant, t in streams.items():
        width = t.cycle.shape[1]
        mine = np.zeros(cycles.shape, dtype=bool)
        mine[:, offset:offset + width] = t.real
        pnl = np.zeros(cycles.shape)
        pnl[:, offset:offset + width] = t.pnl
        offset += width
        mine, pnl = np.take_along_axis(mine, order, axis=1), np.take_along_axis(pnl, order, axis=1)
        done = np.minimum(cycle // block, blocks)
        prefix = [np.take_along_axis(p, done, axis=1) for p in block_prefix(t, block, blocks)]
        moments[variant] = [Moments(np.cumsum(mine, axis=1), np.cumsum(pnl, axis=1), np.cumsum(pnl ** 2, axis=1),
                                    *prefix)]
    last = np.hstack([cycle[:, 1:] != cycle[:, :-1], np.ones((runs, 1), dtype=bool)])  # a cycle sees all its events
    seen = last & (cycle < CYCLES)
    for m in moments.values():
        seen &= np.asarray(m[0].count) >= test.min_trades  # no verdict before minTrades (gates._sequential)
    c = moments["candidate"][0]
    interval = (difference_interval(c, moments["baseline"][0], test.alpha, test.planned_trades)
                if baseline is not None else mean_interval(c, test.alpha, test.planned_trades))
    sides = np.where(seen, side(interval, test.bar(), test.higher_is_better), "padding")
    return SidePath(np.where(seen, cycle, CYCLES + 1), sides, moments)


def first_cycle(path: SidePath, where: str) -> np.ndarray:
    """Per run, the first cycle at which the sequence is on side `where` (CYCLES + 1: never)."""
    return np.where(path.side == where, path.cycle, CYCLES + 1).min(axis=1)


def final_moments(test: SequentialTest, t: Trades) -> Moments:
    """A stream's evidence at the end of the stage (cycle CYCLES): what the gate reads at 7 d."""
    block = int(parse_duration(test.block).total_seconds()) // CYCLE_S
    blocks = CYCLES // block
    prefix = [p[:, -1] for p in block_prefix(t, block, blocks)]
    return Moments(t.real.sum(1).astype(float), t.pnl.sum(1), (t.pnl ** 2).sum(1), *prefix)


# -- the raw threshold trigger at every cycle ---------------------------------------------
def per_cycle(t: Trades) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative trade count and PnL at each cycle 0..CYCLES-1 (trades of a cycle seen at it)."""
    runs = t.cycle.shape[0]
    count, total = np.zeros((runs, CYCLES + 1)), np.zeros((runs, CYCLES + 1))
    rows = np.repeat(np.arange(runs), t.cycle.shape[1]).reshape(t.cycle.shape)
    np.add.at(count, (rows, t.cycle), t.real.astype(float))
    np.add.at(total, (rows, t.cycle), t.pnl)
    return np.cumsum(count, axis=1)[:, :CYCLES], np.cumsum(total, axis=1)[:, :CYCLES]


def windowed(x: np.ndarray, width: int) -> np.ndarray:
    """x[c] - x[c - width] (x before the stage is 0): the growth over the last `width` cycles."""
    shifted = np.zeros_like(x)
    shifted[:, width:] = x[:, :-width]
    return x - shifted


def threshold_breach(t: Trades, gauge: bool) -> np.ndarray:
    """Per run, the first cycle the plan's trigger breaches (CYCLES + 1: never).

    Counter form: per-trade mean over the last 48 h of the stage < 0 with >= 20 trades in it.
    Gauge form: the exporter's 48 h-window mean, sampled every cycle, averaged over the last 48 h of
    samples (a cycle without trades in its window has no sample), < 0 while the window's maximum
    trade count reached 20 (max_over_time of n_trades approximated by its value now: it is <= it).
    """
    width = int(parse_duration(PLAN_TRIGGER.window or "48h").total_seconds()) // CYCLE_S
    count, total = per_cycle(t)
    n, s = windowed(count, width), windowed(total, width)
    if gauge:
        with np.errstate(invalid="ignore", divide="ignore"):
            sample = np.where(n > 0, s / n, 0.0)
        samples = windowed(np.cumsum(n > 0, axis=1), width)
        value = windowed(np.cumsum(sample, axis=1), width) / np.maximum(samples, 1)
        enough = np.maximum.accumulate(n, axis=1) >= PLAN_TRIGGER.min_samples  # a lower bound of the max over 48 h
        breach = (samples > 0) & enough & (value < 0)
    else:
        breach = (n >= PLAN_TRIGGER.min_samples) & (s < 0)
    return np.where(breach.any(axis=1), breach.argmax(axis=1), CYCLES + 1)


# -- the project's own functions decide each run ------------------------------------------
MOMENT_FIELDS = ("count", "total", "squares", "block_squares", "block_cross", "block_count_squares", "block_count")
ROLE_FIELDS = {"count": "count", "sum": "total", "squares": "squares", "block_squares": "block_squares",
               "block_cross": "block_cross", "block_count_squares": "block_count_squares",
               "block_count": "block_count"}


def pick(m: Moments, *index: int) -> Moments:
    """One run's (and one event's) evidence out of the vectorised arrays."""
    return Moments(*(float(np.asarray(getattr(m, f))[index]) for f in MOMENT_FIELDS))


def answers(queries: dict[str, str], evidence: dict[str, Moments]) -> dict[str, QueryResult]:
    """What Prometheus would answer to a sequential test's queries, given one run's evidence by variant."""
    results = {}
    for role, query in queries.items():
        variant, field = role.split("_", 1)
        value = float(getattr(evidence[variant], ROLE_FIELDS[field]))
        results[role] = QueryResult(query=query, values={SYMBOL: value})
    return results


@cache
def running_canary() -> ModelRolloutStatus:
    """The plan's canary, begun by `engine.decide` at START with its flag already switched."""
    spec = plan()
    versions = ModelVersions(champion={spec.models.registered_model(s): "3" for s in spec.symbols},
                             candidate={spec.models.registered_model(s): "4" for s in spec.symbols})
    status = decide(spec, ModelRolloutStatus(), Observation(versions=versions), [], START, 1).status
    for action in status.actions:
        status = mark_action(status, action.id, START)
    assert status.phase == "Progressing" and status.stage == "canary", status.message
    return status


def breached(trigger: RollbackTrigger, evidence: dict[str, Moments], cycle: int) -> str:
    """`engine.decide` on the trigger's own Measurement at the cycle it breaches: the phase it leads to."""
    ran = timedelta(seconds=cycle * CYCLE_S)
    measured = evaluate_trigger(trigger, [SYMBOL], answers(trigger_queries(trigger, [SYMBOL], ran), evidence),
                                START + ran, ran)
    return decide(plan(), running_canary(), Observation(triggers=tuple(measured)), [], START + ran, 1).status.phase


def stage_end(gate: Gate, evidence: dict[str, Moments]) -> str:
    """`engine.decide` at 7 d on the gate's own Measurement (the plan's other gates passing)."""
    ran = timedelta(days=DAYS)
    measured = evaluate_gate(gate, [SYMBOL], answers(gate_queries(gate, [SYMBOL], ran), evidence), START + ran, ran)
    others = [measured[0].model_copy(update={"name": g.name, "kind": g.kind, "verdict": "Pass", "evidence": None})
              for g in plan().stages[0].gates if g.name != gate.name]
    return decide(plan(), running_canary(), Observation(gates=tuple(measured + others)), [], START + ran,
                  1).status.phase


# -- statistics of the figures --------------------------------------------------------------
def wilson(hits: int, n: int) -> tuple[float, float, float]:
    """The share and its Wilson score 95 % interval."""
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    z, p = 1.96, hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def emit_share(name: str, hits: int, n: int, goal: float, better: str) -> None:
    share, low, high = wilson(hits, n)
    emit(name, share, "share", goal, better)  # type: ignore[arg-type]
    emit(f"{name}_lo", low, "share", goal, better)  # type: ignore[arg-type]
    emit(f"{name}_hi", high, "share", goal, better)  # type: ignore[arg-type]


# -- the canary ------------------------------------------------------------------------------
def canary_cell(rng: np.random.Generator, stream: str, rate: int, ratio: float, runs: int,
                decided_runs: int) -> None:
    """Every figure of one stream type, trade rate and mean/sd, for the plan's sequential rules."""
    gate, triggers = canary_rules()
    gate = gate.model_copy(update={"sequential": tuned(gate.sequential, rate)})  # type: ignore[arg-type]
    triggers = [t.model_copy(update={"sequential": tuned(t.sequential, rate)}) for t in triggers]  # type: ignore[arg-type]
    cell = f"{stream}_{rate}perday_ratio{ratio:g}"
    g_test = gate.sequential
    assert g_test is not None

    def trigger_paths(cand: Trades, base: Trades) -> list[SidePath]:
        return [sequential_path(t.sequential, cand, base if t.sequential.against == "baseline" else None)
                for t in triggers if t.sequential is not None]

    # no harm: the candidate trades like the baseline (its own trades, the same market)
    market = regimes(rng, runs)
    cand, base = (trades(rng, stream, rate, ratio, runs, market) for _ in range(2))
    paths = trigger_paths(cand, base)
    firsts = np.stack([first_cycle(p, "worse") for p in paths])
    for trigger, first in zip(triggers, firsts, strict=True):
        emit_share(f"decision_false_rollback_{trigger.name}_{cell}", int((first <= CYCLES).sum()), runs, 0.05, "lower")
    counted = np.array([not t.dry_run for t in triggers])  # a dry-run trigger is reported, never rolls back
    firsts = np.where(counted[:, None], firsts, CYCLES + 1)
    emit_share(f"decision_false_rollback_sequential_counted_{cell}", int((firsts.min(0) <= CYCLES).sum()), runs,
               0.05, "lower")
    g_path = sequential_path(g_test, cand, base)
    emit_share(f"decision_false_fail_sequential_{cell}", int((first_cycle(g_path, "worse") <= CYCLES).sum()), runs,
               0.05, "lower")
    for form in ("gauge", "counter"):
        emit_share(f"decision_false_rollback_plan_{form}_{cell}",
                   int((threshold_breach(cand, form == "gauge") <= CYCLES).sum()), runs, 0.05, "lower")
    final = {"candidate": final_moments(g_test, cand), "baseline": final_moments(g_test, base)}
    ends = []
    for run in range(min(runs, decided_runs)):
        which = int(firsts[:, run].argmin())
        cycle = int(firsts[which, run])
        if cycle <= CYCLES:
            event = int(np.argmax(paths[which].cycle[run] == cycle))
            phase = breached(triggers[which], {v: pick(m[0], run, event) for v, m in paths[which].moments.items()},
                             cycle)
        else:
            phase = stage_end(gate, {v: pick(m, run) for v, m in final.items()})
        ends.append(phase)
    emit_share(f"decision_pass_share_{cell}", ends.count("AwaitingApproval"), len(ends), 0.8, "higher")
    emit_share(f"decision_rolled_back_share_{cell}", ends.count("RollingBack"), len(ends), 0.05, "lower")

    # harm: from day 2 the candidate's mean is -0.5 sd per trade
    market = regimes(rng, runs)
    cand, base = trades(rng, stream, rate, ratio, runs, market, drop=True), trades(rng, stream, rate, ratio, runs,
                                                                                    market)
    first = np.stack([first_cycle(p, "worse") for p, t in zip(trigger_paths(cand, base), triggers, strict=True)
                      if not t.dry_run]).min(0)
    detected = first <= CYCLES
    emit_share(f"decision_power_sequential_{cell}", int(detected.sum()), runs, 0.8, "higher")
    emit(f"decision_detect_hours_sequential_{cell}", median_delay(first), "h", 24.0, "lower")
    emit_share(f"decision_early_alarm_sequential_{cell}", int((first < DROP_CYCLE).sum()), runs, 0.05, "lower")
    plan_first = threshold_breach(cand, gauge=False)
    emit(f"decision_detect_hours_plan_counter_{cell}", median_delay(plan_first), "h", 24.0, "lower")
    emit_share(f"decision_early_alarm_plan_counter_{cell}", int((plan_first < DROP_CYCLE).sum()), runs, 0.05,
               "lower")
    c, b = final_moments(g_test, cand), final_moments(g_test, base)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (np.asarray(c.mean) - np.asarray(b.mean)) / np.sqrt(np.asarray(c.variance) / np.asarray(c.count)
                                                                 + np.asarray(b.variance) / np.asarray(b.count))
    emit_share(f"decision_oracle_power_{cell}", int((z < -1.6449).sum()), runs, 0.8, "higher")


def median_delay(first: np.ndarray) -> float:
    """Median hours from the drop to the rollback, over the runs rolled back after it (NaN: none).

    A rollback before the drop is a false alarm, not a detection (see `decision_early_alarm_*`)."""
    hit = (first <= CYCLES) & (first >= DROP_CYCLE)
    if not hit.any():
        return float("nan")
    return float(np.median((first[hit] - DROP_CYCLE) * CYCLE_S / 3600))


# -- the shadow gate -----------------------------------------------------------------------
def sweep_evidence(rng: np.random.Generator, folds: int, lift: float) -> SweepEvidence:
    """Paired sweep runs of 5 symbols: per-fold F1 differences with sd 0.025 around `lift`.

    sd 0.025 is what makes the default gate's power at +0.02 about 50 % at 13 folds and 94 % at 25,
    as measured in the issue that asked for this benchmark; ECE is unchanged by the candidate.
    """
    rows = []
    for symbol in ("BTCUSDC", "ETHUSDC", "SOLUSDC", "BNBUSDC", "XRPUSDC"):
        for fold in range(folds):
            f1, ece = rng.normal(0.35, 0.05), rng.normal(0.05, 0.01)
            for variant, value, calibration in (("baseline", f1, ece),
                                                ("candidate", f1 + lift + rng.normal(0, 0.025),
                                                 ece + rng.normal(0, 0.002))):
                rows.append(SweepRow(run_id=f"{symbol}-{fold}-{variant}", symbol=symbol, fold=str(fold),
                                     variant=variant, metrics={"f1_buy": value, "ece_hold": calibration}))
    return SweepEvidence(experiment="sweep", rows=tuple(rows))


def shadow(rng: np.random.Generator, runs: int, resamples: int) -> None:
    gate = yaml.safe_load(EXAMPLE.read_text())["spec"]["stages"][0]["gates"][0]
    symbols = list(plan().symbols)
    for folds in (13, 25):
        for lift in (0.0, 0.01, 0.02, 0.03):
            promoted = {"allSymbols": 0, "anySignificantNoneWorse": 0}
            for _ in range(runs):
                evidence = sweep_evidence(rng, folds, lift)
                for aggregation in promoted:
                    sweep = Gate.model_validate(copy.deepcopy(gate) | {"sweep": gate["sweep"] | {
                        "minRows": 10 * folds, "bootstrapResamples": resamples, "aggregation": aggregation}}).sweep
                    assert sweep is not None
                    measured = evaluate_sweep("sweep", sweep, symbols, evidence, START)
                    promoted[aggregation] += all(m.verdict == "Pass" for m in measured)
            for aggregation, hits in promoted.items():
                name = "false_promotion" if lift == 0 else f"power_lift{lift:g}"
                emit_share(f"decision_shadow_{name}_{aggregation}_{folds}folds", hits, runs,
                           0.05 if lift == 0 else 0.8, "lower" if lift == 0 else "higher")


def main() -> None:
    quick = os.environ.get("BENCH_QUICK") == "1"
    runs = int(os.environ.get("BENCH_RUNS", "60" if quick else "400"))
    decided = 20 if quick else 100
    rng = np.random.default_rng(int(os.environ.get("BENCH_SEED", "2026")))
    started = time.monotonic()
    cells = [(s, r, m) for s in STREAMS for r in RATES for m in RATIOS]
    if quick:
        cells = [(s, 20, 0.1) for s in STREAMS] + [("iid", 5, 0.05), ("iid", 60, 0.2)]
    streams, rates = os.environ.get("BENCH_STREAMS"), os.environ.get("BENCH_RATES")  # e.g. ar1 and 20
    cells = [(s, r, m) for s, r, m in cells if (not streams or s in streams.split(","))
             and (not rates or str(r) in rates.split(","))]
    parts = os.environ.get("BENCH_PARTS", "canary,shadow").split(",")  # e.g. BENCH_PARTS=shadow
    for stream, rate, ratio in cells if "canary" in parts else []:
        canary_cell(rng, stream, rate, ratio, runs, decided)
        say(f"{stream} {rate}/day mean/sd {ratio}: done at {time.monotonic() - started:.0f}s")
    if "shadow" in parts:
        shadow(rng, 30 if quick else 300, 500 if quick else 2000)
    say(f"decision_quality took {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
