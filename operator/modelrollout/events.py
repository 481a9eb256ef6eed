"""Kubernetes Events on the rollout, so `kubectl describe mro` tells the story (like Flagger's)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from kubernetes.client import CoreV1Api, CoreV1Event, CoreV1EventList, V1EventSource, V1ObjectMeta, V1ObjectReference
from kubernetes.client.exceptions import ApiException

from modelrollout.crd import GROUP, KIND, VERSION
from modelrollout.engine import Event
from modelrollout.kube import RolloutObject

log = logging.getLogger(__name__)
COMPONENT = "modelrollout-operator"


class EventRecorder:
    def __init__(self, core: CoreV1Api) -> None:
        self.core = core

    def __call__(self, rollout: RolloutObject, event: Event) -> None:
        """Post one Event; an Event that cannot be posted is logged, never fatal to the cycle."""
        now = datetime.now(UTC)
        log.log(logging.WARNING if event.type == "Warning" else logging.INFO, "%s/%s %s: %s", rollout.namespace,
                rollout.name, event.reason, event.message)
        body = CoreV1Event(
            metadata=V1ObjectMeta(name=f"{rollout.name}.{uuid.uuid4().hex[:12]}", namespace=rollout.namespace),
            involved_object=V1ObjectReference(api_version=f"{GROUP}/{VERSION}", kind=KIND, name=rollout.name,
                                              namespace=rollout.namespace, uid=rollout.uid),
            type=event.type, reason=event.reason, message=event.message[:1024],
            source=V1EventSource(component=COMPONENT), reporting_component=COMPONENT,
            first_timestamp=now, last_timestamp=now, count=1,
        )
        try:
            self.core.create_namespaced_event(rollout.namespace, body)
        except ApiException as error:
            log.warning("could not post event %s on %s/%s: %s", event.reason, rollout.namespace, rollout.name,
                        error.reason)

    def list_for(self, namespace: str, name: str) -> CoreV1EventList:
        return self.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
