"""The schedule: when a rollout needs the operator, and what to measure when it does.

The one "is a cycle due" rule (`Schedule`), from spec and status alone, so that the timer tick, the
reconcile and the measurement plan cannot disagree about it. And the plan of what to measure
(`plan_measurements`), so that the shell never queries what the engine will not use: Prometheus
and MLflow are the slow, rate-limited part of a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from modelrollout.engine.levers import levers_touched, pending_actions
from modelrollout.engine.position import current_stage, guarded_stage, revision_of
from modelrollout.engine.requests import is_handled
from modelrollout.observation import Request
from modelrollout.spec import ModelRolloutSpec, Stage, parse_duration, stage_duration
from modelrollout.status import FINISHED_PHASES, TERMINAL_PHASES, ModelRolloutStatus

Work = Literal["cycle", "triggers"]
_ALREADY = datetime.min.replace(tzinfo=UTC)  # a due time that has always come


@dataclass(frozen=True)
class Schedule:
    """When a rollout next needs the operator, from its spec and status alone: the one "is a cycle due" rule.

    Without the clock, so the shell can keep it between timer ticks instead of parsing the object on every
    tick. Two cadences: a full cycle (the gate interval; an action's next try; the end of a revert; a Completed
    rollout's sunset) and a trigger check (`triggerInterval`, only while a live stage has rollback triggers).
    A finished rollout has neither: nothing is measured, so a cycle on the interval would only rewrite its
    status, and hundreds of finished rollouts would spend the apiserver's write budget. A trigger check that
    finds nothing new is not written (status writes are the apiserver's budget), so the shell remembers the
    time of its last one and passes it as `triggers_checked_at`; after a restart the triggers are checked at once.
    """

    gates_at: datetime | None  # the gate interval comes (None: never by time, e.g. while reverting)
    actions_at: datetime | None  # an action's next try, or the end of a revert
    triggers_at: datetime | None  # the trigger interval comes by the status (None: no live trigger)
    trigger_period: timedelta
    sunset_at: datetime | None = None  # a Completed rollout's sunset, until a cycle has said it passed (SunsetDue)

    def gates_due(self, now: datetime) -> bool:
        return self.gates_at is not None and now >= self.gates_at

    def triggers_due(self, now: datetime, triggers_checked_at: datetime | None = None) -> bool:
        if self.triggers_at is None:
            return False
        due = self.triggers_at
        if triggers_checked_at is not None:
            due = max(due, triggers_checked_at + self.trigger_period)
        return now >= due

    def work(self, now: datetime, triggers_checked_at: datetime | None = None) -> Work | None:
        """"cycle" (measure what is due, decide, act), "triggers" (only the trigger cadence has come), or None."""
        if self.gates_due(now) or any(at is not None and now >= at for at in (self.actions_at, self.sunset_at)):
            return "cycle"
        return "triggers" if self.triggers_due(now, triggers_checked_at) else None


def schedule(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> Schedule:
    """The rollout's `Schedule` (requests and spec changes aside: they make a cycle whatever it says). While
    rolling back nothing is measured, so only the revert's own tries (and its end) make a cycle: a stuck
    revert writes status once per try. A finished rollout is due only for what can still happen to it by
    time: its pending actions' tries (a Completed rollout's champion move) and, once, a Completed rollout's
    sunset (the cycle that passes it sets SunsetDue)."""
    period = spec.analysis.trigger_period()
    pending = pending_actions(status)
    actions_at = (pending[0].next_attempt_at or _ALREADY) if pending else None
    if status.phase == "RollingBack":
        return Schedule(gates_at=None, actions_at=actions_at if pending else _ALREADY, triggers_at=None,
                        trigger_period=period)
    if status.phase in FINISHED_PHASES:
        return Schedule(gates_at=None, actions_at=actions_at, triggers_at=None, trigger_period=period,
                        sunset_at=_sunset_unsaid(status))
    last = status.last_evaluated_at
    gates_at = _ALREADY if last is None else last + parse_duration(spec.analysis.interval)
    guarded = guarded_stage(spec, status)
    triggers_at = None
    if guarded is not None and guarded.rollback_triggers:
        checked = status.last_triggers_evaluated_at
        triggers_at = _ALREADY if checked is None else checked + period
    return Schedule(gates_at=gates_at, actions_at=actions_at, triggers_at=triggers_at, trigger_period=period)


def _sunset_unsaid(status: ModelRolloutStatus) -> datetime | None:
    """A Completed rollout's sunset, while no cycle has set SunsetDue for it (`cycle.check_sunset`)."""
    said = any(c.type == "SunsetDue" and c.status == "True" for c in status.conditions)
    return status.sunset_at if status.phase == "Completed" and not said else None


def cycle_due(spec: ModelRolloutSpec, status: ModelRolloutStatus, now: datetime,
              triggers_checked_at: datetime | None = None) -> Work | None:
    """Whether a reconcile cycle has work now, and which (requests and spec changes aside): see `Schedule`."""
    return schedule(spec, status).work(now, triggers_checked_at)


def analysis_due(spec: ModelRolloutSpec, status: ModelRolloutStatus, now: datetime) -> bool:
    """Whether the gate interval has come (never while reverting or finished: nothing is measured then)."""
    return schedule(spec, status).gates_due(now)


@dataclass(frozen=True)
class MeasurementPlan:
    """What the shell should read now: which stage's gates and rollback triggers, and from MLflow."""

    gates: Stage | None
    triggers: Stage | None
    versions: bool  # read MLflow model versions (needed before levers move)
    gates_since: datetime | None = None  # the current stage's start: gate windows are cut to it
    triggers_since: datetime | None = None  # the live stage's start: trigger windows and sequential tests begin there
    replay: bool = False  # replay the plan over the baseline's history (once per revision)
    sweeps: tuple[str, ...] = ()  # sweep experiments to read for `Observation.sweep_fingerprint` (a retry's evidence)
    # The key of the shadow stage's sweep Job to read first: its runs are the sweep gate's evidence, so the
    # gates are measured only once it completed (`Observation.sweep_job`).
    sweep_job: str | None = None


def plan_measurements(spec: ModelRolloutSpec, status: ModelRolloutStatus,
                      now: datetime | None = None, *, refused: bool = False,
                      triggers_checked_at: datetime | None = None, requests: Sequence[Request] = ()) -> MeasurementPlan:
    """What to measure this cycle, so the shell never queries what the engine will not use.

    Gates only when the gate interval has come; triggers when their own interval has
    (`triggers_checked_at`: the shell's last check, see `Schedule`) or with the gates. `now`
    unknown: assume both are due. MLflow versions are read on a gate cycle where a lever
    stage may begin now: while awaiting approval, when a stage could not begin, or once the
    current stage's minimum time is over and the next stage starts without approval; and on
    the cycle that enters the first stage (a new rollout, an edit, the end of the revert an
    edit made) when that is a lever stage without approval, whatever the cadence. Under a
    refused spec (`spec` the last valid one) only the triggers guarding what is live are measured.

    `requests` not yet handled add what answering them reads, whatever the cadence: a `promote` or
    a `retry` the MLflow versions (the stage it approves or re-runs may move levers now), and a
    `retry` of a rollout that ended NotPromoted every sweep experiment the plan's gates read, whose
    runs say whether there is new evidence. Under a refused spec they are refused (all but `abort`,
    which reads nothing), so they add nothing.
    """
    plan = _timed_plan(spec, status, now, refused=refused, triggers_checked_at=triggers_checked_at)
    asked = {r.kind for r in requests if not is_handled(status, r)}
    if refused or not asked & {"promote", "retry"}:
        return plan
    sweeps = _sweep_experiments(spec) if status.phase == "NotPromoted" and "retry" in asked else ()
    return replace(plan, versions=True, sweeps=sweeps)


def _timed_plan(spec: ModelRolloutSpec, status: ModelRolloutStatus, now: datetime | None, *, refused: bool,
                triggers_checked_at: datetime | None) -> MeasurementPlan:
    """What the cadences alone ask for (see `plan_measurements`)."""
    timing = schedule(spec, status)
    gates_due = now is None or timing.gates_due(now)
    triggers_due = gates_due or (now is not None and timing.triggers_due(now, triggers_checked_at))
    guarded = guarded_stage(spec, status) if triggers_due else None
    if refused:
        return MeasurementPlan(gates=None, triggers=guarded, versions=False, triggers_since=_live_since(status))
    replay = gates_due and spec.analysis.replay.enabled and (  # once per revision, on a gate cycle (it is costly)
        status.baseline_replay is None or status.baseline_replay.revision != revision_of(spec))
    if _enters_first_stage(spec, status):
        first = spec.stages[0]
        return MeasurementPlan(gates=None, triggers=None,
                               versions=first.type != "shadow" and not first.approval.required, replay=replay)
    if status.phase in TERMINAL_PHASES or status.phase == "RollingBack":
        return MeasurementPlan(gates=None, triggers=None, versions=False)
    stage = current_stage(spec, status)
    gates = stage if gates_due and status.phase in ("Progressing", "Paused", "Degraded", "Watching") else None
    job = status.sweep_job if gates is not None and gates.type == "shadow" else None
    if job is not None and any(a.type == "runSweep" and a.state == "Pending" for a in status.actions):
        gates, job = None, None  # not created yet: nothing to read, nothing to judge
    return MeasurementPlan(gates=gates, triggers=guarded,
                           versions=gates_due and _lever_stage_may_begin(spec, status, stage, now),
                           gates_since=status.stage_started_at, triggers_since=_live_since(status), replay=replay,
                           sweep_job=None if job is None else job.key)


def _enters_first_stage(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> bool:
    """Whether this cycle enters the first stage, where a lever stage needs the versions: a new rollout; an
    edit of what is rolled out while nothing is live (a Completed rollout ignores edits; anything live is
    reverted first); the end of that revert (every action done, the rollout restarts)."""
    if not status.revision:
        return True
    if status.phase == "RollingBack":
        rollback = status.rollback
        return rollback is not None and rollback.then == "restart" and not pending_actions(status)
    return status.phase != "Completed" and not levers_touched(status) and revision_of(spec) != status.revision


def _sweep_experiments(spec: ModelRolloutSpec) -> tuple[str, ...]:
    return tuple(dict.fromkeys(g.sweep.experiment for s in spec.stages for g in s.gates if g.sweep is not None))


def _live_since(status: ModelRolloutStatus) -> datetime | None:
    """When the live stage began (a status written before `liveSince` existed: the current stage's start)."""
    return status.live_since or status.stage_started_at


def _lever_stage_may_begin(spec: ModelRolloutSpec, status: ModelRolloutStatus, stage: Stage | None,
                           now: datetime | None) -> bool:
    if status.phase == "AwaitingApproval":
        return True
    if stage is None:
        return False
    if status.stage_started_at is None or (stage.type != "shadow" and not status.versions.champion):
        return stage.type != "shadow"
    following = spec.stages[status.stage_index + 1:status.stage_index + 2]
    if not following or following[0].type == "shadow" or following[0].approval.required:
        return False
    return now is None or now - status.stage_started_at >= stage_duration(stage)
