"""The shadow stage's sweep as a Kubernetes Indexed Job: its name, its manifest, and its progress read back.

Pure functions of the spec and the objects the apiserver returns; `modelrollout.kube` sends and reads them.
One completion index per shard of the (symbol, fold) cells (`model-runtime sweep --shard`), a parallelism
the spec sets, every run tagged with the Job's name as its sweep id: the gate judges that sweep alone, so
runs left in the experiment by other sweeps, or by an earlier Job, never mix in. The Job is owned by its
rollout (deleting the rollout deletes it) and is the Kubernetes answer to a sweep that outgrows one machine:
the scheduler places the shards, the Job controller retries a failed one (`backoffLimitPerIndex`), and
`activeDeadlineSeconds` bounds the whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

from modelrollout.crd import GROUP, KIND, VERSION
from modelrollout.observation import SweepJobProgress
from modelrollout.spec import ModelRolloutSpec, parse_duration

__all__ = ["MANAGED_BY", "job_key", "job_manifest", "job_name", "job_progress"]

MANAGED_BY = "modelrollout"
_NAME_PREFIX_MAX = 40  # name + "-sweep-" + 8-character key stays within a label value's 63 characters


def job_key(revision: str, stage_started_at: datetime) -> str:
    """The engine's key of one shadow stage attempt's Job: a new attempt (a retry, an edit) gets a new Job."""
    return hashlib.sha256(f"{revision}/{stage_started_at.isoformat()}".encode()).hexdigest()[:8]


def job_name(rollout_name: str, key: str) -> str:
    """The Job's name, which is also the sweep id every run of it carries."""
    return f"{rollout_name[:_NAME_PREFIX_MAX].rstrip('-.')}-sweep-{key}"


def job_manifest(spec: ModelRolloutSpec, rollout_name: str, rollout_uid: str, key: str) -> dict[str, Any]:
    """The Indexed Job that runs the shadow stage's sweep (`spec.sweep_job_gate()`, which must exist)."""
    gate = spec.sweep_job_gate()
    if gate is None or gate.sweep is None or gate.sweep.job is None:
        raise ValueError("the spec has no sweep gate with a job")
    job, name = gate.sweep.job, job_name(rollout_name, key)
    args = ["sweep", "--tracking-uri", spec.models.tracking_uri, "--experiment", gate.sweep.experiment,
            "--symbols", ",".join(spec.symbols), "--strategy", spec.models.strategy,
            "--baseline-loss", spec.change.baseline, "--loss", spec.change.candidate, "--folds", str(job.folds),
            "--sweep-id", name, "--shard", f"$(JOB_COMPLETION_INDEX)/{job.shards}", *job.args]
    container: dict[str, Any] = {
        "name": "sweep", "image": job.image, "imagePullPolicy": job.image_pull_policy, "args": args,
        "env": [{"name": e.name, "value": e.value} for e in job.env],
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if job.service_account_name:
        pod["serviceAccountName"] = job.service_account_name
    labels = {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/component": "sweep"}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {
            "name": name, "labels": labels, "annotations": {f"{GROUP}/rollout": rollout_name},
            "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": rollout_name,
                                 "uid": rollout_uid, "controller": True, "blockOwnerDeletion": False}],
        },
        "spec": {
            "completionMode": "Indexed", "completions": job.shards, "parallelism": job.parallelism,
            "backoffLimitPerIndex": job.backoff_limit_per_index,
            "activeDeadlineSeconds": int(parse_duration(job.active_deadline).total_seconds()),
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def job_progress(name: str, body: Mapping[str, Any] | None, rollout_uid: str) -> SweepJobProgress:
    """How far the Job got, from the object the apiserver returned (None: there is none).

    Complete only on the Job controller's `Complete` condition, when every index succeeded; `Failed` (or
    `FailureTarget`, its forerunner) ends it: an index out of retries, or the deadline passed. A Job of that
    name owned by something else is not this rollout's sweep, and counts as failed.
    """
    if body is None:
        return SweepJobProgress(name, "Missing", message="the Job is gone (deleted before it completed?)")
    owners = {ref.get("uid") for ref in (body.get("metadata") or {}).get("ownerReferences") or []}
    if rollout_uid not in owners:
        return SweepJobProgress(name, "Failed", message="a Job of that name exists but this rollout does not own it")
    status = body.get("status") or {}
    counted = partial(SweepJobProgress, name, succeeded=int(status.get("succeeded") or 0),
                      active=int(status.get("active") or 0), failed=int(status.get("failed") or 0))
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    ended = conditions.get("Failed") or conditions.get("FailureTarget")
    if ended is not None:
        why = ": ".join(part for part in (ended.get("reason"), ended.get("message")) if part)
        failed_indexes = status.get("failedIndexes")
        return counted("Failed", message=why + (f" (failed indexes {failed_indexes})" if failed_indexes else ""))
    if "Complete" in conditions:
        return counted("Complete")
    return counted("Running")
