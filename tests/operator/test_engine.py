"""Scenario tests of the pure decision engine, stepped cycle by cycle like the shell steps it."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from engine_driver import CANDIDATE, CHAMPION, START, Driver, make_spec, measurement

from modelrollout.engine import (
    Event,
    MeasurementPlan,
    decide,
    gate_verdict,
    invalid,
    is_handled,
    levers_touched,
    mark_action,
    pending_actions,
    plan_measurements,
    retry_delay,
    revision_of,
    rollback_now,
)
from modelrollout.observation import Observation
from modelrollout.status import Action, ModelRolloutStatus, ReplayFinding

SPEC = make_spec()
KEY, BASELINE, CANDIDATE_FLAG = SPEC.change.key, SPEC.change.baseline, SPEC.change.candidate
BTC_KEY = "CVN_LOSS_FUNCTION__BTCUSDC"
ALL_KEYS = {KEY} | {SPEC.change.override_key(s) for s in SPEC.symbols}
MODELS = [SPEC.models.registered_model(s) for s in SPEC.symbols]
CANARY_GATES = [g.name for g in SPEC.stages[1].gates]


def new_actions(driver: Driver, since: int) -> list[Action]:
    """Actions first planned after `since` earlier actions (ids are in planning order)."""
    return driver.status.actions[since:]


def condition(status: ModelRolloutStatus, type_: str) -> str | None:
    return next((c.status for c in status.conditions if c.type == type_), None)


def assert_all_baseline(driver: Driver) -> None:
    """Every symbol reads the baseline, every champion alias and feature pin is back where it started."""
    assert driver.world.on_candidate(driver.spec) == set()
    assert all(driver.world.flag(driver.spec, s) == BASELINE for s in driver.spec.symbols)
    assert driver.world.champions(driver.spec) == dict.fromkeys(MODELS, CHAMPION)
    assert driver.world.pins == dict.fromkeys(MODELS, f"run-{CHAMPION}")


# --- happy path -----------------------------------------------------------------------------

def test_a_new_rollout_starts_in_shadow_touching_nothing() -> None:
    driver = Driver()
    decision = driver.step()
    assert (decision.status.phase, decision.status.stage, decision.status.live) == ("Progressing", "shadow", "0/5")
    assert decision.status.revision == revision_of(SPEC)
    assert decision.status.actions == []
    assert [e.reason for e in decision.events] == ["StageStarted"]


def test_shadow_pass_plans_one_set_flag_for_the_canary_symbol_only() -> None:
    driver = Driver()
    driver.step()
    decision = driver.step()
    status = decision.status
    assert (status.phase, status.stage, status.live) == ("Progressing", "canary", "1/5")
    assert [e.reason for e in decision.events] == ["StagePassed", "StageStarted"]
    [action] = status.actions
    assert (action.type, action.target, action.state) == ("setFlag", "cvntrade-model-config", "Pending")
    assert action.flags == {BTC_KEY: CANDIDATE_FLAG}
    assert action.undo == dict.fromkeys(ALL_KEYS, BASELINE)  # what a revert writes back, recorded now
    assert status.symbols_on_candidate == ["BTCUSDC"]
    assert status.versions.champion == dict.fromkeys(MODELS, CHAMPION)  # the champion to return to
    assert driver.world.on_candidate(SPEC) == {"BTCUSDC"}  # once carried out


def test_canary_gates_pass_only_after_min_duration() -> None:
    driver = Driver()
    driver.to_canary()
    started = driver.status.stage_started_at
    assert started is not None
    while driver.now - started < timedelta(seconds=20):
        decision = driver.step()
        assert (decision.status.phase, decision.status.stage) == ("Progressing", "canary")
        assert "left in canary" in decision.status.message
        assert "StagePassed" not in [e.reason for e in decision.events]
    decision = driver.step()
    assert (decision.status.phase, decision.status.stage) == ("AwaitingApproval", "full")
    assert [e.reason for e in decision.events] == ["StagePassed", "AwaitingApproval"]
    assert decision.status.awaiting_since == driver.cycles[-1].now
    assert decision.status.live == "1/5"
    assert condition(decision.status, "AwaitingApproval") == "True"


def test_awaiting_approval_holds_however_long_the_gates_pass() -> None:
    driver = Driver()
    driver.to_awaiting()
    for _ in range(5):
        decision = driver.step(advance=3600)
        assert decision.status.phase == "AwaitingApproval"
        assert decision.status.actions == driver.cycles[-1].before.actions  # nothing new planned


def test_promote_switches_every_symbol_by_the_flag_alone() -> None:
    driver = Driver()
    driver.to_awaiting()
    revision = driver.status.revision
    request = driver.promote(ticket="CHG-42")
    decision = driver.step(requests=[request])
    status = decision.status
    assert (status.phase, status.stage, status.live) == ("Watching", "full", "5/5")
    assert [e.reason for e in decision.events] == ["Approved", "StageStarted"]
    assert status.approval is not None
    assert (status.approval.stage, status.approval.revision, status.approval.by, status.approval.ticket) == (
        "full", revision, "alice@cvntrade.io", "CHG-42")
    assert request.key in status.handled_requests
    [flag] = status.actions[1:]  # the registry does not move before the rollout completes
    assert flag.reason == "promote full" and flag.type == "setFlag"
    assert flag.flags == dict.fromkeys(ALL_KEYS, CANDIDATE_FLAG)
    assert status.versions.champion == dict.fromkeys(MODELS, CHAMPION)  # recorded, for a rollback
    assert status.versions.candidate == dict.fromkeys(MODELS, CANDIDATE)
    assert driver.world.on_candidate(SPEC) == set(SPEC.symbols)
    assert driver.world.served(SPEC) == dict.fromkeys(SPEC.symbols, CANDIDATE)
    assert driver.world.champions(SPEC) == dict.fromkeys(MODELS, CHAMPION)  # a paper baseline stays the baseline
    # The seconds path is the whole revert: the ConfigMap alone brings the baseline back, MLflow or not.
    assert driver.world.flag_reverted(SPEC).served(SPEC) == dict.fromkeys(SPEC.symbols, CHAMPION)


def test_watch_period_then_completed_moves_the_champion_and_keeps_the_change() -> None:
    driver = Driver()
    driver.to_watching()
    promoted = driver.status.promoted_at
    assert promoted is not None
    while driver.now - promoted < timedelta(seconds=20):
        assert driver.step().status.phase == "Watching"
        assert driver.world.champions(SPEC) == dict.fromkeys(MODELS, CHAMPION)
    done = len(driver.status.actions)
    decision = driver.step()
    assert decision.status.phase == "Completed"
    assert [e.reason for e in decision.events] == ["StagePassed", "Completed"]
    assert condition(decision.status, "Completed") == "True"
    assert condition(decision.status, "Progressing") == "False"
    assert decision.status.sunset_at == promoted + timedelta(hours=1)
    moves = [(a.type, a.target, a.alias, a.value) for a in new_actions(driver, done)]
    assert moves == [x for m in MODELS for x in (("moveAlias", m, "previous-champion", CHAMPION),
                                                 ("moveAlias", m, "champion", CANDIDATE),
                                                 ("pinFeatures", m, "feature_artifact_run_id", f"run-{CANDIDATE}"))]
    assert all(a.reason == "complete full" for a in new_actions(driver, done))
    assert driver.world.champions(SPEC) == dict.fromkeys(MODELS, CANDIDATE)
    assert driver.world.served(SPEC) == dict.fromkeys(SPEC.symbols, CANDIDATE)
    # Accepted: a routine retrain that moves `candidate` is not served until a rollout selects it.
    assert driver.world.retrained(SPEC).served(SPEC) == dict.fromkeys(SPEC.symbols, CANDIDATE)
    before = driver.status
    assert driver.step(trigger="Fail").status.actions == before.actions  # a completed rollout keeps the change


def test_completion_waits_for_mlflow_without_ever_reverting() -> None:
    driver = Driver()
    driver.to_watching()
    driver.run_until(lambda s: s.phase == "Completed", fail=lambda a: a.type != "setFlag")  # MLflow down
    assert "recording the new champion in MLflow" in driver.status.message
    stuck = pending_actions(driver.status)
    assert stuck and stuck[0].attempts == 1 and driver.world.champions(SPEC) == dict.fromkeys(MODELS, CHAMPION)
    assert driver.world.served(SPEC) == dict.fromkeys(SPEC.symbols, CANDIDATE)  # served by the flag meanwhile
    since = len(driver.events)
    driver.step(trigger="Fail", requests=[driver.abort()], fail=True)
    assert driver.status.phase == "Completed" and "AbortIgnored" in driver.reasons(since)
    driver.run_until(lambda s: not pending_actions(s), advance=60)
    assert driver.status.message.startswith("fully promoted")
    assert driver.world.champions(SPEC) == dict.fromkeys(MODELS, CANDIDATE)


def test_a_completed_rollouts_message_counts_the_champion_moves_left_as_they_are_done() -> None:
    """Recorded with each move, not by a later cycle: nothing else cycles a finished rollout to say so."""
    driver = Driver()
    driver.to_watching()
    driver.run_until(lambda s: s.phase == "Completed", fail=lambda a: a.type != "setFlag")  # MLflow down
    done = f"fully promoted; sunset review due {driver.status.sunset_at:%Y-%m-%d}"
    assert driver.status.message == f"{done}; recording the new champion in MLflow (15 action(s) left)"
    driver.now += timedelta(minutes=1)
    driver.carry_out(fail=lambda a: a.type == "pinFeatures")  # the first model's two aliases move, its pin fails
    assert driver.status.message == f"{done}; recording the new champion in MLflow (13 action(s) left)"
    driver.now += timedelta(minutes=1)
    driver.carry_out()
    assert not pending_actions(driver.status) and driver.status.message == done


def test_live_column_and_an_event_on_every_transition() -> None:
    driver = Driver()
    driver.to_completed()
    lives = [c.after.live for c in driver.cycles]
    assert lives[0] == "0/5" and lives[-1] == "5/5"
    assert [x for i, x in enumerate(lives) if i == 0 or x != lives[i - 1]] == ["0/5", "1/5", "5/5"]
    for cycle in driver.cycles:
        moved = (cycle.before.phase, cycle.before.stage) != (cycle.after.phase, cycle.after.stage)
        assert bool(cycle.decision.events) == moved, (cycle.before.phase, cycle.after.phase)
    assert [h.phase for h in driver.status.history] == [
        "Progressing", "Progressing", "AwaitingApproval", "Watching", "Completed"]


# --- measurement plan -------------------------------------------------------------------------

def test_plan_measurements_asks_only_for_what_the_engine_uses() -> None:
    driver = Driver()
    assert plan_measurements(SPEC, driver.status).gates is None  # not started
    driver.step()
    plan = plan_measurements(SPEC, driver.status)
    assert (plan.gates.name, plan.triggers, plan.versions) == ("shadow", None, True)  # type: ignore[union-attr]
    driver.to_canary()
    plan = plan_measurements(SPEC, driver.status)
    assert (plan.gates.name, plan.triggers.name) == ("canary", "canary")  # type: ignore[union-attr]
    started = driver.status.stage_started_at
    assert started is not None
    # Mid-canary, with full behind an approval, no cycle can begin a lever stage: MLflow is not read.
    assert plan_measurements(SPEC, driver.status, started + timedelta(seconds=1)).versions is False
    assert plan_measurements(SPEC, driver.status, started + timedelta(days=30)).versions is False
    no_approval_next = SPEC.model_copy(update={"stages": [SPEC.stages[0], SPEC.stages[1], SPEC.stages[1].model_copy(
        update={"name": "canary-2"}), SPEC.stages[2]]})
    assert plan_measurements(no_approval_next, driver.status, started + timedelta(seconds=1)).versions is False
    assert plan_measurements(no_approval_next, driver.status, started + timedelta(days=30)).versions is True
    driver.run_until(lambda s: s.phase == "AwaitingApproval")
    plan = plan_measurements(SPEC, driver.status)
    assert (plan.gates, plan.triggers.name, plan.versions) == (None, "canary", True)  # type: ignore[union-attr]
    driver.step(requests=[driver.promote()])
    plan = plan_measurements(SPEC, driver.status)
    assert (plan.gates.name, plan.triggers.name) == ("full", "full")  # type: ignore[union-attr]
    driver.run_until(lambda s: s.phase == "Completed")
    assert plan_measurements(SPEC, driver.status) == MeasurementPlan(gates=None, triggers=None, versions=False)


def test_a_pending_retry_after_not_promoted_plans_the_sweep_read_and_the_versions() -> None:
    driver = Driver()
    driver.step()
    driver.step(gates="Fail")
    assert driver.status.phase == "NotPromoted"
    assert plan_measurements(SPEC, driver.status) == MeasurementPlan(gates=None, triggers=None, versions=False)
    retry = driver.retry()
    plan = plan_measurements(SPEC, driver.status, requests=[retry])
    assert (plan.gates, plan.triggers, plan.versions, plan.sweeps) == (None, None, True, ("focal-loss-sweep",))
    handled = driver.status.model_copy(update={"handled_requests": [retry.key]})
    assert plan_measurements(SPEC, handled, requests=[retry]).sweeps == ()  # answered already: nothing to read
    assert plan_measurements(SPEC, driver.status, refused=True, requests=[retry]).sweeps == ()  # refused unread


def test_a_promote_request_plans_the_versions_read_off_the_gate_cadence() -> None:
    driver = Driver()
    driver.to_awaiting()
    after_gate_cycle = driver.status.last_evaluated_at
    assert after_gate_cycle is not None
    assert plan_measurements(SPEC, driver.status, after_gate_cycle).versions is False  # the gate interval has not come
    plan = plan_measurements(SPEC, driver.status, after_gate_cycle, requests=[driver.promote()])
    assert (plan.versions, plan.sweeps) == (True, ())  # only a retry of a NotPromoted rollout reads the sweep
    assert plan_measurements(SPEC, driver.status, after_gate_cycle, requests=[driver.abort()]).versions is False


def test_a_lever_stage_that_cannot_begin_leaves_the_live_stage_guarded_since_it_began() -> None:
    """A second canary stage (no approval) cannot begin while MLflow is down (its versions cannot be
    read): the first canary is still live, so its triggers still guard it, over its own trades."""
    spec = SPEC.model_copy(update={"stages": [SPEC.stages[0], SPEC.stages[1], SPEC.stages[1].model_copy(
        update={"name": "canary-2"}), SPEC.stages[2]]})
    driver = Driver(spec)
    driver.to_canary()
    canary_started = driver.status.stage_started_at
    driver.mlflow_up = False
    driver.run_until(lambda s: s.stage == "canary-2")
    assert (driver.status.phase, driver.status.stage_started_at) == ("Degraded", None)
    plan = plan_measurements(spec, driver.status)
    assert (plan.triggers.name, plan.triggers_since) == ("canary", canary_started)  # type: ignore[union-attr]
    assert driver.step(trigger="Fail").status.phase == "RollingBack"


# --- the plan replayed on the baseline's history ---------------------------------------------------

def replayed(fired: int, windows: int = 20, note: str = "") -> tuple[ReplayFinding, ...]:
    return (ReplayFinding(stage="canary", rule="expectancy-negative", role="rollbackTrigger", symbol="BTCUSDC",
                          windows=windows, fired=fired, note=note),
            ReplayFinding(stage="canary", rule="expectancy-worse", role="rollbackTrigger", symbol="BTCUSDC",
                          windows=windows, fired=0, note="not replayed: compares with the baseline itself"))


def replay_condition(status: ModelRolloutStatus) -> tuple[str, str, str]:
    condition = next(c for c in status.conditions if c.type == "BaselineReplay")
    return condition.status, condition.reason, condition.message


def test_a_plan_that_would_roll_back_the_baseline_is_reported_when_the_rollout_starts_and_never_holds_it() -> None:
    assert plan_measurements(SPEC, ModelRolloutStatus()).replay
    decision = decide(SPEC, ModelRolloutStatus(), Observation(replay=replayed(fired=13)), [], START, 1)
    status = decision.status
    assert status.phase == "Progressing" and status.stage == "shadow"  # advisory: the rollout goes on
    verdict, reason, message = replay_condition(status)
    assert (verdict, reason) == ("False", "WouldFireOnBaseline")
    assert "expectancy-negative would have rolled back the baseline BTCUSDC in 65% of 20" in message
    assert "expectancy-worse" not in message  # a rule that compares with the baseline is not replayed
    assert [e.reason for e in decision.events if e.type == "Warning"] == ["BaselineReplay"]
    assert status.baseline_replay is not None and status.baseline_replay.revision == status.revision
    assert not plan_measurements(SPEC, status).replay  # once per revision


def test_a_quiet_replay_an_unreadable_history_and_a_disabled_replay() -> None:
    quiet = decide(SPEC, ModelRolloutStatus(), Observation(replay=replayed(fired=1)), [], START, 1)
    assert replay_condition(quiet.status)[:2] == ("True", "QuietOnBaseline")  # 5 % of windows is not above 5 %
    assert not [e for e in quiet.events if e.reason == "BaselineReplay"]
    down = replayed(fired=0, note="error: connection refused")[:1]
    unread = decide(SPEC, ModelRolloutStatus(), Observation(replay=down), [], START, 1).status
    assert replay_condition(unread)[:2] == ("Unknown", "HistoryUnavailable")
    assert not plan_measurements(SPEC, unread).replay  # said so, not retried every cycle
    off = make_spec(lambda d: d["analysis"].update(replay={"enabled": False}))
    assert not plan_measurements(off, ModelRolloutStatus()).replay


def test_an_edit_that_changes_what_is_rolled_out_is_replayed_again() -> None:
    status = decide(SPEC, ModelRolloutStatus(), Observation(replay=replayed(fired=0)), [], START, 1).status
    edited = make_spec(lambda d: d["change"].update(candidate="focal:gamma=1,alpha=0.25"))
    assert plan_measurements(edited, status).replay


# --- rollback ---------------------------------------------------------------------------------

def expected_revert(driver: Driver, order: list[str]) -> list[tuple[str, str, Any]]:
    steps = {
        "configMap": [("setFlag", "cvntrade-model-config", dict.fromkeys(ALL_KEYS, BASELINE))],
        "mlflowAlias": [("moveAlias", m, ("champion", CHAMPION)) for m in sorted(MODELS)],
        "featureArtifact": [("pinFeatures", m, ("feature_artifact_run_id", f"run-{CHAMPION}")) for m in sorted(MODELS)],
    }
    return [x for step in order for x in steps[step]]


def revert_of(actions: list[Action]) -> list[tuple[str, str, Any]]:
    return [(a.type, a.target, a.flags if a.type == "setFlag" else (a.alias, a.value)) for a in actions]


def test_canary_trigger_breach_rolls_back_every_lever_in_spec_order() -> None:
    driver = Driver()
    driver.to_canary()
    done = len(driver.status.actions)
    decision = driver.step(trigger="Fail", fail=True)  # the shell could not move anything yet
    status = decision.status
    assert status.phase == "RollingBack"
    assert [e.reason for e in decision.events] == ["RollingBack"]
    assert decision.events[0].type == "Warning"
    assert "expectancy-negative breached for BTCUSDC" in status.message
    assert status.rollback is not None and status.rollback.stage == "canary"
    revert = new_actions(driver, done)
    assert all(a.reason == "rollback" for a in revert)
    assert revert_of(revert) == expected_revert(driver, ["configMap", "mlflowAlias", "featureArtifact"])
    assert status.live == "1/5"  # still true until the revert is carried out
    decision = driver.step(trigger=None)  # carried out only after this decision
    assert decision.status.phase == "RollingBack" and len(pending_actions(decision.status)) == len(revert)
    decision = driver.step(trigger=None)
    assert decision.status.phase == "RolledBack"
    assert [e.reason for e in decision.events] == ["RolledBack"]
    assert decision.status.live == "0/5" and decision.status.symbols_on_candidate == []
    assert condition(decision.status, "RolledBack") == "True"
    assert_all_baseline(driver)


def test_rollback_follows_the_order_the_spec_gives() -> None:
    order = ["configMap", "featureArtifact", "mlflowAlias"]
    driver = Driver(make_spec(lambda d: d["rollback"].update(order=order)))
    driver.to_watching()
    done = len(driver.status.actions)
    driver.step(trigger="Fail")
    assert revert_of(new_actions(driver, done)) == expected_revert(driver, order)
    assert_all_baseline(driver)


def test_a_failing_rollback_action_stays_pending_backs_off_and_keeps_rolling_back() -> None:
    driver = Driver()
    driver.to_canary()
    driver.step(trigger="Fail", fail=True)
    tries: list[float] = []
    for _ in range(40):  # 80 s of MLflow outage, a cycle every 2 s
        at = driver.now
        first = pending_actions(driver.status)[0]
        decision = driver.step(trigger=None, fail=lambda a: a.type == "moveAlias")
        assert decision.status.phase == "RollingBack"
        stuck = pending_actions(driver.status)[0]
        assert stuck.type == "moveAlias" and stuck.last_error == "simulated outage"
        assert "action(s) left" in decision.status.message
        if (stuck.id, stuck.attempts) != (first.id, first.attempts):  # it was tried in this cycle
            assert stuck.next_attempt_at == at + retry_delay(stuck.attempts)
            tries.append((at - START).total_seconds())
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert len(tries) <= 8 and gaps == sorted(gaps) and gaps[-1] >= 32, tries  # backed off, not one per cycle
    assert driver.world.on_candidate(SPEC) == set()  # the seconds path went through first
    assert driver.world.served(SPEC) == dict.fromkeys(SPEC.symbols, CHAMPION)
    driver.run_until(lambda s: s.phase == "RolledBack", limit=80)
    assert all(a.state == "Done" and a.done_at is not None for a in driver.status.actions)
    assert_all_baseline(driver)


def test_retry_delay_doubles_from_a_second_and_is_capped_at_five_minutes() -> None:
    assert [retry_delay(n).total_seconds() for n in range(11)] == [
        0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert retry_delay(10_000) == timedelta(minutes=5)
    # An hour of outage: the tries before each gap reaches the cap, then one every 5 minutes.
    elapsed, tries = timedelta(0), 0
    while elapsed < timedelta(hours=1):
        tries += 1
        elapsed += retry_delay(tries)
    assert tries <= 20


def test_mark_action_records_each_attempt() -> None:
    driver = Driver()
    driver.step()
    driver.step(fail=True)
    [action] = driver.status.actions
    assert (action.state, action.attempts, action.done_at) == ("Pending", 1, None)
    assert action.next_attempt_at == driver.now - timedelta(seconds=2) + retry_delay(1)
    before = driver.status.model_dump()
    done = mark_action(driver.status, action.id, driver.now)
    assert driver.status.model_dump() == before  # pure
    assert (done.actions[0].state, done.actions[0].attempts, done.actions[0].last_error) == ("Done", 2, "")
    assert done.actions[0].done_at == driver.now and done.actions[0].next_attempt_at is None
    assert mark_action(done, "9999-setFlag", driver.now) == done


def test_breach_after_promotion_restores_the_recorded_champion() -> None:
    driver = Driver()
    driver.to_watching()
    driver.step()
    assert driver.step(trigger="Fail").status.phase == "RollingBack"
    assert driver.step().status.phase == "RolledBack"
    assert driver.status.rollback is not None and driver.status.rollback.stage == "full"
    assert driver.status.promoted_at is None
    assert_all_baseline(driver)


@pytest.mark.parametrize("trigger", ["Error", "Inconclusive"])
def test_an_unreadable_trigger_does_not_roll_back(trigger: str) -> None:
    driver = Driver()
    driver.to_canary()
    assert driver.step(trigger=trigger).status.phase == "Progressing"  # type: ignore[arg-type]


def test_trigger_breach_while_paused_still_rolls_back() -> None:
    driver = Driver()
    driver.to_canary()
    driver.edit(lambda d: d.update(paused=True))
    assert driver.step().status.phase == "Paused"
    assert driver.step(trigger="Fail").status.phase == "RollingBack"
    assert driver.step().status.phase == "RolledBack"
    assert_all_baseline(driver)


def test_trigger_breach_while_awaiting_approval_rolls_back_and_retry_reruns_the_canary() -> None:
    driver = Driver()
    driver.to_awaiting()
    assert plan_measurements(SPEC, driver.status).triggers is not None  # the live canary stays guarded
    decision = driver.step(trigger="Fail")
    assert decision.status.phase == "RollingBack"
    assert decision.status.awaiting_since is None
    assert driver.step().status.phase == "RolledBack"
    assert_all_baseline(driver)
    # The canary's own trigger breached: retrying re-runs the canary, never jumps to awaiting full.
    driver.step(requests=[driver.retry()])
    driver.run_until(lambda s: s.phase == "Progressing")
    assert driver.status.stage == "canary"
    assert driver.world.on_candidate(SPEC) == {"BTCUSDC"}


def test_promote_in_the_cycle_a_trigger_breached_rolls_back_instead_of_promoting() -> None:
    driver = Driver()
    driver.to_awaiting()
    decision = driver.step(trigger="Fail", requests=[driver.promote()])
    assert decision.status.phase == "RollingBack"
    assert not any(a.reason == "promote full" for a in decision.status.actions)
    assert "ApprovalRejected" in [e.reason for e in decision.events]
    assert driver.world.on_candidate(SPEC) == set()
    assert driver.world.champions(SPEC) == dict.fromkeys(MODELS, CHAMPION)


def test_trigger_breach_rolls_back_even_while_forward_actions_are_stuck() -> None:
    driver = Driver()
    driver.to_awaiting()
    driver.step(requests=[driver.promote()], fail=lambda a: a.reason == "promote full")  # the apiserver flaked
    assert driver.world.on_candidate(SPEC) == {"BTCUSDC"}  # only the canary is live
    stuck = pending_actions(driver.status)[0]
    assert stuck.next_attempt_at is not None and stuck.next_attempt_at > driver.now - timedelta(seconds=2)
    decision = driver.step(trigger="Fail", fail=lambda a: a.reason == "promote full", advance=0)
    assert decision.status.phase == "RollingBack"  # at once, backoff or not
    assert not any(a.reason == "promote full" and a.state == "Pending" for a in decision.status.actions)
    assert driver.world.on_candidate(SPEC) == set()  # the revert was tried at once, in the same cycle
    driver.run_until(lambda s: s.phase == "RolledBack")
    assert_all_baseline(driver)


# --- shadow -----------------------------------------------------------------------------------

def test_failed_shadow_gate_ends_not_promoted_touching_nothing() -> None:
    driver = Driver()
    driver.step()
    decision = driver.step(gates="Fail")
    status = decision.status
    assert status.phase == "NotPromoted"
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "NotPromoted")]
    assert status.actions == [] and status.live == "0/5" and status.failed_evidence == "sweep-1"
    assert driver.world.applied == []
    assert driver.step(trigger="Fail").status.phase == "NotPromoted"  # terminal: nothing to guard


def test_retry_after_failed_shadow_needs_new_sweep_evidence() -> None:
    driver = Driver()
    driver.step()
    driver.step(gates="Fail")
    decision = driver.step(requests=[driver.retry()])
    assert decision.status.phase == "NotPromoted"
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "RetryRejected")]
    driver.fingerprint = None  # the sweep could not be read: not new evidence either
    assert driver.step(requests=[driver.retry()]).status.phase == "NotPromoted"
    driver.fingerprint = "sweep-2"
    decision = driver.step(requests=[driver.retry()])
    assert (decision.status.phase, decision.status.stage, decision.status.failed_evidence) == (
        "Progressing", "shadow", "")
    assert decision.status.actions == []
    assert driver.step().status.stage == "canary"


# --- the shadow sweep as a Job ------------------------------------------------------------------

def with_sweep_job(data: dict[str, Any]) -> None:
    data["stages"][0]["gates"][0]["sweep"]["job"] = {"image": "modelrollout/runtime:dev", "shards": 4,
                                                     "parallelism": 2}


JOB_SPEC = make_spec(with_sweep_job)


def test_a_shadow_stage_with_a_job_creates_it_waits_for_every_shard_then_judges_its_runs() -> None:
    driver = Driver(JOB_SPEC)
    driver.job_state = "Running"
    decision = driver.step()
    status = decision.status
    [action] = status.actions
    assert (action.type, action.reason) == ("runSweep", "shadow shadow: run the sweep")
    assert status.sweep_job is not None and (status.sweep_job.key, status.sweep_job.shards) == (action.target, 4)
    assert driver.world.jobs == [action.target]  # carried out: the Job exists
    for _ in range(3):  # running: no gate is judged, nothing counts, the progress shows
        decision = driver.step(gates="Fail", advance=30)
        status = decision.status
        assert (status.phase, status.stage, status.counters.failures, status.gates) == ("Progressing", "shadow", 0, [])
        assert status.message == f"sweep Job r-sweep-{action.target}: 1/4 shard(s) done, 1 running, 0 failed pod(s)"
        assert status.sweep_job is not None and status.sweep_job.state == "Running"
    driver.job_state = "Complete"
    decision = driver.step(advance=30)
    assert [e.reason for e in decision.events] == ["SweepJobComplete", "StagePassed", "StageStarted"]
    assert decision.status.stage == "canary" and decision.status.sweep_job is not None
    assert driver.world.jobs == [action.target]  # one Job, never a second


def test_no_job_is_read_and_no_gate_judged_before_the_job_was_created() -> None:
    driver = Driver(JOB_SPEC)
    driver.step(fail=True)  # the apiserver refused the create (e.g. no RBAC for Jobs): it stays planned
    plan = plan_measurements(JOB_SPEC, driver.status, driver.now + timedelta(minutes=5))
    assert plan.sweep_job is None and plan.gates is None
    assert driver.world.jobs == []
    driver.step(advance=60)  # the retry creates it
    assert driver.status.sweep_job is not None and driver.world.jobs == [driver.status.sweep_job.key]
    assert plan_measurements(JOB_SPEC, driver.status, driver.now + timedelta(minutes=5)).sweep_job == driver.world.jobs[0]


@pytest.mark.parametrize("ended", ["Failed", "Missing"])
def test_a_failed_or_deleted_job_holds_the_stage_as_an_error_and_retry_runs_a_new_one(ended: str) -> None:
    driver = Driver(JOB_SPEC)
    driver.job_state = "Running"
    driver.step()
    first = driver.world.jobs[0]
    driver.job_state = ended  # type: ignore[assignment]
    decision = driver.step(advance=30)
    status = decision.status
    assert status.phase == "Degraded" and "nothing was judged" in status.message
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "SweepJobFailed")]
    assert [(g.name, g.verdict) for g in status.gates] == [("sweep-evidence", "Error")]
    assert status.sweep_job is not None and status.sweep_job.state == ended
    assert driver.step(advance=30).events == ()  # said once
    assert driver.status.phase == "Degraded" and driver.status.stage == "shadow"  # never a verdict
    driver.job_state = "Running"
    decision = driver.step(requests=[driver.retry()], advance=30)
    assert (decision.status.phase, decision.status.stage) == ("Progressing", "shadow")
    assert len(driver.world.jobs) == 2 and driver.world.jobs[1] != first  # a new Job, for a new attempt
    driver.job_state = "Complete"
    driver.step(advance=30)
    assert driver.status.stage == "canary"


def test_a_job_that_cannot_be_read_counts_as_errors_and_recovers() -> None:
    driver = Driver(JOB_SPEC)
    driver.job_state = "Running"
    driver.step()
    driver.job_error = "503 Service Unavailable"
    limit = JOB_SPEC.stages[0].limits.consecutive_error_limit
    for n in range(1, limit + 2):
        driver.step(advance=30)
        assert driver.status.counters.consecutive_errors == n
        assert [g.verdict for g in driver.status.gates] == ["Error"]
    assert driver.status.phase == "Degraded" and "cannot read sweep Job" in driver.status.message
    driver.job_error = None
    decision = driver.step(advance=30)
    assert decision.status.phase == "Progressing" and "Recovered" in [e.reason for e in decision.events]
    assert decision.status.counters.consecutive_errors == 0 and len(driver.world.jobs) == 1


def test_a_retry_after_a_failed_shadow_with_a_job_runs_a_new_sweep() -> None:
    driver = Driver(JOB_SPEC)
    driver.step()
    driver.step(gates="Fail")
    assert driver.status.phase == "NotPromoted"
    decision = driver.step(requests=[driver.retry()])  # the same fingerprint: a Job makes new evidence itself
    assert (decision.status.phase, decision.status.stage) == ("Progressing", "shadow")
    assert len(driver.world.jobs) == 2 and driver.world.jobs[0] != driver.world.jobs[1]


def test_an_edit_mid_shadow_starts_a_new_job() -> None:
    driver = Driver(JOB_SPEC)
    driver.job_state = "Running"
    driver.step()
    driver.edit(lambda d: d["change"].update(candidate="focal:gamma=1,alpha=0.25"))
    driver.step(advance=30)
    assert len(driver.world.jobs) == 2 and driver.status.sweep_job is not None
    assert driver.status.sweep_job.key == driver.world.jobs[1]


# --- errors, inconclusive, failures -------------------------------------------------------------

def errors_on(name: str) -> dict[str, str]:
    return {g: ("Error" if g == name else "Pass") for g in CANARY_GATES}


def test_errors_beyond_the_limit_degrade_never_promote_and_recover() -> None:
    driver = Driver()
    driver.to_canary()
    limit = SPEC.stages[1].limits.consecutive_error_limit
    for n in range(1, limit + 1):
        decision = driver.step(gates=errors_on("trades"))
        assert decision.status.phase == "Progressing" and decision.status.counters.consecutive_errors == n
        assert condition(decision.status, "Degraded") == "True"
        assert "measurement error in trades" in decision.status.message
    decision = driver.step(gates=errors_on("trades"))
    assert decision.status.phase == "Degraded"
    assert [e.reason for e in decision.events] == ["Degraded"]
    for _ in range(20):  # far past minDuration: holds, never promotes
        assert driver.step(gates=errors_on("trades"), advance=30).status.phase == "Degraded"
    decision = driver.step()
    assert (decision.status.phase, decision.status.stage) == ("AwaitingApproval", "full")
    assert "Recovered" in [e.reason for e in decision.events]
    assert condition(decision.status, "Degraded") == "False"


def test_degraded_recovers_to_progressing_when_errors_clear_before_min_duration() -> None:
    driver = Driver()
    driver.to_canary()
    for _ in range(6):
        driver.step(gates="Error", advance=0)
    assert driver.status.phase == "Degraded"
    decision = driver.step()
    assert (decision.status.phase, decision.status.counters.consecutive_errors) == ("Progressing", 0)
    assert [e.reason for e in decision.events] == ["Recovered"]


def test_an_error_resets_only_when_a_cycle_has_none() -> None:
    driver = Driver()
    driver.to_canary()
    for _ in range(4):
        driver.step(gates="Error", advance=0)
    driver.step(advance=0)
    assert driver.status.counters.consecutive_errors == 0
    for _ in range(4):
        assert driver.step(gates="Error", advance=0).status.phase == "Progressing"


def test_inconclusive_before_min_duration_holds_without_counting() -> None:
    driver = Driver()
    driver.to_canary()
    for _ in range(8):
        decision = driver.step(gates={**errors_on(""), "trades": "Inconclusive"}, advance=1)
        assert decision.status.phase == "Progressing" and decision.status.counters.inconclusive == 0
        assert condition(decision.status, "Degraded") == "True"
        assert "holding: inconclusive trades" in decision.status.message


def test_a_missing_gate_is_inconclusive_never_a_pass() -> None:
    driver = Driver()
    driver.to_canary()
    partial = dict.fromkeys(CANARY_GATES[1:], "Pass")  # the first gate has no measurement at all
    for _ in range(3):
        decision = driver.step(gates=partial, advance=30)
        assert decision.status.stage == "canary"
        assert f"holding: inconclusive {CANARY_GATES[0]}" in decision.status.message
    assert driver.status.counters.inconclusive == 2  # the first cycle came before minDuration


def test_inconclusive_beyond_limit_pauses_and_retry_resumes() -> None:
    driver = Driver()
    driver.to_canary()
    driver.run_until(lambda s: s.stage_started_at is not None and driver.now - s.stage_started_at >= timedelta(
        seconds=20), gates="Inconclusive")
    limit = SPEC.stages[1].limits.inconclusive_limit
    for n in range(1, limit + 1):
        decision = driver.step(gates="Inconclusive")
        assert decision.status.phase == "Progressing" and decision.status.counters.inconclusive == n
    decision = driver.step(gates="Inconclusive")
    assert decision.status.phase == "Paused"
    assert [e.reason for e in decision.events] == ["InconclusiveLimit"]
    for _ in range(3):  # a human must look: clean passes do not resume it
        assert driver.step().status.phase == "Paused"
    decision = driver.step(requests=[driver.retry()])
    assert next(e.reason for e in decision.events) == "Progressing"
    assert decision.status.counters.inconclusive == 0
    assert decision.status.phase == "AwaitingApproval"  # resumed, and the gates passed in the same cycle


def test_failure_before_min_duration_does_not_count() -> None:
    driver = Driver()
    driver.to_canary()
    for _ in range(5):
        decision = driver.step(gates="Fail", advance=1)
        assert decision.status.phase == "Progressing" and decision.status.counters.failures == 0


def test_failure_after_min_duration_rolls_back() -> None:
    driver = Driver()
    driver.to_canary()
    driver.step(advance=30)
    decision = driver.step(gates={**errors_on(""), "calibration": "Fail"})
    assert decision.status.phase == "RollingBack"
    assert "calibration failed in stage canary" in decision.status.message
    assert driver.step().status.phase == "RolledBack"
    assert_all_baseline(driver)


def test_failures_within_failure_limit_hold_then_roll_back() -> None:
    def limits(d: dict[str, Any]) -> None:
        d["stages"][1]["limits"]["failureLimit"] = 2

    driver = Driver(make_spec(limits))
    driver.to_canary()
    driver.step(advance=30)
    for n in (1, 2):
        decision = driver.step(gates="Fail")
        assert decision.status.phase == "Progressing" and decision.status.counters.failures == n
    assert driver.step(gates="Fail").status.phase == "RollingBack"


def test_failure_in_watch_rolls_back_the_promotion() -> None:
    driver = Driver()
    driver.to_watching()
    driver.step(advance=30)
    assert driver.step(gates="Fail").status.phase == "RollingBack"
    driver.step()
    assert_all_baseline(driver)


def test_mlflow_unreadable_when_the_canary_should_start_holds_degraded_then_starts() -> None:
    driver = Driver()
    driver.step()
    driver.mlflow_up = False
    decision = driver.step()
    assert (decision.status.phase, decision.status.stage, decision.status.stage_started_at) == (
        "Degraded", "canary", None)
    assert decision.status.actions == []
    assert driver.step().status.actions == []
    driver.mlflow_up = True
    decision = driver.step()
    assert (decision.status.phase, decision.status.live) == ("Progressing", "1/5")
    assert decision.status.versions.champion == dict.fromkeys(MODELS, CHAMPION)


# --- approvals --------------------------------------------------------------------------------

def test_promote_when_not_awaiting_is_rejected_with_a_warning() -> None:
    driver = Driver()
    driver.to_canary()
    request = driver.promote()
    decision = driver.step(requests=[request])
    assert decision.status.phase == "Progressing" and decision.status.approval is None
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "ApprovalRejected")]
    assert request.key in decision.status.handled_requests
    driver.run_until(lambda s: s.phase == "AwaitingApproval")
    assert driver.step(requests=[request]).status.phase == "AwaitingApproval"  # spent: not replayed later


@pytest.mark.parametrize(("stage", "revision"), [("full", "0123456789ab"), ("canary", None), ("", None)])
def test_promote_for_another_stage_or_revision_is_rejected(stage: str, revision: str | None) -> None:
    driver = Driver()
    driver.to_awaiting()
    decision = driver.step(requests=[driver.promote(stage=stage, revision=revision)])
    assert decision.status.phase == "AwaitingApproval" and decision.status.approval is None
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "ApprovalRejected")]
    assert not any(a.reason == "promote full" for a in decision.status.actions)


def test_promote_from_before_a_spec_change_is_rejected() -> None:
    driver = Driver()
    driver.to_awaiting()
    stale = driver.promote()
    driver.edit(lambda d: d["stages"][1].update(minDuration="10s"))
    driver.step()  # restart: revert the canary, back to shadow
    driver.run_until(lambda s: s.phase == "AwaitingApproval")
    decision = driver.step(requests=[stale])
    assert decision.status.phase == "AwaitingApproval"
    assert "ApprovalRejected" in [e.reason for e in decision.events]


def test_a_handled_request_is_not_applied_twice() -> None:
    driver = Driver()
    driver.to_awaiting()
    promote = driver.promote()
    driver.step(requests=[promote])
    promoted = list(driver.status.actions)
    for _ in range(3):
        decision = driver.step(requests=[promote])
        assert decision.events == () and decision.status.actions == promoted
    abort = driver.abort()
    driver.step(requests=[abort])
    driver.step(requests=[abort])
    assert driver.status.phase == "RolledBack"
    driver.step(requests=[abort, driver.retry()])
    driver.run_until(lambda s: s.phase == "AwaitingApproval", requests=[abort, promote])
    assert driver.status.rollback is None  # the old abort did not fire again


def test_promote_while_mlflow_is_unreadable_is_held_not_consumed() -> None:
    driver = Driver()
    driver.to_awaiting()
    request = driver.promote()
    driver.mlflow_up = False
    for _ in range(3):
        decision = driver.step(requests=[request])
        assert decision.status.phase == "AwaitingApproval" and decision.status.approval is None
        assert request.key not in decision.status.handled_requests
        assert "waiting for MLflow" in decision.status.message
        assert not any(a.reason == "promote full" for a in decision.status.actions)
    driver.mlflow_up = True
    decision = driver.step(requests=[request])
    assert decision.status.phase == "Watching" and request.key in decision.status.handled_requests


def test_retry_when_there_is_nothing_to_retry_is_ignored() -> None:
    driver = Driver()
    driver.to_canary()
    decision = driver.step(requests=[driver.retry()])
    assert decision.status.phase == "Progressing"
    assert [e.reason for e in decision.events] == ["RetryIgnored"]


# --- abort ------------------------------------------------------------------------------------

def reach(driver: Driver, where: str) -> None:
    """Drive a rollout to a named non-terminal situation."""
    if where == "shadow":
        driver.step()
    elif where == "canary":
        driver.to_canary()
    elif where == "canary-degraded":
        driver.to_canary()
        for _ in range(6):
            driver.step(gates="Error", advance=0)
        assert driver.status.phase == "Degraded"
    elif where == "canary-paused":
        driver.to_canary()
        driver.edit(lambda d: d.update(paused=True))
        driver.step()
        assert driver.status.phase == "Paused"
    elif where == "awaiting":
        driver.to_awaiting()
    elif where == "watching":
        driver.to_watching()
    else:  # pragma: no cover
        raise ValueError(where)


@pytest.mark.parametrize("where", ["shadow", "canary", "canary-degraded", "canary-paused", "awaiting", "watching"])
def test_abort_at_any_running_phase_rolls_back(where: str) -> None:
    driver = Driver()
    reach(driver, where)
    live = levers_touched(driver.status)
    decision = driver.step(requests=[driver.abort(ticket="INC-7")])
    assert "aborted by alice@cvntrade.io (INC-7)" in decision.status.message
    if not live:  # nothing live: rolled back at once, with nothing to do
        assert decision.status.phase == "RolledBack" and decision.status.actions == []
        assert [e.reason for e in decision.events] == ["RollingBack", "RolledBack"]
    else:
        assert decision.status.phase == "RollingBack"
        assert driver.step().status.phase == "RolledBack"
    assert_all_baseline(driver)


@pytest.mark.parametrize("where", ["completed", "not-promoted"])
def test_abort_of_a_finished_rollout_is_ignored(where: str) -> None:
    driver = Driver()
    if where == "completed":
        driver.to_completed()
    else:
        driver.step()
        driver.step(gates="Fail")
    before = driver.status
    decision = driver.step(requests=[driver.abort()])
    assert decision.status.phase == before.phase and decision.status.actions == before.actions
    assert [e.reason for e in decision.events] == ["AbortIgnored"]


def test_abort_while_rolling_back_changes_nothing() -> None:
    driver = Driver()
    driver.to_canary()
    driver.step(trigger="Fail", fail=True)
    before = driver.status.actions
    decision = driver.step(requests=[driver.abort()], fail=True)
    assert decision.status.phase == "RollingBack"
    assert [a.id for a in decision.status.actions] == [a.id for a in before]
    assert [e.reason for e in decision.events] == ["AbortIgnored"]


def test_retry_after_rollback_reruns_the_failed_stage_from_scratch() -> None:
    driver = Driver()
    driver.to_watching()
    driver.step(requests=[driver.abort()])
    driver.step()
    decision = driver.step(requests=[driver.retry()])
    status = decision.status
    assert (status.phase, status.stage) == ("AwaitingApproval", "full")  # the full stage needs its approval again
    assert status.approval is None and status.rollback is None and status.actions == []
    driver.step(requests=[driver.promote()])
    assert driver.status.phase == "Watching"
    assert driver.status.versions.champion == dict.fromkeys(MODELS, CHAMPION)
    assert driver.world.on_candidate(SPEC) == set(SPEC.symbols)


def test_rollback_now_reverts_an_unfinished_rollout() -> None:
    driver = Driver()
    driver.to_canary()
    decision = rollback_now(driver.spec, driver.status, "rollout deleted before it completed", driver.now)
    assert decision.status.phase == "RollingBack"
    assert revert_of(pending_actions(decision.status)) == expected_revert(
        driver, ["configMap", "mlflowAlias", "featureArtifact"])
    again = rollback_now(driver.spec, decision.status, "again", driver.now)
    assert again.status == decision.status and again.events == ()


# --- spec edits -------------------------------------------------------------------------------

@pytest.mark.parametrize("edit", [
    lambda d: d.update(description="reworded"),
    lambda d: d["analysis"].update(interval="5s"),
    lambda d: d.update(paused=False),
    lambda d: d["accountability"].update(owner="carol@cvntrade.io"),
])
def test_cosmetic_edits_keep_the_revision_and_apply_in_place(edit: Any) -> None:
    driver = Driver()
    driver.to_canary()
    before = driver.status
    driver.edit(edit)
    decision = driver.step()
    assert decision.status.revision == before.revision
    assert (decision.status.phase, decision.status.stage) == ("Progressing", "canary")
    assert decision.status.actions == before.actions
    assert decision.status.observed_generation == 2


def test_changing_the_candidate_mid_canary_reverts_with_the_recorded_keys_and_restarts() -> None:
    driver = Driver()
    driver.to_canary()
    old_revision = driver.status.revision

    def new_change(d: dict[str, Any]) -> None:
        d["change"].update(key="CVN_OBJECTIVE", candidate="focal:gamma=3,alpha=0.25")

    driver.edit(new_change)
    done = len(driver.status.actions)
    decision = driver.step()
    status = decision.status
    assert status.phase == "RollingBack" and status.revision != old_revision
    assert status.rollback is not None and status.rollback.then == "restart"
    assert [e.reason for e in decision.events] == ["SpecChanged", "RollingBack"]
    [revert, *_] = new_actions(driver, done)
    assert revert.flags == dict.fromkeys(ALL_KEYS, BASELINE)  # the old keys, from the forward action's undo
    assert driver.world.flags[BTC_KEY] == BASELINE
    decision = driver.step()
    assert (decision.status.phase, decision.status.stage, decision.status.live) == ("Progressing", "shadow", "0/5")
    assert decision.status.actions == [] and decision.status.rollback is None
    driver.step()
    assert driver.status.actions[0].flags == {"CVN_OBJECTIVE__BTCUSDC": "focal:gamma=3,alpha=0.25"}


def test_a_restart_after_a_revert_begins_a_first_canary_with_the_model_versions() -> None:
    """Without a shadow stage first, the restart begins a lever stage at once: the cycle that ends the revert
    must have read MLflow, or the canary cannot record its versions and holds Degraded."""
    driver = Driver()
    driver.to_canary()
    driver.edit(lambda d: d.update(stages=d["stages"][1:]))  # no shadow any more: the canary comes first
    driver.step(advance=0)
    reverted = driver.status
    assert reverted.phase == "RollingBack" and reverted.rollback is not None and reverted.rollback.then == "restart"
    assert not pending_actions(reverted) and driver.world.on_candidate(driver.spec) == set()
    plan = plan_measurements(driver.spec, reverted, driver.now)
    assert plan.versions is True and (plan.gates, plan.triggers) == (None, None)
    restarted = decide(driver.spec, reverted, Observation(versions=driver.world.versions(driver.spec)), [],
                       driver.now, driver.generation).status
    assert (restarted.phase, restarted.stage, restarted.stage_started_at) == ("Progressing", "canary", driver.now)
    assert [a.flags for a in pending_actions(restarted)] == [{BTC_KEY: CANDIDATE_FLAG}]
    assert restarted.versions.champion == dict.fromkeys(MODELS, CHAMPION)
    stuck = reverted.model_copy(update={"actions": [a.model_copy(update={"state": "Pending"}) for a in reverted.actions]})
    assert plan_measurements(driver.spec, stuck, driver.now).versions is False  # the revert is not over yet
    approved_first = driver.spec.model_copy(update={"stages": [driver.spec.stages[0].model_copy(
        update={"approval": driver.spec.stages[0].approval.model_copy(update={"required": True})})]})
    assert plan_measurements(approved_first, reverted, driver.now).versions is False  # it awaits a promote first


def test_editing_what_is_rolled_out_before_anything_is_live_restarts_at_once() -> None:
    driver = Driver()
    driver.step()
    driver.edit(lambda d: d["stages"][1].update(symbols=["ETHUSDC"]))
    decision = driver.step()
    assert (decision.status.phase, decision.status.stage) == ("Progressing", "shadow")
    assert decision.status.actions == [] and decision.status.revision == revision_of(driver.spec)
    driver.step()
    assert driver.status.actions[0].flags == {"CVN_LOSS_FUNCTION__ETHUSDC": CANDIDATE_FLAG}


@pytest.mark.parametrize("ended", [False, True])
def test_an_edit_that_restarts_at_once_begins_a_first_canary_with_the_model_versions(ended: bool) -> None:
    """Nothing live (the shadow running, or a rollout that ended NotPromoted): the edit's own cycle enters
    the first stage, so it reads MLflow when that stage is a lever stage without approval."""
    driver = Driver()
    driver.step()
    if ended:
        driver.step(gates="Fail")
        assert driver.status.phase == "NotPromoted"
    driver.edit(lambda d: d.update(stages=d["stages"][1:]))
    plan = plan_measurements(driver.spec, driver.status, driver.now)
    assert (plan.gates, plan.triggers, plan.versions) == (None, None, True)
    decision = driver.step()
    assert (decision.status.phase, decision.status.stage) == ("Progressing", "canary")
    assert driver.world.on_candidate(driver.spec) == {"BTCUSDC"}


def test_abort_during_the_revert_of_a_spec_change_stops_instead_of_restarting() -> None:
    driver = Driver()
    driver.to_canary()
    driver.edit(lambda d: d["change"].update(candidate="focal:gamma=3,alpha=0.25"))
    driver.step(fail=True)  # the revert is stuck
    assert driver.status.rollback is not None and driver.status.rollback.then == "restart"
    decision = driver.step(requests=[driver.abort()])
    assert decision.status.phase == "RollingBack"
    assert decision.status.rollback is not None and decision.status.rollback.then == "stop"
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "Aborted")]
    decision = driver.step()
    assert decision.status.phase == "RolledBack"
    assert "spec changed mid-rollout; aborted by alice@cvntrade.io (CHG-1)" in decision.status.message
    assert driver.step().status.phase == "RolledBack"  # not restarted
    assert_all_baseline(driver)


def test_editing_a_finished_rollout_starts_again_from_shadow() -> None:
    driver = Driver()
    driver.step()
    driver.step(gates="Fail")
    driver.edit(lambda d: d["change"].update(candidate="focal:gamma=3,alpha=0.25"))
    decision = driver.step()
    assert (decision.status.phase, decision.status.stage, decision.status.failed_evidence) == (
        "Progressing", "shadow", "")


# --- crash safety -----------------------------------------------------------------------------

def test_a_forward_action_never_marked_done_is_still_reverted_on_abort() -> None:
    driver = Driver()
    driver.step()
    driver.step(fail=True)  # planned, persisted, then the operator died before marking it
    [forward] = driver.status.actions
    assert forward.state == "Pending"
    driver.world.apply(forward)  # ...but the ConfigMap patch had landed
    decision = driver.step(requests=[driver.abort()], fail=True)
    status = decision.status
    assert status.phase == "RollingBack"
    assert forward.id not in [a.id for a in status.actions if a.reason != "rollback"]  # superseded
    revert = [a for a in status.actions if a.reason == "rollback"]
    assert revert[0].flags == forward.undo
    driver.step()
    assert driver.step().status.phase == "RolledBack"
    assert_all_baseline(driver)


def test_pending_promotion_actions_are_reverted_on_abort() -> None:
    driver = Driver()
    driver.to_awaiting()
    driver.step(requests=[driver.promote()], fail=True)
    assert pending_actions(driver.status)[0].reason == "promote full"
    driver.world.apply(pending_actions(driver.status)[0])  # the patch landed, the mark did not
    driver.step(requests=[driver.abort()])
    driver.run_until(lambda s: s.phase == "RolledBack")
    assert_all_baseline(driver)


def test_a_stale_completion_of_a_superseded_action_cannot_complete_the_revert() -> None:
    """Action ids are never reused, so a late mark of the superseded forward action marks nothing else."""
    driver = Driver()
    driver.step()
    driver.step(fail=True)
    [forward] = driver.status.actions
    decision = decide(driver.spec, driver.status, Observation(), [driver.abort()], driver.now, 1)
    assert forward.id not in [a.id for a in decision.status.actions]
    stale = mark_action(decision.status, forward.id, driver.now)
    assert pending_actions(stale) == pending_actions(decision.status)


def test_decide_is_pure() -> None:
    driver = Driver()
    driver.to_awaiting()
    before = driver.status.model_dump()
    observation, request = driver.observe("Pass", "Pass"), driver.promote()
    first = decide(driver.spec, driver.status, observation, [request], driver.now, 1)
    assert first.status.phase == "Watching"
    assert driver.status.model_dump() == before
    again = decide(driver.spec, driver.status, observation, [request], driver.now, 1)
    assert again == first  # deterministic


# --- sunset -----------------------------------------------------------------------------------

def test_sunset_due_after_promotion_gives_one_condition_and_one_warning() -> None:
    driver = Driver()
    driver.to_completed()
    sunset = driver.status.sunset_at
    assert sunset is not None and condition(driver.status, "SunsetDue") is None
    while driver.now < sunset:
        driver.step(advance=600)
    since = len(driver.events)
    driver.step(advance=600)
    assert condition(driver.status, "SunsetDue") == "True"
    assert driver.events[since:] == [Event("Warning", "SunsetDue", driver.events[since].message)]
    assert "alice@cvntrade.io must accept or revisit" in driver.events[since].message
    for _ in range(5):
        assert driver.step(advance=3600).events == ()
    assert driver.status.phase == "Completed"


def test_editing_a_completed_rollout_changes_nothing_and_says_so_once() -> None:
    driver = Driver()
    driver.to_completed()
    driver.step(advance=7200)
    driver.step()
    assert condition(driver.status, "SunsetDue") == "True"
    revision, actions = driver.status.revision, list(driver.status.actions)
    since = len(driver.events)
    driver.edit(lambda d: d["change"].update(candidate="focal:gamma=3,alpha=0.25"))
    driver.step()
    driver.step(advance=60)
    assert driver.status.phase == "Completed" and driver.status.revision == revision
    assert driver.status.actions == actions, "a completed change is never restarted or reverted by an edit"
    assert driver.reasons(since).count("SpecChangeIgnored") == 1
    assert condition(driver.status, "SunsetDue") == "True"


def test_a_request_to_a_completed_rollout_edited_since_is_answered_once() -> None:
    """Refused (there is nothing to abort, approve or retry) but handled: the shell cycles for an unhandled
    request on every tick, so one left unanswered would cost a read a second for ever."""
    driver = Driver()
    driver.to_completed()
    driver.edit(lambda d: d["change"].update(candidate="focal:gamma=3,alpha=0.25"))
    driver.step()
    abort = driver.abort()
    since = len(driver.events)
    driver.step(requests=[abort])
    assert driver.status.phase == "Completed" and is_handled(driver.status, abort)
    assert driver.reasons(since) == ["AbortIgnored"]
    assert driver.status.message.startswith("completed: edits do not restart")
    before = driver.status
    assert driver.step(requests=[abort]).status == before  # answered once


# --- invalid specs, small helpers ---------------------------------------------------------------

def test_invalid_sets_the_phase_and_a_condition_idempotently() -> None:
    driver = Driver()
    driver.to_canary()
    first = invalid(driver.status, "spec.stages: broken", driver.now, 3)
    assert (first.status.phase, first.status.message, first.status.observed_generation) == (
        "Invalid", "spec.stages: broken", 3)
    assert condition(first.status, "Invalid") == "True"
    assert [(e.type, e.reason) for e in first.events] == [("Warning", "InvalidSpec")]
    assert first.status.actions == driver.status.actions  # live levers left alone
    second = invalid(first.status, "spec.stages: broken", driver.now + timedelta(seconds=5), 3)
    assert second.events == () and second.status == first.status
    other = invalid(first.status, "spec.symbols: broken", driver.now, 4)
    assert len(other.events) == 1 and len(other.status.history) == len(first.status.history) + 1


def test_a_fixed_spec_after_invalid_reverts_and_restarts() -> None:
    driver = Driver()
    driver.to_canary()
    driver.status = invalid(driver.status, "broken", driver.now, 2).status
    decision = driver.step()
    assert decision.status.phase == "RollingBack" and condition(decision.status, "Invalid") == "False"
    assert driver.step().status.stage == "shadow"
    assert_all_baseline(driver)


def test_an_invalid_edit_mid_canary_keeps_guarding_and_a_breach_still_rolls_back() -> None:
    driver = Driver()
    driver.to_canary()
    stage_started = driver.status.stage_started_at
    driver.refuse()
    decision = driver.step()
    status = decision.status
    assert (status.phase, status.stage, status.stage_started_at) == ("Progressing", "canary", stage_started)
    assert condition(status, "Invalid") == "True"
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "InvalidSpec")]
    assert "comparison.query" in decision.events[0].message and "comparison.query" in status.message
    plan = plan_measurements(driver.spec, status, refused=True)
    assert (plan.gates, plan.triggers.name, plan.versions) == (None, "canary", False)  # type: ignore[union-attr]
    for _ in range(5):  # long past minDuration with every gate passing: nothing progresses
        assert driver.step(advance=60).events == ()
    assert (driver.status.stage, driver.status.phase) == ("canary", "Progressing")
    decision = driver.step(trigger="Fail")
    assert decision.status.phase == "RollingBack" and condition(decision.status, "Invalid") == "True"
    driver.run_until(lambda s: s.phase == "RolledBack")
    assert_all_baseline(driver)


def test_undoing_a_refused_edit_resumes_where_the_rollout_stood() -> None:
    driver = Driver()
    driver.to_canary()
    driver.refuse()
    driver.step(advance=60)
    driver.accept()
    decision = driver.step()
    assert condition(decision.status, "Invalid") == "False"
    assert "SpecValid" in [e.reason for e in decision.events]
    # The canary's clock ran on while held; its gates pass now, so it goes on (nothing reverted, nothing lost).
    assert decision.status.phase == "AwaitingApproval" and "StagePassed" in [e.reason for e in decision.events]
    assert not any(a.reason == "rollback" for a in decision.status.actions)
    assert driver.world.on_candidate(SPEC) == {"BTCUSDC"}


def test_under_a_refused_spec_only_abort_is_honoured() -> None:
    driver = Driver()
    driver.to_awaiting()
    driver.refuse()
    decision = driver.step(requests=[driver.promote(), driver.retry()])
    assert decision.status.phase == "AwaitingApproval" and decision.status.approval is None
    assert [e.reason for e in decision.events] == ["InvalidSpec", "RequestRejected", "RequestRejected"]
    assert driver.world.on_candidate(SPEC) == {"BTCUSDC"}
    driver.step(requests=[driver.abort()])
    driver.run_until(lambda s: s.phase == "RolledBack")
    assert_all_baseline(driver)


def test_a_pending_revert_goes_on_under_a_refused_spec_but_no_forward_action() -> None:
    driver = Driver()
    driver.to_awaiting()
    driver.step(requests=[driver.promote()], fail=True)  # the promotion's flag patch is stuck
    driver.refuse()
    for _ in range(5):
        driver.step(advance=30)
    assert pending_actions(driver.status)[0].reason == "promote full"
    assert driver.world.on_candidate(SPEC) == {"BTCUSDC"}, "nothing moves forward under a refused spec"
    driver.step(trigger="Fail", fail=True)  # a breach: the revert is planned, and stuck at first
    assert driver.status.phase == "RollingBack"
    driver.run_until(lambda s: s.phase == "RolledBack")
    assert_all_baseline(driver)
    assert condition(driver.status, "Invalid") == "True"


def test_a_revert_meant_to_restart_stops_under_a_refused_spec() -> None:
    driver = Driver()
    driver.to_canary()
    driver.edit(lambda d: d["change"].update(candidate="focal:gamma=3,alpha=0.25"))
    driver.step(fail=True)
    assert driver.status.rollback is not None and driver.status.rollback.then == "restart"
    driver.refuse()
    driver.run_until(lambda s: s.phase == "RolledBack")
    assert driver.status.rollback is not None and driver.status.rollback.then == "stop"
    assert_all_baseline(driver)


def test_delete_of_a_refused_live_rollout_reverts_under_the_last_valid_spec() -> None:
    driver = Driver()
    driver.to_canary()
    driver.refuse()
    driver.step()
    decision = rollback_now(driver.spec, driver.status, "rollout deleted before it completed", driver.now)
    assert decision.status.phase == "RollingBack"
    assert next(a.flags for a in pending_actions(decision.status)) == dict.fromkeys(ALL_KEYS, BASELINE)


def test_gate_verdict_is_the_worst_and_nothing_is_inconclusive() -> None:
    def of(*verdicts: str) -> str:
        return gate_verdict(measurement("g", v, START) for v in verdicts)  # type: ignore[arg-type]

    assert of() == "Inconclusive"
    assert of("Pass", "Pass") == "Pass"
    assert of("Pass", "Inconclusive") == "Inconclusive"
    assert of("Inconclusive", "Error", "Pass") == "Error"
    assert of("Error", "Fail", "Pass") == "Fail"


def test_revision_ignores_cosmetic_fields_only() -> None:
    base = revision_of(SPEC)
    assert revision_of(make_spec(lambda d: d.update(description="x", paused=True))) == base
    assert revision_of(make_spec(lambda d: d["analysis"].update(interval="1m"))) == base
    assert revision_of(make_spec(lambda d: d["rollback"].update(order=["configMap"]))) != base
    assert revision_of(make_spec(lambda d: d["models"].update(strategy="meanrev"))) != base
