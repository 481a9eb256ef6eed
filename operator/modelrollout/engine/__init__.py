"""The decision engine: every rule of a rollout, as one pure function of its inputs.

`decide(spec, status, observation, requests, now, generation)` returns the next status and
the Events to emit. Levers are never moved here: the engine *plans* actions into
`status.actions` (Pending), and the shell carries them out and marks them Done. Because the
plan is persisted before anything moves, a crash between the two is resumed, not repeated;
and because every action sets a target state, carrying one out twice is harmless.

Rules, in the order they are applied each cycle:
1. A new rollout starts at its first stage. An edit of what is rolled out (the change, the
   models, symbols, stages, rollback) reverts any live lever and restarts from the first stage.
2. A breached rollback trigger rolls back at once, whatever else is going on (even paused,
   even with actions still pending, and before any request: the triggers were measured for
   the state as it is, so a `promote` in the same cycle cannot move more levers first).
3. Human requests count only when the apiserver vouches for their requester this cycle and
   the spec names them (`mayRollBack` for abort, `mayApprove` for promote and retry); every
   one handled, accepted or refused, goes into the history with who asked. `abort` rolls back
   now; `retry` re-runs the failed stage (after a failed shadow only with new sweep evidence)
   or resumes a paused/degraded stage; `promote` approves the awaited stage, valid only for
   the current revision while it is awaited.
4. Planned actions still pending: nothing else happens until they are done. A failed one is
   tried again on a backoff schedule (`retry_delay`), which the shell follows (`due_actions`).
5. `spec.paused` stops progression; triggers keep running.
6. Gates: an error holds (Degraded beyond `consecutiveErrorLimit`); a failure after the
   stage's minimum duration counts, and beyond `failureLimit` rolls back (a failed shadow
   ends as NotPromoted, touching nothing); inconclusive results after the minimum duration
   count, and beyond `inconclusiveLimit` pause for a human; only a clean pass of every gate
   after the minimum duration completes a stage. Nothing ever promotes on missing data.

The full stage switches symbols by the flag alone; the MLflow champion moves only when the
rollout completes, so before that a ConfigMap revert alone brings the baseline back. A spec the
operator refuses mid-rollout is decided under the last valid one (`last_valid_spec`): nothing
progresses, but triggers, abort and any revert go on (`cycle`'s guard).

One concern per module, and one entry, `decide`, which applies the rules above in their order:
* `schedule`: when a rollout needs the operator, and what to measure then (the one "is a cycle due" rule);
* `assessment`: measurements judged against a stage's limits (gates, triggers, the baseline replay);
* `requests`: who may ask what, and what each request comes to;
* `levers`: what is live, and the plans of actions that move it (and their log);
* `position`: where a rollout stands (its revision, current stage, the stage guarding what is live);
* `cycle`: `decide` itself, applying what the others judge: stages, reverts, restarts, the guard under a
  refused spec, and the phase, conditions and history.
All but `cycle` only read spec, status and measurements and return data. What the shell, the plugin and
the tests use is named here (`__all__`); the modules' other names are the engine's own.
"""

from modelrollout.engine.assessment import gate_verdict
from modelrollout.engine.cycle import (
    PAUSED_BY_SPEC,
    Decision,
    Event,
    decide,
    invalid,
    last_valid_spec,
    rollback_now,
)
from modelrollout.engine.levers import due_actions, levers_touched, mark_action, pending_actions, retry_delay
from modelrollout.engine.position import revision_of
from modelrollout.engine.requests import is_handled
from modelrollout.engine.schedule import MeasurementPlan, Schedule, Work, cycle_due, plan_measurements, schedule

__all__ = [
    "PAUSED_BY_SPEC",
    "Decision",
    "Event",
    "MeasurementPlan",
    "Schedule",
    "Work",
    "cycle_due",
    "decide",
    "due_actions",
    "gate_verdict",
    "invalid",
    "is_handled",
    "last_valid_spec",
    "levers_touched",
    "mark_action",
    "pending_actions",
    "plan_measurements",
    "retry_delay",
    "revision_of",
    "rollback_now",
    "schedule",
]
