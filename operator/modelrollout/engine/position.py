"""Where a rollout stands in its plan: what revision it rolls out, its current stage, and the stage whose
rollback triggers guard what is live.

Every concern asks these questions (the schedule, requests, the cycle) and none may answer them its own way,
so they are answered once, here, from spec and status alone.
"""

from __future__ import annotations

import hashlib
import json

from modelrollout.engine.levers import levers_touched
from modelrollout.spec import ModelRolloutSpec, Stage
from modelrollout.status import TERMINAL_PHASES, ModelRolloutStatus


def revision_of(spec: ModelRolloutSpec) -> str:
    """A short hash of what is rolled out; cosmetic fields (description, interval, paused) excluded."""
    payload = json.dumps(spec.rollout_revision_fields(), sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:12]


def current_stage(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> Stage | None:
    """The stage the status is at, if the spec still has it there."""
    index = status.stage_index
    if 0 <= index < len(spec.stages) and spec.stages[index].name == status.stage:
        return spec.stages[index]
    return None


def stage_index(spec: ModelRolloutSpec, name: str) -> int:
    """The position of the stage called `name` (the first stage when there is none)."""
    return next((i for i, s in enumerate(spec.stages) if s.name == name), 0)


def guarded_stage(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> Stage | None:
    """The stage whose rollback triggers are checked now: the live one, while the rollout runs."""
    if not status.revision or status.phase in TERMINAL_PHASES or status.phase == "RollingBack":
        return None
    return _live_stage(spec, status)


def _live_stage(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> Stage | None:
    """The stage whose rollback triggers guard what is live now (none while nothing is live)."""
    if not levers_touched(status):
        return None
    stage = current_stage(spec, status)
    not_begun = status.phase == "AwaitingApproval" or status.stage_started_at is None
    if not_begun or stage is None or stage.type == "shadow":  # the last lever stage that began guards
        started = [s for s in spec.stages[: status.stage_index] if s.type != "shadow"]
        return started[-1] if started else None
    return stage
