"""`kubectl modelrollout status` shows each sequential rule's evidence: bounds, trades, forecast, PromQL; and dry runs."""

from __future__ import annotations

from datetime import UTC, datetime

from modelrollout.cli import render
from modelrollout.status import Evidence, Measurement

NOW = datetime(2026, 1, 5, tzinfo=UTC)


def rollout(**status: object) -> dict:
    return {"metadata": {"namespace": "default", "name": "focal-loss"}, "spec": {"stages": []},
            "status": {"phase": "Progressing", "stage": "canary", **status}}


def test_status_shows_bounds_trades_forecast_and_resolved_promql() -> None:
    evidence = Evidence(estimate=-0.02, lower=-0.4, upper=0.36, bar=-0.25, alpha=0.05, trades=61, baseline_trades=64,
                        more_trades=95, more_seconds=4.75 * 86400,
                        queries={"candidate_count": 'sum by (symbol) (trades_closed_total - trades_closed_total offset 3d)'})
    gate = Measurement(name="expectancy-not-worse", kind="sequential", symbol="BTCUSDC", value=0.1, baseline=0.12,
                       threshold="candidate - baseline not below -0.25", verdict="Inconclusive",
                       message="not decided yet", measured_at=NOW, evidence=evidence)
    dry = Measurement(name="trades", kind="sampleSize", symbol="BTCUSDC", value=61, threshold=">= 50",
                      verdict="Pass", measured_at=NOW, dry_run=True)
    text = render(rollout(gates=[gate.model_dump(mode="json", by_alias=True),
                                 dry.model_dump(mode="json", by_alias=True)]))
    assert "CS95 [-0.4, 0.36] estimate -0.02 vs bar -0.25; n=61 (baseline 64)" in text
    assert "≈ 95 more trades (≈ 4.8d at the current rate) until this can decide" in text
    assert "expectancy-not-worse candidate_count: sum by (symbol) (trades_closed_total" in text
    assert "trades (dry run)" in text


def test_status_says_when_gates_and_triggers_were_measured_and_what_the_replay_found() -> None:
    """Two cadences: the triggers' time moves every few seconds, the gates' once an interval."""
    trigger = Measurement(name="expectancy-worse-than-baseline", kind="rollbackTrigger", symbol="BTCUSDC",
                          value=0.1, threshold="below -0", verdict="Pass", measured_at=NOW)
    replay = {"type": "BaselineReplay", "status": "False", "reason": "WouldFireOnBaseline",
              "message": "expectancy-negative would have rolled back the baseline BTCUSDC in 62% of 24 7d windows",
              "lastTransitionTime": NOW.isoformat()}
    text = render(rollout(triggers=[trigger.model_dump(mode="json", by_alias=True)], conditions=[replay],
                          lastEvaluatedAt="2026-01-05T00:00:00Z", lastTriggersEvaluatedAt="2026-01-05T00:00:55Z"))
    assert "Rollback triggers: (measured 00:00:55)" in text
    assert "Replay:    ⚠ WouldFireOnBaseline: expectancy-negative would have rolled back the baseline" in text


def test_status_shows_the_sweep_jobs_progress_and_its_create_action() -> None:
    job = {"key": "a1b2c3d4", "name": "focal-loss-sweep-a1b2c3d4", "shards": 8, "state": "Running", "succeeded": 3,
           "active": 2, "failed": 1}
    action = {"id": "0001-runSweep", "type": "runSweep", "target": "a1b2c3d4", "reason": "shadow shadow: run the sweep",
              "state": "Done", "attempts": 1, "plannedAt": NOW.isoformat(), "doneAt": NOW.isoformat()}
    text = render(rollout(stage="shadow", sweepJob=job, actions=[action]))
    assert "Sweep Job: focal-loss-sweep-a1b2c3d4 Running: 3/8 shard(s) done, 2 running, 1 failed pod(s)" in text
    assert "runSweep    a1b2c3d4: Indexed Job  00:00:00" in text
