"""The cycle: `decide`, the engine's one entry, applies the rules in their order (see the package's).

What the other modules judge from spec, status and measurements alone (the schedule, the assessment of
gates, triggers and the replay, the answers to requests, the lever plans), this module applies to a copy of
the status: stages are entered, begun, completed and failed; a revert starts and finishes; an edit restarts
the rollout; a refused spec is guarded under the last valid one; and the phase, conditions and history
record each step. That copy is the only mutable state, held by `_Cycle` for the length of one decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from modelrollout.engine.assessment import assess_gates, assess_replay, assess_triggers
from modelrollout.engine.levers import (
    Planner,
    champion_move,
    completed_message,
    levers_touched,
    pending_actions,
    revert,
    switch,
)
from modelrollout.engine.position import current_stage, revision_of
from modelrollout.engine.requests import Answer, answer, human_decision, is_handled, remember, who
from modelrollout.engine.schedule import analysis_due
from modelrollout.observation import Observation, Request
from modelrollout.spec import ModelRolloutSpec, Stage, parse_duration
from modelrollout.status import (
    FINISHED_PHASES,
    TERMINAL_PHASES,
    BaselineReplay,
    Condition,
    Counters,
    HistoryEntry,
    HumanDecision,
    Measurement,
    ModelRolloutStatus,
    ModelVersions,
    Phase,
    RollbackRecord,
    SweepJobRecord,
)
from modelrollout.sweep_job import job_key

HISTORY_LIMIT = 50
PAUSED_BY_SPEC = "paused by spec.paused; rollback triggers keep running"


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to emit on the rollout."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    status: ModelRolloutStatus
    events: tuple[Event, ...] = ()


def decide(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    observation: Observation,
    requests: Sequence[Request],
    now: datetime,
    generation: int,
    *,
    refused: str = "",
) -> Decision:
    """The next status and the Events to emit. Pure: `status` is not modified.

    A cycle whose observation has no gates (`gates is None`: the gate interval had not come, only the
    triggers' had) brings no gate news: nothing counts towards a limit, no stage starts or ends by
    its gates, and unless a trigger verdict changed or a request was handled, nothing changes at all,
    so the shell writes nothing.

    `refused` says why the spec on the object cannot be used; `spec` is then `last_valid_spec(status)`,
    under which the live levers keep being guarded (see `_Cycle.guard`).
    """
    gate_cycle = analysis_due(spec, status, now)
    cycle = _Cycle(spec, status.model_copy(deep=True), observation, now, generation, refused=refused,
                   gate_cycle=gate_cycle or observation.gates is not None)
    cycle.run(requests)
    # The gate interval restarts on every gate cycle, gates measured or not (none while awaiting); a finished
    # rollout has none, so a new attempt of one (a retry, an edit) starts it, as a new rollout's first cycle does.
    if gate_cycle or (status.phase in FINISHED_PHASES and cycle.status.phase not in FINISHED_PHASES):
        cycle.status.last_evaluated_at = now
    if not refused and revision_of(spec) == cycle.status.revision:
        cycle.status.last_valid_spec = spec.model_dump_json(by_alias=True, exclude_none=True)
    return Decision(status=cycle.status, events=tuple(cycle.events))


def last_valid_spec(status: ModelRolloutStatus) -> ModelRolloutSpec | None:
    """The spec of the current revision as last accepted, which guards the levers while an edit is refused."""
    if not status.last_valid_spec:
        return None
    try:
        return ModelRolloutSpec.model_validate_json(status.last_valid_spec)
    except ValueError:  # pydantic's ValidationError included: a status written by another version
        return None


def invalid(status: ModelRolloutStatus, message: str, now: datetime, generation: int) -> Decision:
    """A spec the operator refuses and no valid one before it: hold and say why (nothing can be live)."""
    new = status.model_copy(deep=True)
    new.observed_generation = generation
    if new.phase == "Invalid" and new.message == message:
        return Decision(status=new)
    new.phase = "Invalid"
    new.message = message
    return Decision(status=new, events=(_mark_invalid(new, message, now),))


def rollback_now(spec: ModelRolloutSpec, status: ModelRolloutStatus, reason: str, now: datetime) -> Decision:
    """Start reverting every live lever (used when a rollout is deleted before it completed)."""
    cycle = _Cycle(spec, status.model_copy(deep=True), Observation(), now, status.observed_generation or 0)
    if cycle.status.phase != "RollingBack":
        cycle.start_rollback(reason)
    return Decision(status=cycle.status, events=tuple(cycle.events))


@dataclass
class _Cycle:
    """One decision under way: the status being decided (a copy), the Events it emits, the actions it plans."""

    spec: ModelRolloutSpec
    status: ModelRolloutStatus
    observation: Observation
    now: datetime
    generation: int
    refused: str = ""  # why the spec on the object is refused; `spec` is then the last valid one
    gate_cycle: bool = True  # the gate interval has come (or gates were measured): the shown triggers are refreshed
    events: list[Event] = field(default_factory=list)
    deciding: HumanDecision | None = None  # an accepted request, until the history entry it caused records it
    planner: Planner = field(init=False)

    def __post_init__(self) -> None:
        self.planner = Planner.after(self.status.actions, self.now)

    # -- the cycle ---------------------------------------------------------------------
    def run(self, requests: Sequence[Request]) -> None:
        self.status.observed_generation = self.generation
        if self.status.phase == "Completed":
            self.check_sunset()
        if self.refused:
            self.guard(requests)
            return
        self.accept_spec()
        revision = revision_of(self.spec)
        self.record_replay(revision)
        if not self.status.revision:
            self.status.revision = revision
            self.enter_stage(0, "rollout started")
            return
        if self.status.phase == "Invalid" or (
                revision != self.status.revision and self.status.phase not in ("NotPromoted", "RolledBack", "Completed")):
            self.restart(revision)
            return
        if revision != self.status.revision and self.status.phase == "Completed":
            message = "completed: edits do not restart a completed rollout; create a new ModelRollout for a new change"
            if self.status.message != message:
                self.status.message = message
                self.events.append(Event("Warning", "SpecChangeIgnored", message))
            self.handle(requests)  # each refused, but answered: the shell cycles on every tick for one unanswered
            return
        if revision != self.status.revision:  # a rollout that ended unpromoted, edited: start over with the new plan
            self.status.revision = revision
            self.reset_attempt()
            self.enter_stage(0, "spec changed after the rollout ended: starting again")
            return
        self.check_triggers()
        self.handle(requests)
        if self.status.phase == "RollingBack":
            self.finish_rollback_if_done()
            return
        pending = len(pending_actions(self.status))
        if self.status.phase == "Completed":
            self.status.message = completed_message(self.status)
        if pending:
            if self.status.phase != "Completed":
                self.status.message = f"applying {pending} planned action(s)"
            return
        self.check_sunset()
        if self.status.phase in TERMINAL_PHASES:
            return
        if self.spec.paused:
            if self.status.phase != "AwaitingApproval":
                self.set_phase("Paused", PAUSED_BY_SPEC)
            return
        if self.status.phase == "Paused" and self.status.message == PAUSED_BY_SPEC:
            self.set_phase(self.running_phase(), "resumed: spec.paused cleared")
        if self.follow_sweep_job():
            return
        if self.status.phase in ("AwaitingApproval", "Paused") or self.observation.gates is None:
            return  # no gate news: progression waits for the gate cycle
        if self.status.stage_started_at is None:  # a stage that could not begin (MLflow was down): try again
            self.begin_stage(self.status.stage_index, "retrying the start")
            return
        self.evaluate_gates()

    def record_replay(self, revision: str) -> None:
        """The baseline replay, once per revision (`assessment.assess_replay`); a history that could not be
        read is said so, not retried."""
        replay = self.observation.replay
        if replay is None:
            return
        judged = assess_replay(self.spec, replay)
        self.status.baseline_replay = BaselineReplay(revision=revision, at=self.now, since=self.spec.analysis.replay.since,
                                                     findings=list(replay), error=judged.error)
        self.set_condition("BaselineReplay", *judged.condition)
        if judged.warning:
            self.events.append(Event("Warning", "BaselineReplay", judged.warning))

    def check_triggers(self) -> None:
        """Rule 2: a breached rollback trigger rolls back at once (once: never again while reverting or after)."""
        measured = self.observation.triggers
        if measured is None or self.status.phase in TERMINAL_PHASES or self.status.phase == "RollingBack":
            return
        judged = assess_triggers(measured, self.status.triggers, gate_cycle=self.gate_cycle)
        if judged.shown:
            self.status.triggers = list(measured)
            self.status.last_triggers_evaluated_at = self.now
        if judged.breach:
            self.start_rollback(judged.breach)

    # -- a refused spec ------------------------------------------------------------------
    def guard(self, requests: Sequence[Request]) -> None:
        """The spec on the object is refused; `self.spec` is the last valid one, under which the levers moved.

        Nothing progresses, but what is live stays guarded: rollback triggers keep running, a revert in
        progress goes on, and `abort` still rolls back. Other requests are refused (and consumed: they
        were made against a spec that cannot be judged). The phase is kept, so fixing the edit resumes.
        """
        refused = self.refused
        if _condition_message(self.status, "Invalid") != ("True", refused):
            self.events.append(_mark_invalid(self.status, refused, self.now))
        rollback = self.status.rollback
        if self.status.phase == "RollingBack" and rollback is not None and rollback.then == "restart":
            rollback.then = "stop"  # no restart under a spec that cannot be used: fixing it starts again
        self.check_triggers()
        self.handle(requests)
        if self.status.phase == "RollingBack":
            self.finish_rollback_if_done()
            return
        if self.status.phase == "Completed":
            held = "the completed change stays as it is"
        elif levers_touched(self.status):
            held = (f"the live levers stay guarded by the last valid spec (revision {self.status.revision}): "
                    "rollback triggers keep running, abort works")
        else:
            held = "nothing is live"
        self.status.message = f"invalid spec, holding: {refused[:500]}; {held}"

    def accept_spec(self) -> None:
        """A valid spec after a refused one: the hold ends and the rollout resumes where it stood."""
        if _condition_message(self.status, "Invalid")[0] != "True":
            return
        self.set_condition("Invalid", "False", "SpecValid", "")
        if self.status.phase != "Invalid":
            message = f"spec valid again: going on from stage {self.status.stage} ({self.status.phase})"
            self.status.message = message
            _record(self.status, self.now, message)
            self.events.append(Event("Normal", "SpecValid", message))

    # -- requests ------------------------------------------------------------------------
    def handle(self, requests: Sequence[Request]) -> None:
        """Each request not yet handled, once, as `requests.answer` answers it; recorded whatever the outcome."""
        for request in requests:
            if is_handled(self.status, request):
                continue
            self.status.handled_requests = remember(self.status.handled_requests, request.key)
            reply = answer(self.spec, self.status, self.observation, request, self.now, spec_refused=self.refused)
            if reply.outcome == "refuse":
                self.refuse(request, reply)
                continue
            self.deciding = human_decision(request, "Accepted")
            self.apply(request, reply)
            if self.deciding is not None:  # accepted without a phase change whose history entry carries it
                _record(self.status, self.now, f"{request.kind} by {who(request)} accepted", self.deciding)
                self.deciding = None

    def apply(self, request: Request, reply: Answer) -> None:
        if reply.outcome == "roll back":
            self.start_rollback(reply.message)
        elif reply.outcome == "stop after the revert":
            rollback = self.status.rollback
            assert rollback is not None
            rollback.then = "stop"
            rollback.reason += f"; aborted by {who(request)}"
            self.events.append(Event("Warning", "Aborted", f"abort by {who(request)}: the rollout ends once the "
                                                           "revert in progress is done, instead of restarting"))
        elif reply.outcome == "approve":
            self.status.approval = reply.approval
            self.events.append(Event("Normal", "Approved", f"stage {self.status.stage} approved by {who(request)}"))
            self.begin_stage(self.status.stage_index, f"approved by {who(request)}")
        elif reply.outcome == "await MLflow":
            self.deciding = None
            self.status.handled_requests.remove(request.key)
            self.status.message = reply.message
        elif reply.outcome == "restart":
            self.reset_attempt()
            self.enter_stage(reply.index, reply.message)
        elif reply.outcome == "resume":
            self.status.counters = Counters()
            self.set_phase(self.running_phase(), reply.message)

    def refuse(self, request: Request, refusal: Answer) -> None:
        """A request handled without effect: an Event and a history entry say who asked and why it did not count."""
        self.deciding = None
        text = f"{request.kind} by {who(request)}: {refusal.message}"
        self.events.append(Event("Warning" if refusal.warning else "Normal", refusal.reason, text))
        _record(self.status, self.now, text, human_decision(request, "Refused"))

    # -- stages --------------------------------------------------------------------------
    def enter_stage(self, index: int, why: str) -> None:
        """Move to stage `index`: await approval first if it needs one, else begin it."""
        stage = self.spec.stages[index]
        self.status.stage, self.status.stage_index = stage.name, index
        self.status.counters = Counters()
        self.status.gates = []
        if stage.approval.required:
            self.status.awaiting_since = self.now
            self.set_phase("AwaitingApproval", f"{why}; stage {stage.name} awaits approval "
                                               f"(kubectl modelrollout promote)", event_reason="AwaitingApproval")
            return
        self.begin_stage(index, why)

    def begin_stage(self, index: int, why: str) -> None:
        """Start stage `index` now: plan the lever moves it needs, start its clock."""
        stage = self.spec.stages[index]
        self.status.stage, self.status.stage_index = stage.name, index
        self.status.stage_started_at = self.now
        self.status.awaiting_since = None
        self.status.counters = Counters()
        if stage.type != "shadow":
            observed = self.observation.versions
            if observed is None:
                self.status.stage_started_at = None
                self.set_phase("Degraded", f"cannot start {stage.name}: MLflow could not be read to record the "
                               f"champion and candidate versions ({self.observation.versions_error})")
                return
            if not levers_touched(self.status):  # the champion to return to is the one before any lever moved
                self.status.versions = observed.model_copy(deep=True)
            self.status.versions.candidate = dict(observed.candidate)
            self.status.versions.candidate_runs = dict(observed.candidate_runs)
            self.status.actions.append(switch(self.planner, self.spec, stage))
            self.status.live_since = self.now
        if stage.type == "shadow" and (gate := self.spec.sweep_job_gate()) is not None:
            assert gate.sweep is not None and gate.sweep.job is not None  # what sweep_job_gate finds
            key = job_key(self.status.revision, self.now)
            self.status.sweep_job = SweepJobRecord(key=key, shards=gate.sweep.job.shards)
            self.status.actions.append(self.planner.action("runSweep", key, reason=f"shadow {stage.name}: run the sweep"))
        if stage.type == "canary":
            symbols = self.spec.stage_symbols(stage)
            self.status.symbols_on_candidate = sorted(set(self.status.symbols_on_candidate) | set(symbols))
        elif stage.type == "full":  # every symbol, by the flag alone (see `levers.switch`); the sunset clock starts
            self.status.symbols_on_candidate = sorted(self.spec.symbols)
            self.status.promoted_at = self.now
            self.status.sunset_at = _sunset_time(self.spec, self.now)
        self.set_phase("Watching" if stage.type == "full" else "Progressing", f"{why}; stage {stage.name} started",
                       event_reason="StageStarted")

    def follow_sweep_job(self) -> bool:
        """The shadow stage's sweep Job, as read this cycle: its progress goes into the status, and until it
        completed, the stage's gates wait (True: nothing more this cycle). It is the evidence, not a verdict:
        a Job that failed or is gone holds the stage (Degraded, until `retry` runs a new one); one that could
        not be read is a measurement error of its gate, counted like any other."""
        progress, record = self.observation.sweep_job, self.status.sweep_job
        stage = current_stage(self.spec, self.status)
        gate = self.spec.sweep_job_gate()
        if progress is None or record is None or stage is None or gate is None or self.status.phase not in (
                "Progressing", "Degraded"):
            return False
        if progress.error is not None:
            self.evaluate_gates((self.sweep_job_error(gate.name, f"cannot read sweep Job {progress.name}: "
                                                                 f"{progress.error}"),))
            return True
        was = record.state
        record.name, record.state, record.read_at = progress.name, progress.state, self.now
        record.succeeded, record.active, record.failed = progress.succeeded, progress.active, progress.failed
        record.message = progress.message
        if progress.state in ("Failed", "Missing"):
            ended = "failed" if progress.state == "Failed" else "is gone"
            message = (f"sweep Job {progress.name} {ended}: {progress.message}; nothing was judged "
                       "(kubectl modelrollout retry runs a new one)")
            self.status.gates = [self.sweep_job_error(gate.name, message)]
            self.status.last_evaluated_at = self.now
            if was != progress.state or self.status.phase != "Degraded":
                self.set_phase("Degraded", message, event_reason="SweepJobFailed", warning=True)
            return True
        if self.status.phase == "Degraded":  # it could not be read before
            self.status.counters = Counters()
            self.set_phase(self.running_phase(), f"sweep Job {progress.name} read again", event_reason="Recovered")
        if progress.state == "Complete":
            if was != "Complete":
                self.events.append(Event("Normal", "SweepJobComplete", f"sweep Job {progress.name}: all "
                                         f"{record.shards} shard(s) done; judging its runs"))
            return False
        self.status.message = (f"sweep Job {progress.name}: {progress.succeeded}/{record.shards} shard(s) done, "
                               f"{progress.active} running, {progress.failed} failed pod(s)")
        return True

    def sweep_job_error(self, gate: str, message: str) -> Measurement:
        return Measurement(name=gate, kind="sweep", threshold="the sweep Job's runs", verdict="Error",
                           message=message, measured_at=self.now)

    def evaluate_gates(self, measured: tuple[Measurement, ...] | None = None) -> None:
        """Rule 6, as `assessment.assess_gates` judges the measured gates (this cycle's observation, unless
        given) against the stage's limits."""
        stage = current_stage(self.spec, self.status)
        measured = self.observation.gates if measured is None else measured
        started = self.status.stage_started_at
        if stage is None or started is None or measured is None:
            return
        self.status.gates = list(measured)
        self.status.last_evaluated_at = self.now
        judged = assess_gates(stage, measured, self.status.counters, self.now - started)
        self.status.counters, self.status.message = judged.counters, judged.summary
        if not judged.errors and self.status.phase == "Degraded":
            self.set_phase(self.running_phase(), "measurements recovered", event_reason="Recovered")
        if judged.degraded is not None:
            self.set_condition("Degraded", *judged.degraded)
        if judged.outcome == "pass":
            self.complete_stage(stage)
        elif judged.outcome == "fail":
            self.fail_stage(stage, judged.failures)
        elif judged.outcome == "degrade":
            self.set_phase("Degraded", judged.message, event_reason="Degraded")
        elif judged.outcome == "pause":
            self.set_phase("Paused", judged.message, event_reason="InconclusiveLimit")
        elif judged.message:
            self.status.message = judged.message

    def complete_stage(self, stage: Stage) -> None:
        index = self.status.stage_index
        self.events.append(Event("Normal", "StagePassed", f"stage {stage.name} passed every gate"))
        if index + 1 < len(self.spec.stages):
            self.enter_stage(index + 1, f"stage {stage.name} passed")
            return
        self.status.counters = Counters()
        self.status.actions += champion_move(self.planner, self.spec, self.status.versions, stage)
        self.set_phase("Completed", completed_message(self.status), event_reason="Completed")

    def fail_stage(self, stage: Stage, failures: Sequence[str]) -> None:
        why = f"gate(s) {', '.join(failures)} failed in stage {stage.name}"
        if stage.type == "shadow" and not levers_touched(self.status):
            self.status.failed_evidence = self.observation.sweep_fingerprint or ""
            self.set_phase("NotPromoted", f"{why}: nothing live was touched; the change stays available",
                           event_reason="NotPromoted", warning=True)
            return
        self.start_rollback(why)

    # -- rollback ------------------------------------------------------------------------
    def start_rollback(self, reason: str, then: Literal["stop", "restart"] = "stop") -> None:
        """Plan the revert in the spec's order; every step sets the baseline target explicitly."""
        stage_name = self.status.stage or self.spec.stages[0].name
        index = self.status.stage_index
        if self.status.phase == "AwaitingApproval" and 0 < index <= len(self.spec.stages):
            # The awaited stage never began: what is rolled back is the stage before it (whose triggers guard
            # what is live), so a retry re-runs that one rather than jumping straight to awaiting approval.
            stage_name = self.spec.stages[index - 1].name
        self.status.rollback = RollbackRecord(reason=reason, stage=stage_name, started_at=self.now, then=then)
        self.status.awaiting_since = None
        forward = [a for a in self.status.actions if a.reason != "rollback"]
        # Pending forward actions are superseded; one may have landed just before a crash, so its undo counts too.
        self.status.actions = [a for a in self.status.actions if a.state == "Done"]
        if levers_touched(self.status):
            self.status.actions += revert(self.planner, self.spec, self.status.versions, forward)
        self.set_phase("RollingBack", f"rolling back: {reason}", event_reason="RollingBack", warning=True)
        self.finish_rollback_if_done()

    def finish_rollback_if_done(self) -> None:
        pending = pending_actions(self.status)
        rollback = self.status.rollback
        if pending or rollback is None:
            if pending:
                self.status.message = f"rolling back ({len(pending)} action(s) left): {rollback.reason if rollback else ''}"
            return
        rollback.completed_at = self.now
        self.status.symbols_on_candidate = []
        self.status.promoted_at = None
        if rollback.then == "restart":
            self.reset_attempt()
            self.enter_stage(0, "spec changed mid-rollout: live levers reverted, restarting")
            return
        self.set_phase("RolledBack", f"rolled back: {rollback.reason}", event_reason="RolledBack", warning=True)

    def restart(self, revision: str) -> None:
        self.events.append(Event("Normal", "SpecChanged", f"what is rolled out changed (revision "
                                 f"{self.status.revision} -> {revision})"))
        self.status.revision = revision
        if levers_touched(self.status):
            # Revert with the *recorded* targets: planned actions carry their own keys and versions.
            self.start_rollback("spec changed mid-rollout", then="restart")
            return
        self.reset_attempt()
        self.enter_stage(0, "spec changed mid-rollout: restarting")

    def reset_attempt(self) -> None:
        self.status.counters = Counters()
        self.status.approval = None
        self.status.rollback = None
        self.status.promoted_at = None
        self.status.sunset_at = None
        self.status.symbols_on_candidate = []
        self.status.versions = ModelVersions()
        self.status.failed_evidence = ""
        self.status.sweep_job = None
        self.status.gates, self.status.triggers = [], []
        self.status.actions = []
        if _condition(self.status, "SunsetDue") == "True":  # that sunset belonged to the previous attempt
            self.set_condition("SunsetDue", "False", "NewAttempt", "")

    # -- bookkeeping ---------------------------------------------------------------------
    def running_phase(self) -> Phase:
        return "Watching" if self.status.promoted_at else "Progressing"

    def check_sunset(self) -> None:
        """Once the sunset passed: SunsetDue and one Warning. It is a Completed rollout's only clock, so its cycle
        checks it first, whatever else holds it (an edit refused or ignored, a champion move pending): the
        schedule makes that cycle due once, counting on it to set the condition."""
        sunset = self.status.sunset_at
        if sunset is None or self.now < sunset or self.status.phase == "RolledBack":
            return
        if _condition(self.status, "SunsetDue") != "True":
            message = (f"sunset {sunset:%Y-%m-%d %H:%M} passed: {self.spec.accountability.owner} must accept "
                       "or revisit the change")
            self.set_condition("SunsetDue", "True", "SunsetPassed", message)
            self.events.append(Event("Warning", "SunsetDue", message))

    def set_phase(self, phase: Phase, message: str, *, event_reason: str | None = None, warning: bool = False) -> None:
        changed = phase != self.status.phase
        self.status.phase = phase
        self.status.message = message
        self.status.live = f"{len(self.status.symbols_on_candidate)}/{len(self.spec.symbols)}"
        self.refresh_conditions()
        if changed or event_reason:
            _record(self.status, self.now, message, self.deciding)
            self.deciding = None
            self.events.append(Event("Warning" if warning else "Normal", event_reason or phase, message))

    def set_condition(self, type_: str, value: str, reason: str, message: str) -> None:
        _set_condition(self.status, type_, value, reason, message, self.now)

    def refresh_conditions(self) -> None:
        phase = self.status.phase
        progressing = phase in ("Progressing", "Watching", "RollingBack", "AwaitingApproval")
        self.set_condition("Progressing", "True" if progressing else "False", phase, "")
        self.set_condition("AwaitingApproval", "True" if phase == "AwaitingApproval" else "False", phase, "")
        self.set_condition("Completed", "True" if phase == "Completed" else "False", phase, "")
        self.set_condition("RolledBack", "True" if phase == "RolledBack" else "False", phase, "")
        if _condition(self.status, "Invalid") is None:
            self.set_condition("Invalid", "False", "SpecValid", "")
        if phase == "Degraded":
            self.set_condition("Degraded", "True", "Holding", self.status.message)


def _condition(status: ModelRolloutStatus, type_: str) -> str | None:
    return _condition_message(status, type_)[0]


def _condition_message(status: ModelRolloutStatus, type_: str) -> tuple[str | None, str]:
    return next(((c.status, c.message) for c in status.conditions if c.type == type_), (None, ""))


def _set_condition(status: ModelRolloutStatus, type_: str, value: str, reason: str, message: str,
                   now: datetime) -> None:
    for condition in status.conditions:
        if condition.type == type_:
            if condition.status != value:
                condition.last_transition_time = now
            condition.status, condition.reason, condition.message = value, reason, message  # type: ignore[assignment]
            return
    status.conditions.append(Condition(type=type_, status=value, reason=reason, message=message,  # type: ignore[arg-type]
                                       last_transition_time=now))


def _record(status: ModelRolloutStatus, now: datetime, message: str, decision: HumanDecision | None = None) -> None:
    status.history = (status.history + [HistoryEntry(at=now, stage=status.stage, phase=status.phase,
                                                     message=message, decision=decision)])[-HISTORY_LIMIT:]


def _mark_invalid(status: ModelRolloutStatus, message: str, now: datetime) -> Event:
    """Say that the spec is refused, and why: the Invalid condition, a history entry, and the Event to emit."""
    _set_condition(status, "Invalid", "True", "SpecInvalid", message, now)
    _record(status, now, f"invalid spec: {message}")
    return Event("Warning", "InvalidSpec", message)


def _sunset_time(spec: ModelRolloutSpec, now: datetime) -> datetime | None:
    """When the owner must accept or revisit a fully promoted change (`spec.accountability`), if ever."""
    accountability = spec.accountability
    if accountability.sunset_after:
        return now + parse_duration(accountability.sunset_after)
    if accountability.sunset_date:
        return datetime.combine(accountability.sunset_date, datetime.min.time(), tzinfo=now.tzinfo)
    return None
