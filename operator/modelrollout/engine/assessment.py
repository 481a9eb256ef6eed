"""Assessment: what a cycle's measurements say, judged against the stage's limits, returned as data.

A judgement here reads the measurements, the stage and its counters and nothing else, and changes nothing:
the same inputs always judge the same way, and the cycle only applies the outcome (a phase, a condition, a
message, a rollback). Nothing ever promotes on missing data: no measurement at all is Inconclusive.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from modelrollout.replay import alarming, describe
from modelrollout.spec import ModelRolloutSpec, Stage, parse_duration, stage_duration
from modelrollout.status import Counters, Measurement, ReplayFinding, Verdict

VERDICT_SEVERITY: dict[Verdict, int] = {"Pass": 0, "Inconclusive": 1, "Error": 2, "Fail": 3}
Said = tuple[str, str, str]  # a condition's status, reason and message


def gate_verdict(measurements: Iterable[Measurement]) -> Verdict:
    """The worst verdict of a set (Fail > Error > Inconclusive > Pass); no measurement at all is Inconclusive."""
    verdicts = [m.verdict for m in measurements]
    if not verdicts:
        return "Inconclusive"
    return max(verdicts, key=lambda v: VERDICT_SEVERITY[v])


@dataclass(frozen=True)
class GateAssessment:
    """One gate evaluation of a stage (rule 6). `outcome`: the stage passed every gate; failed beyond
    `failureLimit`; pauses for a human (inconclusive beyond its limit); degrades (errors beyond their limit);
    or holds. `message` is what the rollout says then ("" keeps the summary), `degraded` the Degraded
    condition (None: left as it is, the stage fails)."""

    outcome: Literal["pass", "fail", "pause", "degrade", "hold"]
    counters: Counters  # the stage's counters after this evaluation
    summary: str  # every counted gate's verdict
    message: str = ""
    degraded: Said | None = None
    errors: tuple[str, ...] = ()  # gates whose measurement erred (none: a Degraded rollout has recovered)
    failures: tuple[str, ...] = ()  # gates that failed


def assess_gates(stage: Stage, measured: Sequence[Measurement], counters: Counters,
                 elapsed: timedelta) -> GateAssessment:
    """An error holds and counts; a failure counts once the stage's minimum duration is over; inconclusive
    results count from then too (from `maxDuration` on, when there is one: a sequential gate may still decide
    until then); a clean pass after the minimum duration passes. Dry-run gates are shown, never counted."""
    gates = [m for m in measured if not m.dry_run]
    by_gate = {g.name: gate_verdict(m for m in gates if m.name == g.name) for g in stage.gates if not g.dry_run}
    limits, needed = stage.limits, stage_duration(stage)
    decisive = elapsed >= needed
    errors, failures, inconclusive = (tuple(n for n, v in by_gate.items() if v == verdict)
                                      for verdict in ("Error", "Fail", "Inconclusive"))
    summary = ", ".join(f"{name}={verdict}" for name, verdict in by_gate.items()) or "no gates"
    counted = counters.model_copy()
    if errors:
        counted.consecutive_errors += 1
        why = _why(gates, "Error")
        erred: Said = ("True", "MeasurementErrors", why)
        if counted.consecutive_errors > limits.consecutive_error_limit:
            return GateAssessment("degrade", counted, summary, f"holding: {counted.consecutive_errors} consecutive "
                                  f"measurement errors ({', '.join(errors)}): {why}", erred, errors, failures)
        return GateAssessment("hold", counted, summary, f"holding: measurement error in {', '.join(errors)}: {why}",
                              erred, errors, failures)
    counted.consecutive_errors = 0
    if failures and decisive:
        counted.failures += 1
        if counted.failures > limits.failure_limit:
            return GateAssessment("fail", counted, summary, failures=failures)
    if inconclusive:
        why = _why(gates, "Inconclusive")
        undecided: Said = ("True", "MeasurementsInconclusive", why)
        if decisive and (not stage.max_duration or elapsed >= parse_duration(stage.max_duration)):
            counted.inconclusive += 1
            if counted.inconclusive > limits.inconclusive_limit:
                return GateAssessment("pause", counted, summary, f"paused for a human: {counted.inconclusive} "
                                      f"inconclusive evaluations ({', '.join(inconclusive)}): {why}; "
                                      "`kubectl modelrollout retry` resumes", undecided, failures=failures)
        return GateAssessment("hold", counted, summary, f"holding: inconclusive {', '.join(inconclusive)}: {why}",
                              undecided, failures=failures)
    healthy: Said = ("False", "MeasurementsHealthy", "")
    if not decisive:
        return GateAssessment("hold", counted, summary, f"{summary}; {_fmt_timedelta(needed - elapsed)} left in "
                              f"{stage.name}", healthy, failures=failures)
    return GateAssessment("hold" if failures else "pass", counted, summary, degraded=healthy, failures=failures)


@dataclass(frozen=True)
class TriggerAssessment:
    """A trigger check (rule 2): whether the triggers shown in the status are replaced by these measurements,
    and why to roll back now ("" when no trigger is breached)."""

    shown: bool
    breach: str


def assess_triggers(measured: Sequence[Measurement], shown: Sequence[Measurement], *,
                    gate_cycle: bool) -> TriggerAssessment:
    """A breach (a Fail not in dry run) rolls back. The shown triggers are replaced on a gate cycle (which
    writes anyway), on a breach, or when a verdict changed: a check that finds the same verdicts changes nothing."""
    breached = [m for m in measured if m.verdict == "Fail" and not m.dry_run]
    if not breached:
        return TriggerAssessment(shown=gate_cycle or _verdicts(measured) != _verdicts(shown), breach="")
    first = breached[0]
    return TriggerAssessment(shown=True, breach=f"rollback trigger {first.name} breached for {first.symbol}: "
                                                f"{_fmt(first.value)} ({first.threshold})")


@dataclass(frozen=True)
class ReplayAssessment:
    """The plan's rules replayed over the baseline's own history: the BaselineReplay condition, the first
    finding that could not be read, and a Warning's message when a rule would have fired there too often."""

    condition: Said
    error: str = ""
    warning: str = ""


def assess_replay(spec: ModelRolloutSpec, replay: Sequence[ReplayFinding]) -> ReplayAssessment:
    """Advisory, never a hold: a rule that would often have fired against the baseline is worth a look
    before it judges the candidate."""
    settings = spec.analysis.replay
    errors = [f.note for f in replay if f.note.startswith("error")]
    error = errors[0] if errors else ""
    if errors and len(errors) == len(replay):
        return ReplayAssessment(("Unknown", "HistoryUnavailable", f"the baseline's history could not be read "
                                 f"({error}); run kubectl modelrollout replay when it can"), error)
    loud = alarming(replay, settings.warn_above)
    if not loud:
        return ReplayAssessment(("True", "QuietOnBaseline", f"no rule would have fired against the baseline in more "
                                 f"than {settings.warn_above:.0%} of the windows of the last {settings.since}"), error)
    lengths = {s.name: stage_duration(s) for s in spec.stages}
    message = "; ".join(describe(f, lengths[f.stage]) for f in loud[:3]) + (
        f" (and {len(loud) - 3} more)" if len(loud) > 3 else "")
    return ReplayAssessment(("False", "WouldFireOnBaseline", message), error,
                            f"replayed on the baseline's last {settings.since}: {message}")


def _why(gates: Iterable[Measurement], verdict: Verdict) -> str:
    return "; ".join(m.message for m in gates if m.verdict == verdict)[:300]


def _verdicts(measurements: Iterable[Measurement]) -> list[tuple[str, str, Verdict, bool]]:
    return [(m.name, m.symbol, m.verdict, m.dry_run) for m in measurements]


def _fmt(value: float | None) -> str:
    return "no data" if value is None else f"{value:.4g}"


def _fmt_timedelta(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return (f"{days}d" if days else "") + (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + \
        f"{seconds}s"
