"""The imperative shell: one reconcile cycle of one rollout, gluing adapters to the engine.

read rollout -> carry out actions left pending (a crash, a failed call) -> measure what
the engine will use -> decide -> persist the decision (the plan lands before any lever
moves) -> carry out the newly planned actions, persisting each as it is done.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from modelrollout import engine
from modelrollout.analysis import measure_stage, prometheus_for
from modelrollout.engine import Event, MeasurementPlan
from modelrollout.kube import Conflict, Kube, RolloutObject, parse_requests, rollout_from_body
from modelrollout.metrics import OperatorMetrics
from modelrollout.mlflow_provider import MlflowProvider, MlflowUnavailable
from modelrollout.observation import Observation, Request, SweepEvidence, SweepJobProgress
from modelrollout.prometheus_provider import PrometheusProvider, SharedQueries, query_key
from modelrollout.replay import replay_plan
from modelrollout.spec import ModelRolloutSpec, Stage, parse_duration
from modelrollout.status import Action, Measurement, ModelRolloutStatus, ReplayFinding
from modelrollout.sweep_job import job_manifest, job_name, job_progress

log = logging.getLogger(__name__)

EventSink = Callable[[RolloutObject, Event], None]
MAX_PROMETHEUS_CLIENTS = 32  # distinct (Prometheus, token) pairs kept; a rotated token's old client ages out
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def utcnow() -> datetime:
    return datetime.now(UTC)


def validation_message(error: ValidationError) -> str:
    """Pydantic's errors as `field.path: message; ...`, the way kubectl users read them."""
    parts = []
    for item in error.errors():
        location = ".".join(str(p) for p in item["loc"])
        parts.append(f"spec.{location}: {item['msg']}" if location else item["msg"])
    return "; ".join(parts)[:1000]


def error_text(failure: BaseException, *, with_type: bool = True) -> str:
    """A failure as one stable line: object addresses that differ on every try (urllib3 puts them in
    connection errors) are dropped, so the same outage reads the same, in status and in one Event."""
    text = f"{type(failure).__name__}: {failure}" if with_type else str(failure)
    return _ADDRESS.sub("", text)[:500]


@dataclass
class Controller:
    kube: Kube
    emit: EventSink
    metrics: OperatorMetrics
    clock: Callable[[], datetime] = utcnow
    _phases: dict[str, str] = field(default_factory=dict)
    _mlflow: dict[tuple[str, float], MlflowProvider] = field(default_factory=dict)
    # In memory, by namespace/name: the last trigger check (a quiet one is not written to status), the
    # schedule of the object as last seen (by resourceVersion, so a tick parses an object once per change),
    # and the rollouts whose watched object proved stale (their next tick reads the apiserver's).
    _triggers_checked: dict[str, datetime] = field(default_factory=dict)
    _schedules: dict[str, tuple[str, engine.Schedule | None]] = field(default_factory=dict)
    _stale: set[str] = field(default_factory=set)
    _prometheus: OrderedDict[tuple[str, str, float], PrometheusProvider] = field(default_factory=OrderedDict)
    shared_queries: SharedQueries | None = None  # None: one of its own, counted in `metrics`
    _clients_lock: threading.Lock = field(default_factory=threading.Lock)  # kopf runs handlers in threads

    def __post_init__(self) -> None:
        self.shared_queries = self.shared_queries or SharedQueries(counted=self.metrics.count_query)

    # -- entry points --------------------------------------------------------------------
    def tick(self, namespace: str, name: str, cached: Mapping[str, object] | None = None) -> None:
        """One timer tick: cheap unless a cadence is due or something awaits the operator.

        `cached` is the object as the watch last delivered it (kopf's body): when it shows nothing to
        do, the tick ends without a GET. It can only be older than the apiserver's, so it never hides
        due work for longer than the watch lags (an older status is more due). When only time has made
        the rollout due (its trigger cadence or its gate interval) and it has no action to carry out
        first, the cycle runs on `cached` itself: a quiet trigger check costs the apiserver nothing, a
        gate cycle one guarded write, and nothing moves before a write guarded by the cached
        resourceVersion has proved the copy current (a stale copy answers 409, and that rollout's next
        tick reads the apiserver's). A request, an edit, a deletion or a pending action reads it first.
        """
        key = f"{namespace}/{name}"
        work: engine.Work | None = "cycle"
        if cached is not None and key not in self._stale:
            work = self.work_due(key, cached)
        if work is None:
            return
        rollout: RolloutObject | None
        if cached is not None and (work == "triggers" or self._only_time_due(key, cached)):
            on_cached, rollout = True, rollout_from_body(copy.deepcopy(dict(cached)))
        else:
            on_cached, rollout = False, self.kube.get_rollout(namespace, name)
        if rollout is None or rollout.deleting:
            return
        started = time.perf_counter()
        try:
            self.reconcile(rollout, fresh=not on_cached)
        except Conflict as conflict:
            self._stale.add(key)
            log.info("%s; redoing the cycle on the next tick", conflict)
        finally:
            self.metrics.reconcile_seconds.observe(time.perf_counter() - started)

    def reconcile(self, rollout: RolloutObject, *, fresh: bool = True) -> None:
        """One cycle. `fresh=False`: `rollout` is the watch's copy, which may lag; nothing is carried out
        until a write guarded by its resourceVersion has proved it current.

        A cycle's own actions can make the next cycle due at once (the revert's last action done: the revert
        ends). When that is so is the engine's rule, not the shell's: after carrying out, the shell asks the
        schedule again and runs the cycle it says is due now, instead of waiting for the next tick. A whole
        cycle (plan, measure, decide), not a decision on an empty observation: a cycle due because the gate
        interval came meanwhile must measure its gates, or the interval would restart unmeasured; while
        reverting the plan measures nothing anyway. One more at most: a cycle the schedule keeps due (an
        action held under a refused spec) waits for the next tick like any other.
        """
        key = f"{rollout.namespace}/{rollout.name}"
        if fresh:
            self._stale.discard(key)
        now = self.clock()
        status = self._status(rollout)
        refused = ""
        try:
            spec = ModelRolloutSpec.model_validate(rollout.spec)
        except ValidationError as error:
            refused = validation_message(error)
            guard = engine.last_valid_spec(status)
            if guard is None:  # never valid: nothing was ever moved under it
                decision = engine.invalid(status, refused, now, rollout.generation)
                if decision.status != status:
                    self._commit(rollout, decision.status, decision.events)
                return
            spec = guard  # the levers stay guarded under the spec they moved under
        requests = [r for r in parse_requests(rollout.annotations) if not engine.is_handled(status, r)]
        if not (engine.cycle_due(spec, status, now, self._triggers_checked.get(key)) or requests
                or rollout.generation != status.observed_generation):
            return
        if fresh:
            rollout, status = self.carry_out(rollout, spec, status, refused=bool(refused))
        # Decide even while an action is stuck: a breach or an abort must still be able to roll back.
        done = self.decide_and_carry_out(rollout, spec, status, requests, now, refused=refused, fresh=fresh)
        if done is None:
            return
        rollout, status = done
        if engine.cycle_due(spec, status, self.clock(), self._triggers_checked.get(key)) == "cycle":
            self.decide_and_carry_out(rollout, spec, status, [], self.clock(), refused=refused, fresh=True)

    def decide_and_carry_out(self, rollout: RolloutObject, spec: ModelRolloutSpec, status: ModelRolloutStatus,
                             requests: list[Request], now: datetime, *, refused: str,
                             fresh: bool) -> tuple[RolloutObject, ModelRolloutStatus] | None:
        """Measure what the engine plans, decide, persist the decision, carry out what it planned. None when
        nothing was carried out: a decision that changed nothing on the watch's copy proves nothing current."""
        key = f"{rollout.namespace}/{rollout.name}"
        plan = engine.plan_measurements(spec, status, now, refused=bool(refused),
                                        triggers_checked_at=self._triggers_checked.get(key), requests=requests)
        observation = self.observe(rollout, spec, plan, now)
        if requests:  # the engine counts a request only if the apiserver refuses a forged one right now
            observation = replace(observation, requests_unverified=self.kube.admission_refuses_forgery(rollout, now))
        decision = engine.decide(spec, status, observation, requests, now, rollout.generation, refused=refused)
        changed = bool(decision.status != status or decision.events)  # a quiet trigger check writes nothing, nor a
        if changed:  # retry that changed nothing; a write guarded by the resourceVersion proves the copy current
            rollout = self._commit(rollout, decision.status, decision.events)
        if plan.triggers is not None:
            self._triggers_checked[key] = now
        self._count_verdicts(observation)
        if not (changed or fresh):
            return None
        return self.carry_out(rollout, spec, decision.status, refused=bool(refused))

    def work_due(self, key: str, body: Mapping[str, object]) -> engine.Work | None:
        """What a rollout as last seen needs: the same test `reconcile` makes (`engine.Schedule`), on the
        watched object. Its spec and status are parsed once per resourceVersion; anything unreadable
        answers "cycle", so `reconcile` says what is wrong."""
        try:
            meta, status = (dict(body.get(k) or {}) for k in ("metadata", "status"))  # type: ignore[call-overload]
            if meta.get("deletionTimestamp") or int(meta.get("generation", 0)) != status.get("observedGeneration"):
                return "cycle"
            handled = set(status.get("handledRequests") or [])
            if any(r.key not in handled for r in parse_requests(dict(meta.get("annotations") or {}))):
                return "cycle"
            version = str(meta.get("resourceVersion") or "")
            seen = self._schedules.get(key)
            if seen is None or not version or seen[0] != version:
                seen = (version, _schedule_of(body))
                self._schedules[key] = seen
            timing = seen[1]
        except (TypeError, ValueError, KeyError, AttributeError):
            return "cycle"
        return None if timing is None else timing.work(self.clock(), self._triggers_checked.get(key))

    def _only_time_due(self, key: str, body: Mapping[str, object]) -> bool:
        """Whether `work_due` found the watched object due by its schedule alone, with no action pending: what
        `work_due` answers without reading the schedule (a request, an edit, a deletion) is not."""
        seen = self._schedules.get(key)
        version = str(dict(body.get("metadata") or {}).get("resourceVersion") or "")  # type: ignore[call-overload]
        return (key not in self._stale and seen is not None and bool(version) and seen[0] == version
                and seen[1] is not None and seen[1].actions_at is None)

    def on_delete(self, namespace: str, name: str) -> bool:
        """Before the finalizer goes: revert live levers of an unfinished rollout. True when done."""
        rollout = self.kube.get_rollout(namespace, name)
        if rollout is None:
            return True
        status = self._status(rollout)
        try:
            spec = ModelRolloutSpec.model_validate(rollout.spec)
        except ValidationError:
            guard = engine.last_valid_spec(status)
            if guard is None:
                return True  # never valid: no lever ever moved under it
            spec = guard  # an invalid edit: revert under the spec the levers moved under
        if status.phase == "Completed" or not (engine.levers_touched(status) or engine.pending_actions(status)):
            return True
        if status.phase not in ("RollingBack", "RolledBack"):
            decision = engine.rollback_now(spec, status, "rollout deleted before it completed", self.clock())
            rollout = self._commit(rollout, decision.status, decision.events)
            status = decision.status
        rollout, status = self.carry_out(rollout, spec, status)
        return not engine.pending_actions(status)

    # -- measuring -----------------------------------------------------------------------
    def observe(self, rollout: RolloutObject, spec: ModelRolloutSpec, plan: MeasurementPlan,
                now: datetime) -> Observation:
        """Measure what the plan says, nothing more: what to read is the engine's call. A sweep Job the plan
        names is read first; until it completed its gates are not measured, and then its runs are their
        evidence (those of the Job's sweep id alone)."""
        namespace, mlflow = rollout.namespace, self.mlflow(spec)
        job = None if plan.sweep_job is None else self.sweep_job_progress(rollout, plan.sweep_job)
        if job is not None and (job.error is not None or job.state != "Complete"):
            plan = replace(plan, gates=None)
        job_gate = spec.sweep_job_gate()
        job_experiment = job_gate.sweep.experiment if job is not None and job_gate and job_gate.sweep else None
        evidence: dict[str, SweepEvidence] = {}

        def sweep(experiment: str) -> SweepEvidence:
            if experiment not in evidence:
                sweep_id = job.name if job is not None and experiment == job_experiment else None
                evidence[experiment] = mlflow.sweep_evidence(experiment, sweep_id=sweep_id)
            return evidence[experiment]

        gates: list[Measurement] | None = None if plan.gates is None else []
        triggers: list[Measurement] | None = None if plan.triggers is None else []
        stages = _measured_stages(plan)
        replay: tuple[ReplayFinding, ...] | None = None
        if stages or plan.replay:
            prometheus = self.prometheus(spec, self._token(namespace, spec))
        if plan.replay:
            settings = spec.analysis.replay
            replay = tuple(replay_plan(spec, prometheus.query_range, now, parse_duration(settings.since),
                                       parse_duration(settings.every), parse_duration(settings.step)))
        for stage, want_gates, want_triggers, since in stages:
            measured_gates, measured_triggers = measure_stage(spec, stage, prometheus, sweep, now, since)
            gates = gates + measured_gates if want_gates and gates is not None else gates
            triggers = triggers + measured_triggers if want_triggers and triggers is not None else triggers
        for experiment in plan.sweeps:
            sweep(experiment)
        versions, versions_error = None, None
        if plan.versions:
            try:
                versions = mlflow.model_versions(spec.models, spec.symbols)
            except MlflowUnavailable as error:
                versions_error = error_text(error, with_type=False)
        return Observation(gates=None if gates is None else tuple(gates),
                           triggers=None if triggers is None else tuple(triggers), versions=versions,
                           versions_error=versions_error, sweep_fingerprint=_fingerprint(evidence), replay=replay,
                           sweep_job=job)

    def sweep_job_progress(self, rollout: RolloutObject, key: str) -> SweepJobProgress:
        name = job_name(rollout.name, key)
        try:
            return job_progress(name, self.kube.read_job(rollout.namespace, name), rollout.uid)
        except ApiException as error:
            return SweepJobProgress(name, "Running", error=f"{error.status} {error.reason}")

    def prometheus(self, spec: ModelRolloutSpec, token: str | None) -> PrometheusProvider:
        """One provider (and HTTP connection pool) per Prometheus, timeout and token, kept across cycles
        (the most recent `MAX_PROMETHEUS_CLIENTS`), all answering through the operator's shared queries."""
        url, digest, _ = query_key(spec.prometheus.url, token, "")
        key = (url, digest, parse_duration(spec.prometheus.timeout).total_seconds())
        with self._clients_lock:
            if key not in self._prometheus:
                self._prometheus[key] = prometheus_for(spec, token, self.shared_queries)
                while len(self._prometheus) > MAX_PROMETHEUS_CLIENTS:
                    self._prometheus.popitem(last=False)
            self._prometheus.move_to_end(key)
            return self._prometheus[key]

    def _token(self, namespace: str, spec: ModelRolloutSpec) -> str | None:
        """The Prometheus bearer token from the Secret the spec names, in the rollout's namespace."""
        ref = spec.prometheus.auth_secret_ref
        if ref is None:
            return None
        try:
            return self.kube.read_secret_key(namespace, ref.name, ref.key)
        except (ApiException, LookupError) as error:
            log.warning("cannot read the Prometheus token: %s", error)
            return None

    # -- acting --------------------------------------------------------------------------
    def carry_out(self, rollout: RolloutObject, spec: ModelRolloutSpec, status: ModelRolloutStatus, *,
                  refused: bool = False) -> tuple[RolloutObject, ModelRolloutStatus]:
        """Carry out the actions the engine says are due, in order, persisting each result; stop at the
        first failure (the engine schedules its next try)."""
        for action in engine.due_actions(status, self.clock(), refused=refused):
            error = ""
            try:
                changed = self.execute(rollout, spec, action)
            except Exception as failure:  # noqa: BLE001 - any failure keeps the action pending, with its reason
                error = error_text(failure)
            status = engine.mark_action(status, action.id, self.clock(), error)
            if error:
                event = Event("Warning", "ActionFailed", f"{_describe(action, rollout.name)} failed (will retry): {error}")
            else:
                event = Event("Normal", "ActionDone", f"{_describe(action, rollout.name)}" + ("" if changed else " (already so)"))
                if action.reason == "rollback":
                    self.metrics.rollback_actions.labels(action=action.type).inc()
            rollout = self._commit(rollout, status, (event,))
            if error:
                break
        return rollout, status

    def execute(self, rollout: RolloutObject, spec: ModelRolloutSpec, action: Action) -> bool:
        if action.type == "setFlag":
            target_namespace, _, configmap = action.target.rpartition("/")
            return self.kube.set_flags(target_namespace or rollout.namespace, configmap, action.flags)
        if action.type == "runSweep":
            return self.kube.create_job(rollout.namespace, job_manifest(spec, rollout.name, rollout.uid, action.target))
        mlflow = self.mlflow(spec)
        if action.type == "moveAlias":
            return mlflow.set_alias(action.target, action.alias, action.value)
        return mlflow.set_model_tag(action.target, action.alias, action.value)

    def mlflow(self, spec: ModelRolloutSpec) -> MlflowProvider:
        """One provider per tracking server, kept across cycles so what never changes is read once."""
        key = (spec.models.tracking_uri, parse_duration(spec.prometheus.timeout).total_seconds())
        if key not in self._mlflow:
            self._mlflow[key] = MlflowProvider(*key)
        return self._mlflow[key]

    # -- persistence ---------------------------------------------------------------------
    def _status(self, rollout: RolloutObject) -> ModelRolloutStatus:
        try:
            return ModelRolloutStatus.model_validate(rollout.status)
        except ValidationError as error:
            log.error("%s/%s: unreadable status, starting from an empty one: %s", rollout.namespace, rollout.name,
                      error)
            return ModelRolloutStatus()

    def _commit(self, rollout: RolloutObject, status: ModelRolloutStatus,
                events: tuple[Event, ...] | list[Event]) -> RolloutObject:
        written = self.kube.write_status(rollout, status)
        for event in events:
            self.emit(written, event)
        key = f"{rollout.namespace}/{rollout.name}"
        self._phases[key] = status.phase
        self.metrics.set_phases(self._phases)
        self.metrics.stage_info(rollout.namespace, rollout.name, status.stage, status.phase)
        return written

    def _count_verdicts(self, observation: Observation) -> None:
        for measurement in observation.gates or ():
            self.metrics.gate_evaluations.labels(gate=measurement.name, verdict=measurement.verdict).inc()

    def forget(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        self._phases.pop(key, None)
        self._triggers_checked.pop(key, None)
        self._schedules.pop(key, None)
        self._stale.discard(key)
        self.metrics.set_phases(self._phases)


def _measured_stages(plan: MeasurementPlan) -> list[tuple[Stage, bool, bool, datetime | None]]:
    """(stage, use its gates, use its triggers, since when), measuring one stage once when both come from it."""
    if (plan.gates is not None and plan.triggers is not None and plan.gates.name == plan.triggers.name
            and plan.gates_since == plan.triggers_since):
        return [(plan.gates, True, True, plan.gates_since)]
    stages = []
    if plan.gates is not None:
        stages.append((plan.gates.model_copy(update={"rollback_triggers": []}), True, False, plan.gates_since))
    if plan.triggers is not None:
        stages.append((plan.triggers.model_copy(update={"gates": []}), False, True, plan.triggers_since))
    return stages


def _fingerprint(evidence: dict[str, SweepEvidence]) -> str | None:
    """Identifies the sweep runs judged, so a retry after a failed shadow can demand new evidence."""
    readable = [e for e in evidence.values() if e.error is None]
    if not readable:
        return None
    run_ids = sorted(row.run_id for e in readable for row in e.rows)
    return hashlib.sha256("\n".join(run_ids).encode()).hexdigest()[:16]


def _schedule_of(body: Mapping[str, object]) -> engine.Schedule | None:
    """The watched object's schedule; None when its spec was never valid (then only an edit, which bumps the
    generation, or a request can change anything)."""
    status = ModelRolloutStatus.model_validate(body.get("status") or {})
    try:
        spec = ModelRolloutSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        guard = engine.last_valid_spec(status)
        if guard is None:
            return None
        spec = guard
    return engine.schedule(spec, status)


def _describe(action: Action, rollout_name: str) -> str:
    if action.type == "setFlag":
        keys = ", ".join(f"{k}={v}" for k, v in sorted(action.flags.items()))
        return f"{action.reason}: ConfigMap {action.target} set {keys}"
    if action.type == "runSweep":
        return f"{action.reason}: create Indexed Job {job_name(rollout_name, action.target)}"
    if action.type == "moveAlias":
        return f"{action.reason}: MLflow alias {action.target}@{action.alias} -> version {action.value}"
    return f"{action.reason}: MLflow tag {action.target} {action.alias}={action.value}"
