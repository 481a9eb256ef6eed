"""Sequential gates and triggers on the real stack: counters in Prometheus, the operator deciding on them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.operator import start_operator
from devstack.process import Server
from devstack.scenario import Scenario

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
COUNTERS = ("trades_closed_total", "trade_pnl_net_profit_total", "trade_pnl_net_loss_total",
            "trade_pnl_net_squared_total")


def growth(counter: str) -> str:
    series = counter + '{symbol=~"{symbols}",variant="{variant}"}'
    return f"sum by (symbol) ({series} - {series} offset {{window}})"


TEST = {"countQuery": f"{growth('trades_closed_total')} > 0",
        "sumQuery": f"{growth('trade_pnl_net_profit_total')} - {growth('trade_pnl_net_loss_total')}",
        "sumSquaresQuery": growth("trade_pnl_net_squared_total"),
        "against": "baseline", "alpha": 0.05, "plannedTrades": 60, "block": "3s", "minTrades": 20}


def sequential_plan(spec: dict[str, Any]) -> None:
    """The fast example's live stages, the canary judged by one sequential gate and one sequential trigger."""
    spec["stages"] = spec["stages"][1:]
    canary = spec["stages"][0]
    canary.update(minDuration="15s", maxDuration="90s")
    canary["gates"] = [{"name": "expectancy-not-worse", "kind": "sequential", "sequential": TEST | {"margin": 1.0}}]
    canary["rollbackTriggers"] = [{"name": "expectancy-worse-than-baseline", "kind": "sequential",
                                   "sequential": TEST | {"margin": 0}}]


class Trading(threading.Thread):
    """Two trades per variant every 0.25 s into the journal exporter's counters (as gauges that only grow).

    The baseline's trades are +1 and -1; the candidate's the same (no harm) or -1 and -3 (a regression)."""

    def __init__(self, scenario: Scenario, regress: bool) -> None:
        super().__init__(daemon=True)
        self.scenario, self.stopping = scenario, threading.Event()
        self.pnl = {"baseline": (1.0, -1.0), "candidate": (-1.0, -3.0) if regress else (1.0, -1.0)}
        self.totals = {(v, c): 0.0 for v in self.pnl for c in COUNTERS}
        self.publish()

    def publish(self) -> None:
        for (variant, counter), value in self.totals.items():
            self.scenario.feed.set(counter, value, symbol="BTCUSDC", variant=variant)

    def run(self) -> None:
        while not self.stopping.wait(0.25):
            for variant, trades in self.pnl.items():
                for pnl in trades:
                    self.totals[(variant, "trades_closed_total")] += 1
                    self.totals[(variant, "trade_pnl_net_profit_total")] += max(pnl, 0.0)
                    self.totals[(variant, "trade_pnl_net_loss_total")] += max(-pnl, 0.0)
                    self.totals[(variant, "trade_pnl_net_squared_total")] += pnl * pnl
            self.publish()


@pytest.fixture
def operator(scenario: Scenario) -> Iterator[Server]:
    server = start_operator(scenario.workdir, scenario.plane.kubeconfig, [scenario.namespace])
    yield server
    server.stop()


def trading(scenario: Scenario, regress: bool) -> Trading:
    feed = Trading(scenario, regress)
    feed.start()
    scenario.feed.wait_for('count(trades_closed_total{symbol="BTCUSDC"})', lambda r: r.values.get("*") == 2)
    return feed


def with_plan_trigger(spec: dict[str, Any]) -> None:
    """The sequential plan, plus the plan's own "expectancy < 0" made sequential, shown but not counted."""
    sequential_plan(spec)
    spec["stages"][0]["rollbackTriggers"].append({"name": "expectancy-negative", "kind": "sequential", "dryRun": True,
                                                  "sequential": TEST | {"against": "value", "value": 0}})


def test_a_no_harm_canary_passes_its_sequential_gate(scenario: Scenario, operator: Server) -> None:
    feed = trading(scenario, regress=False)
    try:
        scenario.apply(scenario.manifest(mutate=with_plan_trigger))
        status = scenario.wait_phase("AwaitingApproval", stage="full", timeout=150)
        assert "stage canary passed" in status["message"]
        report = scenario.kubectl("modelrollout", "status", "focal-loss").stdout
        assert "expectancy-worse-than-baseline" in report and "CS95 [" in report
        assert "offset" in report  # the resolved PromQL is shown
        # At the start the plan was replayed over the baseline's history in this Prometheus (query_range).
        [replay] = [c for c in status["conditions"] if c["type"] == "BaselineReplay"]
        assert (replay["status"], replay["reason"]) == ("True", "QuietOnBaseline"), replay
        findings = {f["rule"]: f for f in status["baselineReplay"]["findings"] if f["stage"] == "canary"}
        assert findings["expectancy-negative"]["windows"] == 30 and not findings["expectancy-negative"]["note"]
        assert findings["expectancy-worse-than-baseline"]["note"].startswith("not replayed")
        assert "Replay:    ✔ QuietOnBaseline" in report
    finally:
        feed.stopping.set()


def test_a_sequential_trigger_rolls_back_a_regressing_canary(scenario: Scenario, operator: Server) -> None:
    feed = trading(scenario, regress=True)
    try:
        scenario.apply(scenario.manifest(mutate=sequential_plan))
        status = scenario.wait_phase("RolledBack", timeout=120)
        assert "expectancy-worse-than-baseline" in status["rollback"]["reason"]
        assert set(scenario.effective_flags().values()) == {"binary:logistic"}
        [trigger] = [t for t in status["triggers"] if t["symbol"] == "BTCUSDC"]
        evidence = trigger["evidence"]
        assert trigger["verdict"] == "Fail" and evidence["upper"] < 0 and evidence["trades"] >= 20
        assert set(evidence["queries"]) >= {"candidate_count", "baseline_block_squares"}
    finally:
        feed.stopping.set()
