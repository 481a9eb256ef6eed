"""The ModelRollout status: everything the operator knows, so a restart resumes exactly.

All state lives here (never in the operator's memory): the stage and its start, every
gate's last measured value, threshold and verdict, the counters behind the limits, the
approval, the champions it displaced, and an action log whose entries are planned before
they are carried out, so an action interrupted by a crash is retried, never lost or doubled.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field

from modelrollout.spec import SpecModel

Phase = Literal[
    "Pending",  # accepted, nothing evaluated yet
    "Progressing",  # a stage is running its gates
    "Paused",  # spec.paused, or inconclusive beyond its limit: waits for a human
    "Degraded",  # measurement errors beyond their limit: holds, never promotes
    "AwaitingApproval",  # the next stage needs a human's `promote`
    "RollingBack",  # reverting, action by action
    "RolledBack",  # every lever is back on baseline
    "NotPromoted",  # the shadow gate failed: nothing live was touched
    "Watching",  # fully promoted; rollback triggers still run for the watch period
    "Completed",  # fully promoted and done
    "Invalid",  # a spec the operator refuses (a rule the schema could not express)
]
TERMINAL_PHASES: frozenset[str] = frozenset({"RolledBack", "NotPromoted", "Completed", "Invalid"})
# Ended: nothing is measured any more, so only an edit, a request, a pending action or a Completed rollout's
# sunset can change them. (Invalid is terminal but not finished: a spec the operator accepts starts it.)
FINISHED_PHASES: frozenset[str] = TERMINAL_PHASES - {"Invalid"}
Verdict = Literal["Pass", "Fail", "Inconclusive", "Error"]
ActionType = Literal["setFlag", "moveAlias", "pinFeatures", "runSweep"]
SweepJobState = Literal["Creating", "Running", "Complete", "Failed", "Missing"]


class StatusModel(SpecModel):
    """Mutable, unlike the spec: the engine edits a deep copy and returns it."""

    model_config = ConfigDict(frozen=False)


class Evidence(StatusModel):
    """What a sequential gate or trigger decided from: its confidence sequence, and when it can decide.

    `moreTrades`/`moreSeconds` forecast, holding the estimate and spread as they are now, how many
    more trades (and how long at the stage's trade rate so far) until the sequence clears its bar;
    None when it never would (the estimate sits on the bar) or it already does.
    """

    estimate: float | None = None
    lower: float | None = None
    upper: float | None = None
    bar: float = Field(description="What the sequence is judged against: the value, or -margin on the difference.")
    alpha: float
    trades: float | None = Field(default=None, description="The candidate's trades since the stage started.")
    baseline_trades: float | None = None
    more_trades: float | None = None
    more_seconds: float | None = None
    queries: dict[str, str] = Field(default_factory=dict, description="The resolved PromQL, by role.")


class Measurement(StatusModel):
    """One gate or trigger verdict for one symbol ('*' when it is one value for the stage)."""

    name: str
    kind: str
    symbol: str = "*"
    value: float | None = None
    baseline: float | None = None
    threshold: str = Field(description="The criterion in words, e.g. '>= 50' or '>= baseline or within CI95'.")
    verdict: Verdict
    message: str = ""
    measured_at: datetime
    dry_run: bool = Field(default=False, description="Shown, never counted: no promotion, hold or rollback.")
    evidence: Evidence | None = None


class Counters(StatusModel):
    """Consecutive outcomes of the current stage's evaluations, reset on a clean pass."""

    failures: int = 0
    inconclusive: int = 0
    consecutive_errors: int = 0


class ApprovalRecord(StatusModel):
    """The approval the current attempt's awaited stage began on, by the identity the apiserver verified."""

    stage: str
    revision: str
    by: str
    groups: list[str] = Field(default_factory=list, description="Groups of mayApprove the approver acted as.")
    at: datetime = Field(description="When the operator accepted it.")
    requested_at: datetime | None = Field(default=None, description="When the client says it asked (not verified).")
    request: str = Field(default="", description="The request's kind/id.")
    ticket: str = ""


class Action(StatusModel):
    """A lever the operator moves: planned as Pending, marked Done once the target state holds.

    Every action sets a target ("set X to Y"), never toggles, so doing it again is harmless.
    """

    id: str
    type: ActionType
    target: str = Field(description="namespace/ConfigMap, registered model name, or the sweep Job's key (runSweep).")
    value: str = Field(default="", description="Model version or run id (moveAlias, pinFeatures).")
    alias: str = Field(default="", description="The alias moved (moveAlias) or tag set (pinFeatures).")
    flags: dict[str, str] = Field(default_factory=dict, description="ConfigMap keys and values (setFlag).")
    undo: dict[str, str] = Field(default_factory=dict, description="The baseline values that revert `flags`.")
    reason: str
    state: Literal["Pending", "Done"] = "Pending"
    attempts: int = 0
    last_error: str = ""
    next_attempt_at: datetime | None = Field(default=None, description="After a failed try: when the next is due.")
    planned_at: datetime
    done_at: datetime | None = None


class RollbackRecord(StatusModel):
    reason: str
    stage: str
    then: Literal["stop", "restart"] = Field(default="stop", description="restart: the spec changed mid-rollout.")
    started_at: datetime
    completed_at: datetime | None = None


class Condition(StatusModel):
    type: Literal["Progressing", "AwaitingApproval", "Degraded", "Completed", "RolledBack", "Invalid", "SunsetDue",
                  "BaselineReplay"]
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: datetime


class HumanDecision(StatusModel):
    """A promote / abort / retry the operator handled: who (as the apiserver verified), what, and the outcome."""

    request: str = Field(description="kind/id of the request annotation.")
    by: str
    groups: list[str] = Field(default_factory=list, description="Groups the requester acted as.")
    ticket: str = ""
    requested_at: datetime | None = Field(default=None, description="When the client says it asked (not verified).")
    outcome: Literal["Accepted", "Refused"]


class HistoryEntry(StatusModel):
    at: datetime
    stage: str
    phase: Phase
    message: str
    decision: HumanDecision | None = Field(default=None, description="Set when a human request made this entry.")


class ReplayFinding(StatusModel):
    """One rule on one symbol, replayed over the baseline's history: in how many windows it fired."""

    stage: str
    rule: str
    role: Literal["rollbackTrigger", "gate"]
    symbol: str
    windows: int
    fired: int
    note: str = ""


class BaselineReplay(StatusModel):
    """The plan's rules against the baseline's own history, run once when a revision starts."""

    revision: str
    at: datetime
    since: str
    findings: list[ReplayFinding] = Field(default_factory=list)
    error: str = Field(default="", description="Why the history could not be read (the replay is then not retried).")


class SweepJobRecord(StatusModel):
    """The shadow stage's sweep, run by the operator as an Indexed Job: which, and how far it got when last read.

    `key` is the engine's, unique per stage attempt; the Job's name (and the sweep id its runs carry) is the
    rollout's name with the key (`modelrollout.sweep_job.job_name`), shown in `name` once read.
    """

    key: str
    name: str = ""
    shards: int
    state: SweepJobState = "Creating"
    succeeded: int = Field(default=0, description="Shards done.")
    active: int = Field(default=0, description="Shard pods running.")
    failed: int = Field(default=0, description="Shard pods that failed (each index is retried up to its limit).")
    message: str = ""
    read_at: datetime | None = None


class ModelVersions(StatusModel):
    """Registered model versions the rollout moves aliases between, by registered model name."""

    champion: dict[str, str] = Field(default_factory=dict, description="Champion before promotion.")
    candidate: dict[str, str] = Field(default_factory=dict)
    feature_runs: dict[str, str] = Field(default_factory=dict, description="Feature artifact run of each champion.")
    candidate_runs: dict[str, str] = Field(default_factory=dict, description="Run of each candidate version.")


class ModelRolloutStatus(StatusModel):
    observed_generation: int | None = None
    revision: str = Field(default="", description="Hash of what is rolled out; a change restarts from shadow.")
    phase: Phase = "Pending"
    stage: str = ""
    stage_index: int = 0
    stage_started_at: datetime | None = None
    live_since: datetime | None = Field(
        default=None, description="When the stage whose rollback triggers guard what is live began; its trigger "
                                  "windows and sequential tests read from then.")
    awaiting_since: datetime | None = None
    symbols_on_candidate: list[str] = Field(default_factory=list)
    live: str = Field(default="0/0", description="Symbols live on the candidate, e.g. 1/5.")
    message: str = ""
    last_evaluated_at: datetime | None = Field(
        default=None, description="The last gate cycle (every interval while the rollout runs; a finished rollout "
                                  "keeps the last one it had).")
    last_triggers_evaluated_at: datetime | None = Field(
        default=None, description="When the triggers shown in `triggers` were measured. They are checked every "
                                  "triggerInterval, but a check that changes no verdict is not written.")
    gates: list[Measurement] = Field(default_factory=list)
    triggers: list[Measurement] = Field(default_factory=list)
    counters: Counters = Counters()
    approval: ApprovalRecord | None = None
    versions: ModelVersions = ModelVersions()
    actions: list[Action] = Field(default_factory=list)
    rollback: RollbackRecord | None = None
    failed_evidence: str = Field(default="", description="Fingerprint of the sweep a failed shadow gate judged.")
    sweep_job: SweepJobRecord | None = None
    handled_requests: list[str] = Field(default_factory=list, description="Ids of promote/abort/retry requests done.")
    promoted_at: datetime | None = None
    sunset_at: datetime | None = None
    conditions: list[Condition] = Field(default_factory=list)
    baseline_replay: BaselineReplay | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    last_valid_spec: str = Field(
        default="", description="The spec of `revision` as last accepted (JSON): it keeps guarding the live levers "
                                "while an edit is refused.")
