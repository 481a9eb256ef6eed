"""Levers: what is live, and the plans of actions that move it.

The engine never moves a lever. It plans `Action`s into the status (Pending), each setting a target state
("set X to Y", never a toggle); the shell carries them out in order and records every attempt
(`mark_action`). A plan persisted before anything moves is resumed after a crash, not repeated, and an
action carried out twice is harmless. A revert writes back what the forward actions recorded (`undo`,
the champion recorded when the first lever moved), never what the spec says now, so an edited spec
cannot misdirect it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from modelrollout.spec import ModelRolloutSpec, Stage
from modelrollout.status import Action, ActionType, ModelRolloutStatus, ModelVersions

RETRY_FIRST = timedelta(seconds=1)
RETRY_CAP = timedelta(minutes=5)


def pending_actions(status: ModelRolloutStatus) -> list[Action]:
    return [a for a in status.actions if a.state == "Pending"]


def levers_touched(status: ModelRolloutStatus) -> bool:
    """Whether anything live was ever moved towards the candidate in the current attempt."""
    return bool(status.symbols_on_candidate) or status.promoted_at is not None


def mark_action(status: ModelRolloutStatus, action_id: str, now: datetime, error: str = "") -> ModelRolloutStatus:
    """Record one attempt of a planned action: Done, or still Pending with the error and its next try.

    A Completed rollout's message counting the champion moves left is kept true here, in the write that
    records the attempt: no cycle follows a finished rollout's last action to say so."""
    new = status.model_copy(deep=True)
    for action in new.actions:
        if action.id == action_id:
            action.attempts += 1
            action.last_error = error
            if error:
                action.next_attempt_at = now + retry_delay(action.attempts)
            else:
                action.state, action.done_at, action.next_attempt_at = "Done", now, None
    if new.phase == "Completed" and status.message == completed_message(status):
        new.message = completed_message(new)
    return new


def completed_message(status: ModelRolloutStatus) -> str:
    """What a Completed rollout says: its sunset, and the champion moves still to record in MLflow."""
    sunset, pending = status.sunset_at, len(pending_actions(status))
    return (f"fully promoted; sunset review due {sunset:%Y-%m-%d}" if sunset else "fully promoted") + (
        f"; recording the new champion in MLflow ({pending} action(s) left)" if pending else "")


def retry_delay(failures: int) -> timedelta:
    """How long an action waits after its `failures`-th failed try: 1 s, doubling, capped at 5 minutes.

    Exponential, so an outage of an hour costs about twenty tries (each one status write and one more
    count on one aggregated Event), not one per tick; capped, so a lever is tried again within
    minutes of the outage's end. A new plan (an abort, a breach) is a new action: it is tried at once.
    """
    if failures <= 0:
        return timedelta(0)
    doubled: timedelta = RETRY_FIRST * (1 << min(failures - 1, 30))
    return min(RETRY_CAP, doubled)


def due_actions(status: ModelRolloutStatus, now: datetime, *, refused: bool = False) -> list[Action]:
    """The pending actions to carry out now, in order: up to the first still waiting for its next try
    (later ones wait behind it: order matters). Under a `refused` spec it stops at the first forward
    action of a rollout not yet Completed: nothing moves further than the status says under a spec
    that cannot be judged (a Completed rollout's record in MLflow is no further)."""
    due = []
    for action in pending_actions(status):
        waiting = action.next_attempt_at is not None and action.next_attempt_at > now
        held = refused and action.reason != "rollback" and status.phase != "Completed"
        if waiting or held:
            break
        due.append(action)
    return due


@dataclass
class Planner:
    """Makes one cycle's actions, numbered on from the highest id the cycle began with: an action superseded
    (dropped) or cleared in the cycle never lends its id to another, so a late `mark_action` of it matches nothing."""

    now: datetime
    last: int

    @classmethod
    def after(cls, actions: Iterable[Action], now: datetime) -> Planner:
        return cls(now, max((int(a.id.split("-")[0]) for a in actions), default=0))

    def action(self, type_: ActionType, target: str, *, reason: str, alias: str = "", value: str = "",
               flags: dict[str, str] | None = None, undo: dict[str, str] | None = None) -> Action:
        self.last += 1
        return Action(id=f"{self.last:04d}-{type_}", type=type_, target=target, value=value, alias=alias,
                      flags=dict(flags or {}), undo=dict(undo or {}), reason=reason, planned_at=self.now)


def switch(plan: Planner, spec: ModelRolloutSpec, stage: Stage) -> Action:
    """The flag switch a lever stage begins with: a canary sets its symbols' override keys; full sets the shared
    key and every symbol's by the flag alone, since the registry keeps the champion until the rollout completes
    (so until then reverting the ConfigMap alone brings the baseline back, MLflow up or not, and a paper
    baseline that follows `champion` stays the real baseline for the full stage's comparisons). Its undo is
    every key the rollout may set, at its baseline value."""
    change = spec.change
    if stage.type == "canary":
        flags = {change.override_key(s): change.candidate for s in spec.stage_symbols(stage)}
    else:
        flags = {change.key: change.candidate} | {change.override_key(s): change.candidate for s in spec.symbols}
    undo = {change.key: change.baseline} | {change.override_key(s): change.baseline for s in spec.symbols}
    reason = f"canary {stage.name}" if stage.type == "canary" else f"promote {stage.name}"
    return plan.action("setFlag", _configmap(spec), reason=reason, flags=flags, undo=undo)


def champion_move(plan: Planner, spec: ModelRolloutSpec, versions: ModelVersions, stage: Stage) -> list[Action]:
    """On completion, MLflow records what was accepted: `champion` to the candidate version that passed
    (the one recorded when the stage began, not whatever `candidate` points at now), the old champion to
    `previous`, the feature artifact run pinned. From then on the champion serves every symbol whose flag
    selects its loss, so a retrain that moves `candidate` reaches live traffic only through a new rollout."""
    models, actions = spec.models, []
    reason = f"complete {stage.name}"
    for name in dict.fromkeys(models.registered_model(s) for s in spec.symbols):
        candidate = versions.candidate.get(name)
        if candidate is None:
            continue
        if name in versions.champion:
            actions.append(plan.action("moveAlias", name, reason=reason, alias=models.aliases.previous,
                                       value=versions.champion[name]))
        actions.append(plan.action("moveAlias", name, reason=reason, alias=models.aliases.champion, value=candidate))
        if models.feature_artifact.enabled and name in versions.candidate_runs:
            actions.append(plan.action("pinFeatures", name, reason=reason, alias=models.feature_artifact.tag,
                                       value=versions.candidate_runs[name]))
    return actions


def revert(plan: Planner, spec: ModelRolloutSpec, versions: ModelVersions, forward: Sequence[Action]) -> list[Action]:
    """The revert in `spec.rollback.order`, every step to what was recorded when the levers moved: the flags'
    `undo` of the forward actions, the champion and feature runs read before the first lever moved."""
    models, actions = spec.models, []
    for step in spec.rollback.order:
        if step == "configMap":
            by_target: dict[str, dict[str, str]] = {}
            for action in forward:
                if action.type == "setFlag":
                    by_target.setdefault(action.target, {}).update(action.undo)
            actions += [plan.action("setFlag", target, reason="rollback", flags=flags)
                        for target, flags in sorted(by_target.items())]
        elif step == "mlflowAlias":
            actions += [plan.action("moveAlias", name, reason="rollback", alias=models.aliases.champion, value=version)
                        for name, version in sorted(versions.champion.items())]
        elif step == "featureArtifact" and models.feature_artifact.enabled:
            actions += [plan.action("pinFeatures", name, reason="rollback", alias=models.feature_artifact.tag, value=run)
                        for name, run in sorted(versions.feature_runs.items())]
    return actions


def _configmap(spec: ModelRolloutSpec) -> str:
    ref = spec.change.config_map
    return f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name
