"""The two cadences, pure: gates every `interval`, rollback triggers every `triggerInterval` in between.

The shell measures what `plan_measurements` asks for at the cycle's time; a cycle with triggers and
no gates is "no gate news" for `decide`; a breach reverts once, whenever it is seen.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from engine_driver import Driver, make_spec, measurement

from modelrollout.engine import (
    Decision,
    MeasurementPlan,
    cycle_due,
    decide,
    pending_actions,
    plan_measurements,
    retry_delay,
    schedule,
)
from modelrollout.observation import Observation
from modelrollout.spec import AnalysisSpec, ModelRolloutSpec
from modelrollout.status import ModelRolloutStatus, Verdict


def production_cadence(spec: dict[str, Any]) -> None:
    """The fast example at the plan's 60 s gate interval, triggers at the default; the canary runs 10 minutes."""
    spec["analysis"] = {"interval": "60s"}
    spec["stages"][1]["minDuration"] = "10m"


SPEC = make_spec(production_cadence)


def at_canary() -> Driver:
    """The canary live, right after a gate cycle: the shell's clock from here on is the test's."""
    driver = Driver(SPEC)
    driver.to_canary()
    driver.step(advance=0)  # one gate cycle of the canary: gates and triggers measured and shown
    return driver


def cycle(driver: Driver, after: float, *, trigger: Verdict = "Pass", gates: Verdict = "Pass",
          checked: datetime | None = None) -> Decision:
    """One shell cycle `after` seconds on: measure what the plan asks for at that time, decide, carry out."""
    driver.now += timedelta(seconds=after)
    plan = plan_measurements(driver.spec, driver.status, driver.now, triggers_checked_at=checked)
    stage_gates = [] if plan.gates is None else plan.gates.gates
    triggers = None if plan.triggers is None else tuple(
        measurement(rule.name, trigger, driver.now, kind="trigger", symbol=symbol, value=-1.0 if trigger == "Fail" else 1.0)
        for rule in plan.triggers.rollback_triggers for symbol in driver.spec.stage_symbols(plan.triggers))
    observation = Observation(gates=None if plan.gates is None else tuple(
        measurement(g.name, gates, driver.now, kind=g.kind) for g in stage_gates), triggers=triggers)
    return driver.step(observation=observation, advance=0)


def test_trigger_interval_defaults_to_5s_or_the_interval_when_shorter_and_may_not_exceed_it() -> None:
    assert AnalysisSpec(interval="60s").trigger_period() == timedelta(seconds=5)
    assert AnalysisSpec(interval="2s").trigger_period() == timedelta(seconds=2)
    assert AnalysisSpec(interval="60s", trigger_interval="500ms").trigger_period() == timedelta(milliseconds=500)
    with pytest.raises(ValueError, match="triggerInterval"):
        AnalysisSpec(interval="60s", trigger_interval="2m")


def test_the_plan_measures_gates_on_the_gate_interval_and_triggers_on_theirs() -> None:
    driver = at_canary()
    status, evaluated = driver.status, driver.now
    assert status.last_evaluated_at == status.last_triggers_evaluated_at == evaluated

    def plan_at(seconds: float, checked: float | None = None) -> tuple[str | None, str | None]:
        plan = plan_measurements(SPEC, status, evaluated + timedelta(seconds=seconds),
                                 triggers_checked_at=None if checked is None else evaluated + timedelta(seconds=checked))
        return (plan.gates.name if plan.gates else None), (plan.triggers.name if plan.triggers else None)

    assert plan_at(4.9) == (None, None)
    assert plan_at(5) == (None, "canary")  # the trigger interval: triggers alone, one query round
    assert plan_at(7, checked=5) == (None, None)  # a quiet check the shell remembers moves the next one on
    assert plan_at(10, checked=5) == (None, "canary")
    assert plan_at(60, checked=58) == ("canary", "canary")  # the gate cycle measures the triggers with the gates
    assert cycle_due(SPEC, status, evaluated + timedelta(seconds=5)) == "triggers"
    assert cycle_due(SPEC, status, evaluated + timedelta(seconds=60)) == "cycle"
    assert cycle_due(SPEC, status, evaluated + timedelta(seconds=3)) is None
    assert plan_measurements(SPEC, status, evaluated + timedelta(seconds=5)).versions is False  # no progression


def test_a_trigger_check_that_finds_nothing_new_changes_nothing() -> None:
    driver = at_canary()
    for _ in range(11):  # 55 s of checks every 5 s, each remembered by the shell, none written
        before = driver.status
        decision = cycle(driver, 5, checked=driver.now)
        assert decision.status == before and decision.events == ()
    assert driver.status.last_evaluated_at == driver.status.last_triggers_evaluated_at


def test_a_trigger_only_cycle_past_the_minimum_is_no_gate_news() -> None:
    """Failing gates count once per gate cycle, never per trigger check; a passing stage ends on a gate cycle."""
    spec = make_spec(lambda s: (production_cadence(s), s["stages"][1].update(minDuration="0s")))
    driver = Driver(spec)
    driver.to_canary()
    driver.step(gates="Fail", advance=0)  # failureLimit 0: the first counted failure rolls back...
    assert driver.status.phase == "RollingBack"
    driver = Driver(spec)
    driver.to_canary()
    before = driver.status
    decision = cycle(driver, 5, gates="Fail", checked=driver.now - timedelta(seconds=5))
    assert decision.status.phase == "Progressing" and decision.status.counters == before.counters
    assert decision.status.gates == before.gates and decision.status.stage == "canary"  # ...not a trigger check
    assert decision.status.last_evaluated_at == before.last_evaluated_at


def test_a_changed_trigger_verdict_is_shown_and_nothing_else_moves() -> None:
    driver = at_canary()
    before = driver.status
    decision = cycle(driver, 5, trigger="Error")
    after = decision.status
    assert {t.verdict for t in after.triggers} == {"Error"} and after.last_triggers_evaluated_at == driver.now
    assert after.model_copy(update={"triggers": before.triggers,
                                    "last_triggers_evaluated_at": before.last_triggers_evaluated_at}) == before
    assert decision.events == ()


def test_a_breach_seen_between_gate_cycles_reverts_the_configmap_at_once() -> None:
    driver = at_canary()
    decision = cycle(driver, 5, trigger="Fail")
    assert decision.status.phase == "RollingBack"
    assert decision.status.rollback is not None and "breached" in decision.status.rollback.reason
    assert all(driver.world.flag(SPEC, s) == SPEC.change.baseline for s in SPEC.symbols)  # carried out this cycle


def test_nothing_is_reverted_twice() -> None:
    """A breach seen again while reverting, or after, plans nothing more."""
    driver = at_canary()
    decision = driver.step(trigger="Fail", fail=True, advance=0)  # the revert's first try fails: still RollingBack
    reverts = [a.id for a in decision.status.actions if a.reason == "rollback"]
    assert decision.status.phase == "RollingBack" and reverts and pending_actions(driver.status)
    breach = tuple(measurement(t.name, "Fail", driver.now, kind="trigger", symbol="BTCUSDC", value=-1.0)
                   for t in SPEC.stages[1].rollback_triggers)
    again = decide(SPEC, driver.status, Observation(triggers=breach), [], driver.now, driver.generation)
    assert [a.id for a in again.status.actions] == [a.id for a in driver.status.actions]
    assert again.status.rollback == driver.status.rollback and not [e for e in again.events if e.reason == "RollingBack"]
    assert plan_measurements(SPEC, driver.status, driver.now + timedelta(hours=1)).triggers is None
    assert schedule(SPEC, driver.status).triggers_at is None
    driver.now += timedelta(seconds=10)
    driver.run_until(lambda s: s.phase == "RolledBack")
    done = decide(SPEC, driver.status, Observation(triggers=breach), [], driver.now, driver.generation)
    assert done.status == driver.status and done.events == ()


def test_a_revert_whose_last_action_is_done_is_a_cycle_due_now() -> None:
    """What the shell asks after carrying out a cycle's actions: the revert then ends in the same reconcile."""
    driver = at_canary()
    driver.step(trigger="Fail", fail=True, advance=0)  # the revert is planned; its first try fails
    assert driver.status.phase == "RollingBack" and pending_actions(driver.status)
    assert cycle_due(SPEC, driver.status, driver.now) is None  # the failed try waits for its next
    driver.now += retry_delay(1)
    assert cycle_due(SPEC, driver.status, driver.now) == "cycle"
    driver.carry_out()
    reverted = driver.status
    assert reverted.phase == "RollingBack" and not pending_actions(reverted)
    assert cycle_due(SPEC, reverted, driver.now) == "cycle"
    assert plan_measurements(SPEC, reverted, driver.now) == MeasurementPlan(gates=None, triggers=None, versions=False)
    ended = decide(SPEC, reverted, Observation(), [], driver.now, driver.generation)  # what that plan measures
    assert ended.status.phase == "RolledBack"


def test_a_sequential_trigger_keeps_the_trigger_cadence() -> None:
    spec = make_spec(lambda s: (production_cadence(s), s["stages"][1].update(rollbackTriggers=[{
        "name": "worse", "kind": "sequential", "sequential": {
            "countQuery": 'c{variant="{variant}"}[{window}]', "sumQuery": 's{variant="{variant}"}[{window}]',
            "sumSquaresQuery": 'q{variant="{variant}"}[{window}]', "against": "baseline"}}])))
    driver = Driver(spec)
    driver.to_canary()
    driver.step(advance=0)
    assert schedule(spec, driver.status).trigger_period == timedelta(seconds=5)
    plan = plan_measurements(spec, driver.status, driver.now + timedelta(seconds=5))
    assert plan.gates is None and plan.triggers is not None and plan.triggers.rollback_triggers[0].kind == "sequential"


def test_a_restarted_operator_checks_the_triggers_at_once() -> None:
    """The shell's memory is gone; the status' last written check is older than the trigger interval."""
    driver = at_canary()
    restarted = ModelRolloutStatus.model_validate(driver.status.model_dump(mode="json", by_alias=True))
    assert cycle_due(SPEC, restarted, driver.now + timedelta(seconds=30)) == "triggers"


def spec_with(interval: str, trigger_interval: str | None) -> ModelRolloutSpec:
    return make_spec(lambda s: s.update(analysis={"interval": interval} | (
        {"triggerInterval": trigger_interval} if trigger_interval else {})))


@pytest.mark.parametrize(("interval", "trigger_interval", "period"), [
    ("60s", None, 5), ("60s", "1s", 1), ("2s", None, 2), ("60s", "60s", 60)])
def test_the_schedule_follows_the_spec(interval: str, trigger_interval: str | None, period: float) -> None:
    assert schedule(spec_with(interval, trigger_interval), ModelRolloutStatus()).trigger_period == \
        timedelta(seconds=period)


# --- a finished rollout -------------------------------------------------------------------------

FAST = make_spec()  # the example as written: 2 s gate interval, sunset 1 h after promotion
YEAR = timedelta(days=365)


def condition(status: ModelRolloutStatus, type_: str) -> str | None:
    return next((c.status for c in status.conditions if c.type == type_), None)


def rolled_back_in_canary() -> Driver:
    driver = Driver(FAST)
    driver.to_canary()
    driver.step(trigger="Fail")
    driver.run_until(lambda s: s.phase == "RolledBack")
    return driver


def rolled_back_after_promotion() -> Driver:
    """Rolled back from the full stage: its sunset time stays recorded, and it is no reason to cycle."""
    driver = Driver(FAST)
    driver.to_watching()
    driver.step(trigger="Fail")
    driver.run_until(lambda s: s.phase == "RolledBack")
    assert driver.status.sunset_at is not None
    return driver


def not_promoted() -> Driver:
    driver = Driver(FAST)
    driver.step()
    driver.step(gates="Fail")
    return driver


def quiet(status: ModelRolloutStatus, now: datetime, generation: int = 1) -> Decision:
    """A cycle with no news: nothing measured (what the plan of a finished rollout asks for), no request."""
    return decide(FAST, status, Observation(), [], now, generation)


@pytest.mark.parametrize("finish", [rolled_back_in_canary, rolled_back_after_promotion, not_promoted])
def test_a_rollout_that_ended_unpromoted_is_never_due_by_time(finish: Any) -> None:
    driver = finish()
    ended = driver.status
    assert ended.phase in ("RolledBack", "NotPromoted") and not pending_actions(ended)
    timing = schedule(FAST, ended)
    assert (timing.gates_at, timing.actions_at, timing.triggers_at) == (None, None, None)
    for later in (driver.now, driver.now + timedelta(seconds=2), driver.now + YEAR):
        assert timing.work(later) is None and cycle_due(FAST, ended, later) is None
        assert plan_measurements(FAST, ended, later) == MeasurementPlan(gates=None, triggers=None, versions=False)
    decision = quiet(ended, driver.now + YEAR, driver.generation)
    assert decision.status == ended and decision.events == ()  # the shell writes nothing


def test_a_completed_rollout_is_due_once_at_its_sunset() -> None:
    driver = Driver(FAST)
    driver.to_completed()
    done, sunset = driver.status, driver.status.sunset_at
    assert sunset is not None and not pending_actions(done) and condition(done, "SunsetDue") is None
    assert done.message == f"fully promoted; sunset review due {sunset:%Y-%m-%d}"  # the champion move is recorded
    evaluated = done.last_evaluated_at
    timing = schedule(FAST, done)
    assert (timing.gates_at, timing.triggers_at) == (None, None)
    assert timing.work(sunset - timedelta(seconds=1)) is None and timing.work(sunset) == "cycle"
    assert quiet(done, sunset - timedelta(seconds=1)).status == done
    passed = quiet(done, sunset)
    assert condition(passed.status, "SunsetDue") == "True"
    assert [(e.type, e.reason) for e in passed.events] == [("Warning", "SunsetDue")]
    assert passed.status.last_evaluated_at == evaluated  # nothing was evaluated: the last gate cycle stays shown
    assert schedule(FAST, passed.status).work(sunset + timedelta(seconds=1)) is None
    assert cycle_due(FAST, passed.status, sunset + YEAR) is None
    assert quiet(passed.status, sunset + YEAR).status == passed.status


def test_a_completed_rollout_is_due_for_its_champion_moves_tries_and_then_rests() -> None:
    driver = Driver(FAST)
    driver.to_watching()
    driver.run_until(lambda s: s.phase == "Completed", fail=lambda a: a.type != "setFlag")  # MLflow down
    stuck = driver.status
    first = pending_actions(stuck)[0]
    assert first.next_attempt_at is not None and "recording the new champion in MLflow" in stuck.message
    timing = schedule(FAST, stuck)
    assert (timing.gates_at, timing.triggers_at) == (None, None)
    assert timing.work(first.next_attempt_at - timedelta(milliseconds=1)) is None
    assert timing.work(first.next_attempt_at) == "cycle"
    driver.now = first.next_attempt_at
    driver.carry_out(fail=True)  # still down: the next try backs off
    again = pending_actions(driver.status)[0]
    assert again.attempts == 2 and again.next_attempt_at == driver.now + retry_delay(2)
    assert cycle_due(FAST, driver.status, driver.now) is None
    assert cycle_due(FAST, driver.status, again.next_attempt_at) == "cycle"
    driver.now = again.next_attempt_at
    driver.carry_out()  # MLflow is back: every move is done, and the status says so without another cycle
    done = driver.status
    assert not pending_actions(done) and done.message == f"fully promoted; sunset review due {done.sunset_at:%Y-%m-%d}"
    assert quiet(done, driver.now).status == done
    assert cycle_due(FAST, done, driver.now + timedelta(minutes=59)) is None


@pytest.mark.parametrize("news", ["ignored edit", "refused edit", "champion move stuck"])
def test_the_sunset_is_said_once_whatever_else_holds_a_completed_rollout(news: str) -> None:
    """An edit the completed rollout ignores, one the operator refuses, a champion move that keeps failing: the
    cycle due at the sunset still says it passed, so it is not due again on every tick."""
    driver = Driver(FAST)
    if news == "champion move stuck":
        driver.to_watching()
        driver.run_until(lambda s: s.phase == "Completed", fail=lambda a: a.type != "setFlag")
    else:
        driver.to_completed()
    spec, refused = FAST, ""
    if news == "ignored edit":
        driver.edit(lambda d: d["change"].update(candidate="focal:gamma=3,alpha=0.25"))
        spec = driver.spec
        driver.step()
    elif news == "refused edit":
        driver.refuse()
        refused = driver.refused
        driver.step()
    status, sunset = driver.status, driver.status.sunset_at
    assert status.phase == "Completed" and sunset is not None and condition(status, "SunsetDue") is None
    assert schedule(spec, status).work(sunset) == "cycle"
    passed = decide(spec, status, Observation(), [], sunset, driver.generation, refused=refused).status
    assert condition(passed, "SunsetDue") == "True"
    assert schedule(spec, passed).sunset_at is None


def test_a_retry_after_a_rollback_starts_the_gate_interval_like_a_new_rollout() -> None:
    """A finished rollout keeps no gate interval; the new attempt's first gate cycle comes an interval after it
    begins, as a new rollout's does, not on the next tick because the last one was long ago."""
    driver = rolled_back_in_canary()
    later = driver.now + YEAR
    retried = decide(FAST, driver.status, Observation(versions=driver.world.versions(FAST)), [driver.retry()], later,
                     driver.generation).status
    assert (retried.phase, retried.stage, retried.last_evaluated_at) == ("Progressing", "canary", later)
    timing = schedule(FAST, retried)  # (its canary's switch is pending: that cycle is due at once)
    assert not timing.gates_due(later + timedelta(seconds=1)) and timing.gates_due(later + timedelta(seconds=2))
