"""One analysis cycle's measurements for a stage: run the queries, hand the answers to the gates.

Imperative shell around `modelrollout.gates` and `modelrollout.sweep_stats`: it only
collects the stage's distinct queries, runs each once (concurrently, so an outage costs
one timeout per cycle, not one per query), and returns the verdicts. A query template
that cannot be rendered (a spec flaw the schema could not catch) becomes an Error
measurement naming the flaw, so the rollout holds instead of crashing the handler.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

from modelrollout.gates import evaluate_gate, evaluate_trigger, gate_queries, trigger_queries
from modelrollout.observation import QueryResult, SweepEvidence
from modelrollout.prometheus_provider import PrometheusProvider, SharedQueries
from modelrollout.spec import ModelRolloutSpec, Stage, parse_duration
from modelrollout.status import Measurement
from modelrollout.sweep_stats import evaluate_sweep

MAX_PARALLEL_QUERIES = 8
_Item = TypeVar("_Item")
_Query = TypeVar("_Query")


def prometheus_for(spec: ModelRolloutSpec, token: str | None, shared: SharedQueries | None = None) -> PrometheusProvider:
    """The spec's Prometheus; `token` is the bearer token read from `auth_secret_ref`, if any; `shared`
    lets rollouts asking the same query of the same Prometheus at the same moment share one answer."""
    return PrometheusProvider(spec.prometheus.url, parse_duration(spec.prometheus.timeout).total_seconds(), token,
                              shared=shared)


def measure_stage(
    spec: ModelRolloutSpec,
    stage: Stage,
    prometheus: PrometheusProvider,
    sweep_evidence: Callable[[str], SweepEvidence],
    now: datetime,
    stage_started_at: datetime | None = None,
) -> tuple[list[Measurement], list[Measurement]]:
    """(gate measurements, trigger measurements) for the stage's symbols, one per symbol each.

    `stage_started_at` (of the stage measured: the current one for gates, the live one for triggers) cuts
    gate and trigger windows to the stage
    and holds triggers within their `initialDelay`; None leaves both as written (sequential tests,
    which read the whole stage, are then Errors).
    """
    symbols = spec.stage_symbols(stage)
    stage_ran = None if stage_started_at is None else max(now - stage_started_at, timedelta(0))
    gate_plans = [_rendered(partial(gate_queries, stage_ran=stage_ran), gate, symbols) for gate in stage.gates]
    trigger_plans = [_rendered(partial(trigger_queries, stage_ran=stage_ran), trigger, symbols)
                     for trigger in stage.rollback_triggers]
    answers = _run_once(prometheus, [query for plan in gate_plans + trigger_plans if isinstance(plan, dict)
                                     for query in plan.values()])

    gates: list[Measurement] = []
    for gate, plan in zip(stage.gates, gate_plans, strict=True):
        if isinstance(plan, ValueError):
            gates += _invalid(gate.name, gate.kind, symbols, plan, now)
        elif gate.sweep is not None:
            gates += evaluate_sweep(gate.name, gate.sweep, symbols, sweep_evidence(gate.sweep.experiment), now)
        else:
            gates += evaluate_gate(gate, symbols, {role: answers[query] for role, query in plan.items()}, now,
                                   stage_ran)

    triggers: list[Measurement] = []
    for trigger, trigger_plan in zip(stage.rollback_triggers, trigger_plans, strict=True):
        if isinstance(trigger_plan, ValueError):
            triggers += _invalid(trigger.name, "rollbackTrigger", symbols, trigger_plan, now)
        else:
            triggers += evaluate_trigger(trigger, symbols, {role: answers[query] for role, query in trigger_plan.items()},
                                         now, stage_ran)
    return gates, triggers


def _rendered(render: Callable[[_Item, Sequence[str]], _Query], item: _Item,
              symbols: Sequence[str]) -> _Query | ValueError:
    try:
        return render(item, symbols)
    except ValueError as error:
        return error


def _run_once(prometheus: PrometheusProvider, queries: Sequence[str]) -> dict[str, QueryResult]:
    """Each distinct query's answer: the shared answers already in first, then the rest concurrently."""
    distinct = list(dict.fromkeys(queries))
    answers = {query: answer for query in distinct if (answer := prometheus.arrived(query)) is not None}
    missing = [query for query in distinct if query not in answers]
    if missing:
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_QUERIES, len(missing))) as pool:
            answers |= dict(zip(missing, pool.map(prometheus.query, missing), strict=True))
    return answers


def _invalid(name: str, kind: str, symbols: Sequence[str], error: ValueError, now: datetime) -> list[Measurement]:
    return [Measurement(name=name, kind=kind, symbol=symbol, threshold="(query not rendered)", verdict="Error",
                        message=f"invalid query template: {error}", measured_at=now) for symbol in symbols]
