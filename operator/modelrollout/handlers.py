"""kopf glue: a timer drives each rollout's reconcile cycle; deletion reverts first.

Design around kopf's traps: all state is in `.status` (progress goes to annotations, never
to undeclared status fields the apiserver would prune; no diff-base is kept, see
`NoDiffBase`); timers add
kopf's finalizer, so deleting an unfinished rollout reverts its levers before the
finalizer goes, and blocks while no operator runs (documented in docs/semantics.md);
handlers never return values (kopf would store them in status).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import kopf

from modelrollout.controller import Controller
from modelrollout.crd import GROUP, PLURAL, VERSION
from modelrollout.events import EventRecorder
from modelrollout.kube import Kube, api_client
from modelrollout.metrics import OperatorMetrics

TICK_SECONDS = 1.0
log = logging.getLogger(__name__)


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff-base: every object reads as unchanged to kopf, and nothing is stored.

    kopf keeps the last handled spec (the diff-base) for on.create/update/resume handlers; the
    operator has none (a timer and on.delete, which kopf detects without it). Kept, it would cost
    every rollout a 5 KB annotation, sent back with every status write and watch event, and kopf a
    deep copy of the whole object (status included) on every watch event to build it.
    """

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return kopf.BodyEssence()

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.peering.mandatory = memo.get("peering_mandatory", True)
    settings.posting.enabled = False  # our own Events are explicit; kopf's per-handler chatter is not
    workers: int = memo.get("max_workers", 20)
    settings.execution.max_workers = workers
    client = api_client(connections=workers)
    metrics: OperatorMetrics = memo.get("metrics") or OperatorMetrics()
    memo.controller = Controller(kube=Kube(client), emit=EventRecorder(Kube(client).core), metrics=metrics)


@kopf.timer(GROUP, VERSION, PLURAL, interval=TICK_SECONDS, sharp=False)
def tick(name: str, namespace: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    memo.controller.tick(namespace, name, cached=body)


@kopf.on.delete(GROUP, VERSION, PLURAL)
def revert_on_delete(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    if not memo.controller.on_delete(namespace, name):
        raise kopf.TemporaryError("reverting live levers before the rollout goes", delay=2)
    memo.controller.forget(namespace, name)
