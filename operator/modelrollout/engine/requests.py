"""Human requests (rule 3): who may ask what, and what each request comes to, answered as data.

The admission policy checked the requester and their authority when the annotation was written; `answer`
checks again, against the spec as it is now, so a request written while the policy was missing, or by
someone the accountability no longer names, never counts. It only reads spec, status and observation: the
cycle carries the answer out, and records every request handled, accepted or refused, with who asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from modelrollout.engine.position import current_stage, stage_index
from modelrollout.observation import Observation, Request
from modelrollout.spec import AUTHORITY_FIELD, ModelRolloutSpec
from modelrollout.status import TERMINAL_PHASES, ApprovalRecord, HumanDecision, ModelRolloutStatus

HANDLED_REQUESTS_LIMIT = 20


@dataclass(frozen=True)
class Answer:
    """What one request comes to; the cycle carries it out and records it.

    * refuse: handled without effect; an Event (`reason`, a Warning unless `warning` is off) and a history
      entry say who asked and why it did not count (`message`);
    * roll back: `abort`; every live lever is reverted now, because `message`;
    * stop after the revert: `abort` while the revert before a restart (the spec changed) is under way; it
      finishes, then the rollout stops there;
    * approve: `promote` of the awaited stage, which begins now on `approval`;
    * await MLflow: `promote` that cannot record yet the champion it would displace; not handled, so the
      next cycle takes it again, and `message` says so;
    * restart: `retry` of a rollout that ended; a new attempt from stage `index`, because `message`;
    * resume: `retry` of a paused or degraded stage; its counters start again, because `message`.
    """

    outcome: Literal["refuse", "roll back", "stop after the revert", "approve", "await MLflow", "restart", "resume"]
    message: str = ""
    reason: str = ""
    warning: bool = True
    index: int = 0
    approval: ApprovalRecord | None = None


def is_handled(status: ModelRolloutStatus, request: Request) -> bool:
    return request.key in status.handled_requests


def remember(handled: list[str], key: str) -> list[str]:
    """The last requests handled, always keeping each kind's latest (its annotation stays on the object)."""
    kept = [k for k in handled if k != key] + [key]
    latest = {k.split("/", 1)[0]: k for k in kept}
    recent = kept[-HANDLED_REQUESTS_LIMIT:]
    return [k for k in kept if k in recent or k in latest.values()]


def answer(spec: ModelRolloutSpec, status: ModelRolloutStatus, observation: Observation, request: Request,
           now: datetime, *, spec_refused: str = "") -> Answer:
    """What `request` comes to now. Under a refused spec (`spec_refused` says why; `spec` is the last valid
    one) only `abort` is answered: anything else was made against a spec that cannot be judged."""
    if spec_refused and request.kind != "abort":
        return _refuse("RequestRejected", f"ignored: the spec is invalid ({spec_refused[:300]})")
    if observation.requests_unverified:
        return _refuse("RequestRefused", f"refused, the requester cannot be verified: "
                       f"{observation.requests_unverified}; ask again once it is in place")
    authority = spec.accountability.authority(request.kind)
    if not authority.allow(request.by, request.groups):
        return _refuse("RequestRefused", f"refused: not named in spec.accountability.{AUTHORITY_FIELD[request.kind]} "
                                         f"({authority.describe()})")
    if request.kind == "abort":
        return _abort(status, request)
    if request.kind == "retry":
        return _retry(spec, status, observation, request)
    return _promote(spec, status, observation, request, now)


def who(request: Request) -> str:
    """The verified requester, the group they acted as, and the ticket, as messages name them."""
    return request.by + (f" as {', '.join(request.groups)}" if request.groups else "") + (
        f" ({request.ticket})" if request.ticket else "")


def human_decision(request: Request, outcome: Literal["Accepted", "Refused"]) -> HumanDecision:
    """The history entry's record of a request handled: who asked, as the apiserver verified, and the outcome."""
    return HumanDecision(request=request.key, by=request.by, groups=list(request.groups), ticket=request.ticket,
                         requested_at=request.at, outcome=outcome)


def _abort(status: ModelRolloutStatus, request: Request) -> Answer:
    rollback = status.rollback
    if status.phase == "RollingBack" and rollback is not None and rollback.then == "restart":
        return Answer("stop after the revert")
    if status.phase in TERMINAL_PHASES or status.phase == "RollingBack":
        return _refuse("AbortIgnored", f"rollout is {status.phase}, nothing to abort", warning=False)
    return Answer("roll back", f"aborted by {who(request)}")


def _promote(spec: ModelRolloutSpec, status: ModelRolloutStatus, observation: Observation, request: Request,
             now: datetime) -> Answer:
    stage = current_stage(spec, status)
    if status.phase != "AwaitingApproval" or stage is None:
        return _refuse("ApprovalRejected", f"ignored: rollout is {status.phase}, not awaiting approval")
    if request.stage != stage.name or request.revision != status.revision:
        return _refuse("ApprovalRejected", f"was for stage {request.stage!r} revision {request.revision!r}; "
                                           f"awaiting stage {stage.name!r} revision {status.revision!r}")
    if observation.versions is None:
        return Answer("await MLflow", f"approved, waiting for MLflow to record the champion: {observation.versions_error}")
    return Answer("approve", approval=ApprovalRecord(
        stage=stage.name, revision=status.revision, by=request.by, groups=list(request.groups), at=now,
        requested_at=request.at, request=request.key, ticket=request.ticket))


def _retry(spec: ModelRolloutSpec, status: ModelRolloutStatus, observation: Observation, request: Request) -> Answer:
    phase = status.phase
    job = status.sweep_job
    if phase == "NotPromoted" and job is not None and spec.sweep_job_gate() is not None:
        return Answer("restart", f"retried by {who(request)}: the shadow stage runs a new sweep Job", index=0)
    if phase == "Degraded" and job is not None and job.state in ("Failed", "Missing"):
        return Answer("restart", f"retried by {who(request)}: sweep Job {job.name or job.key} {job.state.lower()}, "
                                 "the shadow stage runs a new one", index=status.stage_index)
    if phase == "NotPromoted":
        fingerprint = observation.sweep_fingerprint
        if fingerprint is None or fingerprint == status.failed_evidence:
            return _refuse("RetryRejected", "the shadow gate needs new sweep evidence")
        return Answer("restart", f"retried by {who(request)} with new sweep evidence", index=0)
    if phase == "RolledBack" and status.rollback is not None:
        index = stage_index(spec, status.rollback.stage)
        return Answer("restart", f"retried by {who(request)}: stage {spec.stages[index].name} from scratch", index=index)
    if phase in ("Paused", "Degraded"):
        return Answer("resume", f"resumed by {who(request)}")
    return _refuse("RetryIgnored", f"rollout is {phase}", warning=False)


def _refuse(reason: str, message: str, *, warning: bool = True) -> Answer:
    return Answer("refuse", message, reason, warning)
