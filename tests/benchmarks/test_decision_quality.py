"""The decision-quality benchmark's vectorised form equals the gate and trigger functions it stands for."""

from __future__ import annotations

import importlib.util
import sys
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from modelrollout.gates import evaluate_gate, evaluate_trigger, gate_queries, trigger_queries
from modelrollout.observation import QueryResult

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "decision_quality.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("decision_quality", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["decision_quality"] = module
    spec.loader.exec_module(module)
    return module


VERDICT_OF_SIDE = {"gate": {"better": "Pass", "worse": "Fail", "undecided": "Inconclusive"},
                   "trigger": {"better": "Pass", "worse": "Fail", "undecided": "Pass"}}


@pytest.mark.parametrize("stream", ["iid", "ar1", "regime"])
def test_the_vectorised_sequence_equals_the_gate_and_trigger_functions_at_every_look(bench: ModuleType,
                                                                                      stream: str) -> None:
    rng = np.random.default_rng(4)
    gate, triggers = bench.canary_rules()
    runs = 6
    market = bench.regimes(rng, runs)
    cand = bench.trades(rng, stream, 20, 0.1, runs, market, drop=True)
    base = bench.trades(rng, stream, 20, 0.1, runs, market)
    checked = 0
    for rule, kind in [(gate, "gate")] + [(t, "trigger") for t in triggers]:
        test = rule.sequential
        path = bench.sequential_path(test, cand, base if test.against == "baseline" else None)
        for run in range(runs):
            looks = np.flatnonzero(path.side[run] != "padding")
            for event in rng.choice(looks, size=min(25, looks.size), replace=False):
                cycle = int(path.cycle[run, event])
                ran = timedelta(seconds=cycle * bench.CYCLE_S)
                evidence = {v: bench.pick(m[0], run, event) for v, m in path.moments.items()}
                if kind == "gate":
                    queries = gate_queries(rule, [bench.SYMBOL], ran)
                    [m] = evaluate_gate(rule, [bench.SYMBOL], bench.answers(queries, evidence), bench.START + ran, ran)
                else:
                    queries = trigger_queries(rule, [bench.SYMBOL], ran)
                    [m] = evaluate_trigger(rule, [bench.SYMBOL], bench.answers(queries, evidence),
                                           bench.START + ran, ran)
                assert m.verdict == VERDICT_OF_SIDE[kind][str(path.side[run, event])], (rule.name, run, cycle)
                checked += 1
    assert checked > 200


def test_the_plans_threshold_trigger_breaches_at_the_cycle_the_trigger_function_says(bench: ModuleType) -> None:
    rng = np.random.default_rng(9)
    cand = bench.trades(rng, "iid", 20, 0.05, 8, bench.regimes(rng, 8))
    first = bench.threshold_breach(cand, gauge=False)
    count, total = bench.per_cycle(cand)
    width = 48 * 60
    trigger = bench.PLAN_TRIGGER
    for run in np.flatnonzero(first <= bench.CYCLES):
        for cycle in (int(first[run]) - 1, int(first[run])):
            if cycle < 0:
                continue
            n = count[run, cycle] - (count[run, cycle - width] if cycle >= width else 0)
            s = total[run, cycle] - (total[run, cycle - width] if cycle >= width else 0)
            value = {"value": QueryResult(query="v", values={"BTCUSDC": s / n} if n else {}),
                     "count": QueryResult(query="c", values={"BTCUSDC": n})}
            [m] = evaluate_trigger(trigger, ["BTCUSDC"], value, bench.START, None)
            assert (m.verdict == "Fail") == (cycle == first[run])
