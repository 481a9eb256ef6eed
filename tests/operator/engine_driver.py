"""Steps the pure decision engine the way the operator's shell does, against a simulated world.

One cycle: ask the engine what to measure (`plan_measurements`), build the `Observation`
from the verdicts the test dictates, `decide`, then carry out the actions the engine says
are due, in order, on a `World` (the ConfigMap, MLflow aliases and feature pins) and mark
each Done, or leave it Pending with an error and stop there, as the shell does. The clock
then advances. The World also says what each symbol's model server answers with, by the
server's own rule (`model_runtime.loss_flag.served_role`) over the flags and the aliases, so
the tests can assert over what is really served, not only over what the flags say.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from model_runtime.loss_flag import LossSpec, served_role
from modelrollout.engine import (
    Decision,
    Event,
    decide,
    due_actions,
    last_valid_spec,
    mark_action,
    pending_actions,
    plan_measurements,
)
from modelrollout.observation import Observation, Request, SweepJobProgress
from modelrollout.spec import ModelRolloutSpec, Stage
from modelrollout.status import Action, Measurement, ModelRolloutStatus, ModelVersions, SweepJobState, Verdict

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "focal-loss-rollout-fast.yaml"
START = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
CHAMPION, CANDIDATE = "3", "4"  # registered model versions behind the aliases at the start
RETRAINED = "5"  # a later training of the candidate's loss (see World.retrained)
GateVerdicts = Verdict | Mapping[str, Verdict | None]  # one verdict for every gate, or per gate (None: missing)
FailWhen = bool | Callable[[Action], bool]


@cache
def _example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())["spec"]


def spec_dict() -> dict[str, Any]:
    """A fresh, editable copy of the fast example's spec (camelCase, as on the wire)."""
    return copy.deepcopy(_example())


def make_spec(edit: Callable[[dict[str, Any]], None] | None = None) -> ModelRolloutSpec:
    """The fast example, optionally edited in place first."""
    data = spec_dict()
    if edit is not None:
        edit(data)
    return ModelRolloutSpec.model_validate(data)


def stage_named(spec: ModelRolloutSpec, name: str) -> Stage:
    return next(s for s in spec.stages if s.name == name)


@dataclass
class World:
    """The live levers, as the shell's adapters would leave them after carrying out actions."""

    flags: dict[str, str]
    aliases: dict[tuple[str, str], str]  # (registered model, alias) -> version
    pins: dict[str, str]  # registered model -> feature artifact run
    losses: dict[str, str]  # model version -> the loss (flag value) it was trained with
    applied: list[Action] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)  # sweep Jobs created, by key

    @classmethod
    def initial(cls, spec: ModelRolloutSpec) -> World:
        models = [spec.models.registered_model(s) for s in spec.symbols]
        aliases = {(m, spec.models.aliases.champion): CHAMPION for m in models}
        aliases |= {(m, spec.models.aliases.candidate): CANDIDATE for m in models}
        return cls(flags={spec.change.key: spec.change.baseline}, aliases=aliases,
                   pins=dict.fromkeys(models, f"run-{CHAMPION}"),
                   losses={CHAMPION: spec.change.baseline, CANDIDATE: spec.change.candidate,
                           RETRAINED: spec.change.candidate})

    def served(self, spec: ModelRolloutSpec) -> dict[str, str]:
        """The model version each symbol's server answers with, by the server's rule (both aliases loaded)."""
        names = spec.models.aliases
        served = {}
        for symbol in spec.symbols:
            model = spec.models.registered_model(symbol)
            champion, candidate = self.aliases.get((model, names.champion)), self.aliases.get((model, names.candidate))
            role = served_role(LossSpec.parse(self.flag(spec, symbol)), self._loss(champion), self._loss(candidate))
            served[symbol] = (candidate if role == "candidate" else champion) or ""
        return served

    def _loss(self, version: str | None) -> LossSpec | None:
        return LossSpec.parse(self.losses[version]) if version in self.losses else None

    def flag_reverted(self, spec: ModelRolloutSpec) -> World:
        """This world after the revert's first step alone (every key the rollout sets back at baseline):
        what is served if MLflow cannot be reached for the rest."""
        change = spec.change
        flags = dict.fromkeys([change.key, *(change.override_key(s) for s in spec.symbols)], change.baseline)
        return replace(self, flags=self.flags | flags, applied=[])

    def retrained(self, spec: ModelRolloutSpec) -> World:
        """This world after a routine retrain outside any rollout: `candidate` moves to a new version."""
        moved = {key: RETRAINED for key in self.aliases if key[1] == spec.models.aliases.candidate}
        return replace(self, aliases=self.aliases | moved, applied=[])

    def apply(self, action: Action) -> None:
        if action.type == "setFlag":
            self.flags.update(action.flags)
        elif action.type == "moveAlias":
            self.aliases[(action.target, action.alias)] = action.value
        elif action.type == "runSweep":
            self.jobs.append(action.target)
        else:
            self.pins[action.target] = action.value
        self.applied.append(action)

    def flag(self, spec: ModelRolloutSpec, symbol: str) -> str:
        """The value a symbol's model runtime reads: its override, else the shared key."""
        change = spec.change
        return self.flags.get(change.override_key(symbol), self.flags.get(change.key, change.baseline))

    def on_candidate(self, spec: ModelRolloutSpec) -> set[str]:
        return {s for s in spec.symbols if self.flag(spec, s) == spec.change.candidate}

    def champions(self, spec: ModelRolloutSpec) -> dict[str, str]:
        return {m: v for (m, alias), v in self.aliases.items() if alias == spec.models.aliases.champion}

    def versions(self, spec: ModelRolloutSpec) -> ModelVersions:
        """What the MLflow adapter would read now."""
        candidate = spec.models.aliases.candidate
        return ModelVersions(
            champion=self.champions(spec),
            candidate={m: v for (m, alias), v in self.aliases.items() if alias == candidate},
            feature_runs=dict(self.pins),
            candidate_runs={m: f"run-{v}" for (m, alias), v in self.aliases.items() if alias == candidate})


@dataclass(frozen=True)
class Cycle:
    """One decide call: its inputs and the decision, for property checks."""

    before: ModelRolloutStatus
    observation: Observation
    requests: tuple[Request, ...]
    now: datetime
    spec: ModelRolloutSpec
    decision: Decision
    refused: str = ""

    @property
    def after(self) -> ModelRolloutStatus:
        return self.decision.status


def measurement(name: str, verdict: Verdict, now: datetime, *, kind: str = "threshold",
                symbol: str = "*", value: float | None = 1.0) -> Measurement:
    return Measurement(name=name, kind=kind, symbol=symbol, value=value, threshold=">= 0", verdict=verdict,
                       message=f"{name} {verdict}", measured_at=now)


class Driver:
    """A rollout stepped cycle by cycle: the test dictates verdicts, requests, failures and the clock."""

    def __init__(self, spec: ModelRolloutSpec | None = None, *, now: datetime = START) -> None:
        self.spec = spec or make_spec()
        self.status = ModelRolloutStatus()
        self.now = now
        self.generation = 1
        self.world = World.initial(self.spec)
        self.mlflow_up = True
        self.refused = ""  # why the spec on the object is refused (an edit the operator cannot use), if it is
        self.fingerprint: str | None = "sweep-1"
        # The shadow stage's sweep Job as the shell would read it (a spec with a sweep gate `job`); error: unreadable
        self.job_state: SweepJobState = "Complete"
        self.job_error: str | None = None
        self.cycles: list[Cycle] = []
        self.events: list[Event] = []
        self._request_ids = 0

    # -- inputs ----------------------------------------------------------------------------
    def edit(self, edit: Callable[[dict[str, Any]], None]) -> None:
        """Edit the spec as a user would (`kubectl edit`): the generation goes up."""
        data = self.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        edit(data)
        self.spec = ModelRolloutSpec.model_validate(data)
        self.generation += 1

    def request(self, kind: str, *, id: str | None = None, by: str = "alice@cvntrade.io", ticket: str = "CHG-1",
                stage: str = "", revision: str = "", groups: tuple[str, ...] = ()) -> Request:
        """A request as the admission policy admitted it: `by` and `groups` are the verified requester."""
        if id is None:
            self._request_ids += 1
            id = f"{kind}-{self._request_ids}"
        return Request(kind=kind, id=id, by=by, at=self.now, ticket=ticket, stage=stage,  # type: ignore[arg-type]
                       revision=revision, groups=groups)

    def promote(self, stage: str = "full", revision: str | None = None, **kwargs: Any) -> Request:
        """A promote for `stage`; the current revision unless told otherwise."""
        return self.request("promote", stage=stage,
                            revision=self.status.revision if revision is None else revision, **kwargs)

    def abort(self, **kwargs: Any) -> Request:
        return self.request("abort", **kwargs)

    def retry(self, **kwargs: Any) -> Request:
        return self.request("retry", **kwargs)

    def refuse(self, message: str = "spec.stages[1].gates[0].comparison.query: must contain {variant}") -> None:
        """An edit the schema let through but the operator refuses: the shell then decides under the
        last valid spec (`self.spec` stays that one), with `refused` saying why."""
        self.refused = message
        self.generation += 1

    def accept(self) -> None:
        """The refused edit is undone (the same revision as before it)."""
        self.refused = ""
        self.generation += 1

    def observe(self, gates: GateVerdicts, trigger: Verdict | None) -> Observation:
        """What the shell would measure now: only what `plan_measurements` asks for."""
        plan = plan_measurements(self.spec, self.status, refused=bool(self.refused))
        job = None
        if plan.sweep_job is not None:
            job = SweepJobProgress(f"r-sweep-{plan.sweep_job}", self.job_state, succeeded=1, active=1,
                                   error=self.job_error)
            if self.job_error is not None or self.job_state != "Complete":  # the shell measures no gate then
                plan = replace(plan, gates=None)
        measured: list[Measurement] = []
        if plan.gates is not None:
            for gate in plan.gates.gates:
                verdict = gates if isinstance(gates, str) else gates.get(gate.name)
                if verdict is not None:
                    measured.append(measurement(gate.name, verdict, self.now, kind=gate.kind))
        triggers: list[Measurement] = []
        if plan.triggers is not None and trigger is not None:
            for rule in plan.triggers.rollback_triggers:
                triggers.extend(measurement(rule.name, trigger, self.now, kind="trigger", symbol=symbol,
                                            value=-1.0 if trigger == "Fail" else 1.0)
                                for symbol in self.spec.stage_symbols(plan.triggers))
        versions = self.world.versions(self.spec) if plan.versions and self.mlflow_up else None
        return Observation(gates=None if job is not None and plan.gates is None else tuple(measured),
                           triggers=tuple(triggers), versions=versions,
                           versions_error=None if versions is not None or not plan.versions else "MLflow down",
                           sweep_fingerprint=self.fingerprint, sweep_job=job)

    # -- the cycle ---------------------------------------------------------------------------
    def step(self, gates: GateVerdicts = "Pass", trigger: Verdict | None = "Pass", requests: Sequence[Request] = (),
             *, fail: FailWhen = False, advance: float = 2.0, observation: Observation | None = None) -> Decision:
        """decide -> carry out pending actions (stopping at the first failure) -> advance the clock."""
        observed = observation if observation is not None else self.observe(gates, trigger)
        if self.refused:
            assert last_valid_spec(self.status) == self.spec, "the status must keep the spec the levers moved under"
        decision = decide(self.spec, self.status, observed, tuple(requests), self.now, self.generation,
                          refused=self.refused)
        self.cycles.append(Cycle(self.status, observed, tuple(requests), self.now, self.spec, decision, self.refused))
        self.events.extend(decision.events)
        self.status = decision.status
        self.carry_out(fail)
        self.now += timedelta(seconds=advance)
        return decision

    def carry_out(self, fail: FailWhen = False) -> None:
        """Carry out the due actions in order, like the shell: a failure stays Pending and stops the run."""
        for action in due_actions(self.status, self.now, refused=bool(self.refused)):
            failed = fail(action) if callable(fail) else fail
            if failed:
                self.status = mark_action(self.status, action.id, self.now, error="simulated outage")
                return
            self.world.apply(action)
            self.status = mark_action(self.status, action.id, self.now)

    def run_until(self, done: Callable[[ModelRolloutStatus], bool], *, limit: int = 100, **step: Any) -> None:
        for _ in range(limit):
            if done(self.status):
                return
            self.step(**step)
        raise AssertionError(f"not reached in {limit} cycles; phase {self.status.phase} stage {self.status.stage}: "
                             f"{self.status.message}")

    # -- common destinations -------------------------------------------------------------------
    def to_canary(self) -> None:
        """Start, pass the shadow stage: the canary is live (its setFlag carried out)."""
        self.run_until(lambda s: s.stage == "canary" and s.phase == "Progressing" and not pending_actions(s))

    def to_awaiting(self) -> None:
        self.to_canary()
        self.run_until(lambda s: s.phase == "AwaitingApproval")

    def to_watching(self) -> None:
        self.to_awaiting()
        self.step(requests=[self.promote()])
        assert self.status.phase == "Watching", self.status.message

    def to_completed(self) -> None:
        self.to_watching()
        self.run_until(lambda s: s.phase == "Completed")

    def reasons(self, since: int = 0) -> list[str]:
        return [e.reason for e in self.events[since:]]
