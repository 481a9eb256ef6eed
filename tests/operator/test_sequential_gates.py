"""Sequential gates and triggers: their PromQL, their verdicts, their evidence, and how the engine counts them."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from engine_driver import START, make_spec
from hypothesis import given, settings
from hypothesis import strategies as st

from modelrollout.confidence_sequences import Moments, difference_interval
from modelrollout.engine import decide
from modelrollout.gates import evaluate_gate, evaluate_trigger, gate_queries, trigger_queries
from modelrollout.observation import Observation, QueryResult
from modelrollout.spec import Gate, ModelRolloutSpec, RollbackTrigger

NOW = START + timedelta(days=7)
RAN = timedelta(days=7)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "focal-loss-rollout.yaml"
CANARY = next(s for s in ModelRolloutSpec.model_validate(yaml.safe_load(EXAMPLE.read_text())["spec"]).stages
              if s.type == "canary")
GATE = next(g for g in CANARY.gates if g.kind == "sequential")
VS_BASELINE, NEGATIVE = CANARY.rollback_triggers


def stats(values: np.ndarray) -> Moments:
    return Moments(len(values), float(values.sum()), float((values ** 2).sum()))


def answers(queries: dict[str, str], by_variant: dict[str, Moments]) -> dict[str, QueryResult]:
    fields = {"count": "count", "sum": "total", "squares": "squares", "block_squares": "block_squares",
              "block_cross": "block_cross", "block_count_squares": "block_count_squares", "block_count": "block_count"}
    return {role: QueryResult(query=q, values={"BTCUSDC": float(getattr(by_variant[role.split("_", 1)[0]],
                                                                        fields[role.split("_", 1)[1]]))})
            for role, q in queries.items()}


def gate_on(candidate: Moments, baseline: Moments, gate: Gate = GATE, ran: timedelta = RAN):
    queries = gate_queries(gate, ["BTCUSDC"], ran)
    [m] = evaluate_gate(gate, ["BTCUSDC"], answers(queries, {"candidate": candidate, "baseline": baseline}),
                        START + ran, ran)
    return m


def trigger_on(trigger: RollbackTrigger, candidate: Moments, baseline: Moments | None = None,
               ran: timedelta = RAN):
    queries = trigger_queries(trigger, ["BTCUSDC"], ran)
    evidence = {"candidate": candidate} | ({"baseline": baseline} if baseline else {})
    [m] = evaluate_trigger(trigger, ["BTCUSDC"], answers(queries, evidence), START + ran, ran)
    return m


RNG = np.random.default_rng(1)
BASE = RNG.normal(1.0, 2.0, 400)


def test_queries_read_the_stage_since_it_started_and_its_blocks() -> None:
    queries = gate_queries(GATE, ["BTCUSDC"], timedelta(hours=30))
    assert set(queries) == {f"{v}_{k}" for v in ("candidate", "baseline") for k in (
        "count", "sum", "squares", "block_squares", "block_cross", "block_count_squares", "block_count")}
    assert "offset 108000s" in queries["candidate_count"] and 'variant="candidate"' in queries["candidate_count"]
    assert queries["baseline_block_squares"].startswith("sum_over_time(((sum by (symbol) (trade_pnl_net_profit_total")
    assert queries["baseline_block_squares"].endswith("^ 2)[108000s:6h])") and "offset 6h" in queries[
        "baseline_block_squares"]
    assert set(trigger_queries(NEGATIVE, ["BTCUSDC"], timedelta(hours=1))) == {
        f"candidate_{k}" for k in ("count", "sum", "squares", "block_squares", "block_cross",
                                   "block_count_squares", "block_count")}


def test_without_the_stage_start_a_sequential_test_is_not_rendered() -> None:
    with pytest.raises(ValueError, match="start is not known"):
        gate_queries(GATE, ["BTCUSDC"], None)


def test_gate_passes_a_no_harm_candidate_once_the_sequence_excludes_worse_than_the_margin() -> None:
    m = gate_on(stats(BASE + 0.0), stats(BASE))
    assert m.verdict == "Pass" and m.evidence is not None
    assert m.evidence.lower is not None and m.evidence.lower > -GATE.sequential.margin  # type: ignore[union-attr]
    assert m.evidence.trades == 400 and m.evidence.baseline_trades == 400 and m.evidence.more_trades is None
    assert set(m.evidence.queries) == set(gate_queries(GATE, ["BTCUSDC"], RAN))
    assert "shown no worse" in m.message


def test_gate_fails_a_candidate_shown_worse_and_waits_on_one_not_yet_decided() -> None:
    worse = gate_on(stats(BASE - 5.0), stats(BASE))
    assert worse.verdict == "Fail" and worse.evidence.upper < -GATE.sequential.margin  # type: ignore[union-attr]
    few = gate_on(stats(BASE[:40] - 0.5), stats(BASE[:40]))
    assert few.verdict == "Inconclusive" and few.evidence.more_trades > 0  # type: ignore[union-attr]
    assert few.evidence.more_seconds == pytest.approx(few.evidence.more_trades / (40 / RAN.total_seconds()))  # type: ignore[union-attr]
    assert "more trades" in few.message and "until this can decide" in few.message


def test_no_verdict_before_min_trades_nor_without_trades() -> None:
    assert gate_on(stats(BASE[:5] - 50), stats(BASE[:5])).verdict == "Inconclusive"
    assert trigger_on(VS_BASELINE, stats(BASE[:5] - 50), stats(BASE[:5])).verdict == "Pass"
    none = gate_on(Moments(0, 0.0, 0.0), stats(BASE))
    assert none.verdict == "Inconclusive" and "no trades" in none.message


def test_trigger_breaches_only_when_the_sequence_is_wholly_on_the_worse_side() -> None:
    assert trigger_on(VS_BASELINE, stats(BASE - 6.0), stats(BASE)).verdict == "Fail"
    assert trigger_on(VS_BASELINE, stats(BASE - 0.2), stats(BASE)).verdict == "Pass"
    losing = RNG.normal(-1.0, 2.0, 400)
    breached = trigger_on(NEGATIVE, stats(losing))
    assert breached.verdict == "Fail" and breached.evidence.upper < 0  # type: ignore[union-attr]
    assert "breached" in breached.message
    assert trigger_on(NEGATIVE, stats(BASE)).verdict == "Pass"


def test_a_rule_over_five_symbols_judges_each_at_a_fifth_of_its_alpha() -> None:
    """Bonferroni over the stage's symbols: with five symbols each at alpha, a no-harm candidate would be
    falsely rolled back on one of them with probability up to 1 - 0.95^5 = 23 %; at alpha/5 it is <= 5 %."""
    symbols = ["BTCUSDC", "ETHUSDC", "SOLUSDC", "BNBUSDC", "XRPUSDC"]
    candidate, baseline = stats(BASE[:200] - 0.8), stats(BASE[200:])
    alone = difference_interval(candidate, baseline, 0.05, VS_BASELINE.sequential.planned_trades)  # type: ignore[union-attr]
    among = difference_interval(candidate, baseline, 0.01, VS_BASELINE.sequential.planned_trades)  # type: ignore[union-attr]
    assert float(among.upper) > float(alone.upper)  # the wider sequence the family needs
    queries = trigger_queries(VS_BASELINE, symbols, RAN)
    results = {role: QueryResult(query=r.query, values=dict.fromkeys(symbols, r.values["BTCUSDC"]))
               for role, r in answers(queries, {"candidate": candidate, "baseline": baseline}).items()}
    measured = evaluate_trigger(VS_BASELINE, symbols, results, NOW, RAN)
    assert {m.evidence.alpha for m in measured} == {0.01}  # type: ignore[union-attr]
    assert measured[0].evidence.upper == pytest.approx(float(among.upper))  # type: ignore[union-attr]
    assert "over 5 symbols" in measured[0].threshold
    assert trigger_on(VS_BASELINE, candidate, baseline).evidence.alpha == 0.05  # type: ignore[union-attr]


def test_an_error_in_any_role_is_an_error() -> None:
    queries = gate_queries(GATE, ["BTCUSDC"], RAN)
    results = answers(queries, {"candidate": stats(BASE), "baseline": stats(BASE)})
    results["baseline_block_cross"] = QueryResult(query="q", error="timeout")
    [m] = evaluate_gate(GATE, ["BTCUSDC"], results, NOW, RAN)
    assert m.verdict == "Error"


def test_the_gate_reads_the_same_interval_the_statistics_module_computes() -> None:
    c, b = stats(BASE[:200] + 0.3), stats(BASE[200:])
    m = gate_on(c, b)
    interval = difference_interval(c, b, GATE.sequential.alpha, GATE.sequential.planned_trades)  # type: ignore[union-attr]
    assert m.evidence.lower == pytest.approx(float(interval.lower))  # type: ignore[union-attr]
    assert m.evidence.upper == pytest.approx(float(interval.upper))  # type: ignore[union-attr]


@settings(max_examples=100, deadline=None)
@given(shift=st.floats(-3, 3), better=st.floats(0.01, 3), n=st.integers(20, 400))
def test_property_gate_verdicts_are_monotone_in_the_candidates_mean(shift: float, better: float, n: int) -> None:
    order = {"Fail": 0, "Inconclusive": 1, "Pass": 2}
    low = gate_on(stats(BASE[:n] + shift), stats(BASE[:n])).verdict
    high = gate_on(stats(BASE[:n] + shift + better), stats(BASE[:n])).verdict
    assert order[high] >= order[low]
    breach_low = trigger_on(VS_BASELINE, stats(BASE[:n] + shift), stats(BASE[:n])).verdict
    breach_high = trigger_on(VS_BASELINE, stats(BASE[:n] + shift + better), stats(BASE[:n])).verdict
    assert not (breach_high == "Fail" and breach_low == "Pass")


# --- the engine ---------------------------------------------------------------------------

def canary_spec(**stage: object) -> ModelRolloutSpec:
    def edit(spec: dict) -> None:
        spec["stages"] = spec["stages"][1:]
        spec["stages"][0].update(stage)
    return make_spec(edit)


def running(spec: ModelRolloutSpec):
    from modelrollout.status import ModelRolloutStatus, ModelVersions
    versions = ModelVersions(champion={spec.models.registered_model(s): "3" for s in spec.symbols},
                             candidate={spec.models.registered_model(s): "4" for s in spec.symbols})
    status = decide(spec, ModelRolloutStatus(), Observation(versions=versions), [], START, 1).status
    for action in status.actions:
        action.state, action.done_at = "Done", START
    return status


def measured(spec: ModelRolloutSpec, verdict: str, dry: set[str] = frozenset()):  # type: ignore[assignment]
    gate = gate_on(stats(BASE), stats(BASE))
    return tuple(gate.model_copy(update={"name": g.name, "verdict": verdict, "dry_run": g.name in dry})
                 for g in spec.stages[0].gates)


def test_a_dry_run_trigger_is_shown_but_never_rolls_back() -> None:
    spec = canary_spec()
    status = running(spec)
    breach = trigger_on(VS_BASELINE, stats(BASE - 6.0), stats(BASE))
    dry = decide(spec, status, Observation(triggers=(breach.model_copy(update={"dry_run": True}),)), [],
                 START + timedelta(seconds=10), 1).status
    assert dry.phase == "Progressing" and dry.triggers[0].verdict == "Fail" and dry.triggers[0].dry_run
    wet = decide(spec, status, Observation(triggers=(breach,)), [], START + timedelta(seconds=10), 1).status
    assert wet.phase == "RollingBack"


def test_a_dry_run_gate_neither_holds_nor_fails_the_stage() -> None:
    spec = canary_spec()
    names = [g.name for g in spec.stages[0].gates]
    gates = tuple(m.model_copy(update={"verdict": "Fail", "dry_run": True}) if m.name == names[0] else m
                  for m in measured(spec, "Pass"))
    now = START + timedelta(hours=1)
    edited = canary_spec(gates=[g | ({"dryRun": True} if g["name"] == names[0] else {})
                                for g in make_spec().model_dump(mode="json", by_alias=True,
                                                                exclude_none=True)["stages"][1]["gates"]])
    decided = decide(edited, running(edited), Observation(gates=gates), [], now, 1).status
    assert decided.phase == "AwaitingApproval", decided.message
    counted = tuple(m.model_copy(update={"dry_run": False}) for m in gates)
    assert decide(spec, running(spec), Observation(gates=counted), [], now, 1).status.phase == "RollingBack"


def test_with_max_duration_inconclusive_is_not_counted_before_it_and_pauses_after() -> None:
    spec = canary_spec(maxDuration="1h")
    status = running(spec)
    stage_min = timedelta(seconds=30)  # the fast example's canary minDuration is shorter than 1h
    for minute in range(1, 10):
        status = decide(spec, status, Observation(gates=measured(spec, "Inconclusive")), [],
                        START + stage_min + timedelta(minutes=minute), 1).status
    assert status.phase == "Progressing" and status.counters.inconclusive == 0
    for cycle in range(spec.stages[0].limits.inconclusive_limit + 1):
        status = decide(spec, status, Observation(gates=measured(spec, "Inconclusive")), [],
                        START + timedelta(hours=1, minutes=cycle), 1).status
    assert status.phase == "Paused" and "inconclusive" in status.message


def test_the_production_example_uses_sound_kinds_in_counter_form() -> None:
    for stage in ModelRolloutSpec.model_validate(yaml.safe_load(EXAMPLE.read_text())["spec"]).stages[1:]:
        assert all(t.kind == "sequential" for t in stage.rollback_triggers)
        assert any(g.kind == "sequential" for g in stage.gates) and stage.max_duration
        for test in [g.sequential for g in stage.gates if g.sequential] + [t.sequential for t in
                                                                          stage.rollback_triggers]:
            assert test is not None and "offset {window}" in test.count_query and "_total" in test.sum_query
            assert not math.isnan(test.bar())


def test_only_the_first_symbol_carries_the_promql_every_symbol_shares() -> None:
    queries = gate_queries(GATE, ["BTCUSDC", "ETHUSDC"], RAN)
    evidence = {"candidate": stats(BASE), "baseline": stats(BASE)}
    results = {role: QueryResult(query=r.query, values={"BTCUSDC": r.values["BTCUSDC"], "ETHUSDC": r.values["BTCUSDC"]})
               for role, r in answers(queries, evidence).items()}
    first, second = evaluate_gate(GATE, ["BTCUSDC", "ETHUSDC"], results, NOW, RAN)
    assert first.evidence.queries == queries and second.evidence.queries == {}  # type: ignore[union-attr]
    assert second.evidence.lower == first.evidence.lower  # type: ignore[union-attr]
