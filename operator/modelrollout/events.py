"""Kubernetes Events on the rollout, so `kubectl describe mro` tells the story (like Flagger's).

An Event that repeats (the same type, reason and message on the same object: a stuck action
failing again) is one Event object whose `count` and `lastTimestamp` go up, the way
client-go's event correlator aggregates. Its name is derived from what it says, so the
aggregation needs no memory in the operator and survives restarts.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from modelrollout.crd import GROUP, KIND, VERSION
from modelrollout.engine import Event
from modelrollout.kube import CoreApi, RolloutObject

log = logging.getLogger(__name__)
COMPONENT = "modelrollout-operator"
MESSAGE_LIMIT = 1024


def event_name(rollout: RolloutObject, event: Event) -> str:
    """One name per distinct Event on one object (uid included: a re-created rollout starts afresh)."""
    key = "\x00".join((rollout.uid, event.type, event.reason, event.message[:MESSAGE_LIMIT]))
    return f"{rollout.name}.{hashlib.sha256(key.encode()).hexdigest()[:16]}"


class EventRecorder:
    def __init__(self, core: CoreApi) -> None:
        self.core = core

    def __call__(self, rollout: RolloutObject, event: Event) -> None:
        """Post one Event, or count one more of the same; a failure is logged, never fatal to the cycle."""
        now = datetime.now(UTC)
        log.log(logging.WARNING if event.type == "Warning" else logging.INFO, "%s/%s %s: %s", rollout.namespace,
                rollout.name, event.reason, event.message)
        name = event_name(rollout, event)
        body = {  # a core/v1 Event; the client serializes the datetimes
            "metadata": {"name": name, "namespace": rollout.namespace},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": rollout.name,
                               "namespace": rollout.namespace, "uid": rollout.uid},
            "type": event.type, "reason": event.reason, "message": event.message[:MESSAGE_LIMIT],
            "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            try:
                self.core.create_namespaced_event(rollout.namespace, body)
            except ApiException as error:
                if error.status != 409:
                    raise
                seen = self.core.read_namespaced_event(name, rollout.namespace)
                self.core.patch_namespaced_event(name, rollout.namespace, {
                    "count": (seen.get("count") or 1) + 1, "lastTimestamp": now.isoformat().replace("+00:00", "Z")})
        except ApiException as error:
            log.warning("could not post event %s on %s/%s: %s", event.reason, rollout.namespace, rollout.name,
                        error.reason)

    def list_for(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The Events on the named object (as the apiserver gives them)."""
        return list(self.core.list_namespaced_event(namespace, f"involvedObject.name={name}").get("items") or [])
