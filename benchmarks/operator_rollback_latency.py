"""Rollback latency: from a breach visible in Prometheus to the ConfigMap back at the baseline.

A canary rollout (the fast example at the plan's 60 s GATE interval and the default 5 s trigger
interval, rollback trigger window 2 s, canary held for 10 minutes so it never moves on; the shadow
stage dropped, as it touches nothing live) runs with BTCUSDC switched to the candidate. Then the
candidate's expectancy turns negative in the SeriesFeed, and two watchers time the outcome:

* t_visible: the first moment the trigger's own PromQL (rendered by `modelrollout.gates.trigger_queries`
  and judged by `evaluate_trigger`) answers "breached", polled every 50 ms;
* t_patched: the moment a Kubernetes watch on the ConfigMap sees every key at `binary:logistic`.

latency = t_patched - t_visible, once per repetition (a fresh rollout in a fresh namespace), the
breach at a random moment of the gate cycle (quick mode: within the first trigger intervals, while
the next gate cycle is ~50 s away); the median and the maximum are reported. Goal: 5 s worst case.

How it scales: the operator looks at a rollout on a 1 s kopf timer and checks its triggers whenever
`analysis.triggerInterval` has passed since the last check, whatever the gate interval (the check
runs on the watched copy of the object and costs the apiserver nothing unless it finds a breach).
So a breach waits U(0, triggerInterval) for the next check, plus up to one 1 s tick, plus the cycle
itself (the trigger queries, the status write with the plan, the ConfigMap GET + PATCH; tens of ms).
Median ~ triggerInterval/2 + 0.5 s + cycle, worst case ~ triggerInterval + 1 s + cycle: about 3 s and
6 s at the default 5 s, independent of the 60 s gate interval (which before triggers had their own
cadence gave ~31 s and ~61 s). The time from the bad trades to the breach being visible (scrape
interval, trigger window) comes on top.
"""

from __future__ import annotations

import contextlib
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes

from devstack.bench import emit
from devstack.operator import start_operator
from devstack.scenario import (
    BASELINE,
    CONFIGMAP,
    Stack,
    apply_manifests,
    canary_flag_done,
    list_rollouts,
    prepare_namespace,
    rollout_manifest,
    start_stack,
    wait_until,
)
from modelrollout.gates import evaluate_trigger, trigger_queries
from modelrollout.prometheus_provider import PrometheusProvider
from modelrollout.spec import ModelRolloutSpec, RollbackTrigger

QUICK = os.environ.get("BENCH_QUICK") == "1"
REPETITIONS = 3 if QUICK else 8
GATE_INTERVAL = "60s"
TRIGGER_INTERVAL_S = 5.0  # the default (AnalysisSpec.trigger_period), left unset in the manifest
BREACH_WITHIN_S = TRIGGER_INTERVAL_S * 2 if QUICK else 60.0  # when the breach comes, after the canary switch
TRIGGER_WINDOW = "2s"
POLL_S = 0.05
SYMBOL = "BTCUSDC"


def log(message: str) -> None:
    print(f"[rollback-latency] {message}", file=sys.stderr, flush=True)


def canary_only(spec: dict[str, Any]) -> None:
    """Gate interval 60 s, triggers at their default, a short trigger window, and a canary (the first stage:
    it switches within a second of the apply) that stays a canary for the whole measurement."""
    spec["analysis"] = {"interval": GATE_INTERVAL}
    spec["stages"] = spec["stages"][1:]
    canary = spec["stages"][0]
    canary["minDuration"] = "10m"
    for trigger in canary["rollbackTriggers"]:
        trigger["window"] = TRIGGER_WINDOW


class FirstTime:
    """Records the monotonic time at which a watcher first saw its condition."""

    def __init__(self) -> None:
        self.at: float | None = None
        self.event = threading.Event()

    def mark(self) -> None:
        if self.at is None:
            self.at = time.monotonic()
            self.event.set()


def breached(provider: PrometheusProvider, trigger: RollbackTrigger, symbols: Sequence[str]) -> bool:
    """The trigger's verdict on SYMBOL as the operator reaches it: every query it reads, by role."""
    results = {role: provider.query(promql) for role, promql in trigger_queries(trigger, symbols).items()}
    verdicts = evaluate_trigger(trigger, symbols, results, datetime.now(UTC))
    return any(m.symbol == SYMBOL and m.verdict == "Fail" for m in verdicts)


def watch_prometheus(provider: PrometheusProvider, spec: ModelRolloutSpec, seen: FirstTime, stop: threading.Event,
                     timeout: float) -> None:
    """Poll the canary trigger every 50 ms until it answers "breached" for the symbol."""
    canary = spec.stages[0]
    trigger, symbols = canary.rollback_triggers[0], spec.stage_symbols(canary)
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        if breached(provider, trigger, symbols):
            seen.mark()
            return
        time.sleep(POLL_S)


def watch_configmap(core: kubernetes.client.CoreV1Api, namespace: str, resource_version: str, seen: FirstTime,
                    stop: threading.Event, timeout: float) -> None:
    """A Kubernetes watch on the ConfigMap: marks when every key is back at the baseline."""
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        watch = kubernetes.watch.Watch()
        for event in watch.stream(core.list_namespaced_config_map, namespace,
                                  field_selector=f"metadata.name={CONFIGMAP}", resource_version=resource_version,
                                  timeout_seconds=max(1, int(deadline - time.monotonic()))):
            data = event["object"].data or {}
            resource_version = event["object"].metadata.resource_version
            if data and all(value == BASELINE for value in data.values()):
                seen.mark()
                watch.stop()
                return
            if stop.is_set():
                watch.stop()
                return


def one_repetition(stack: Stack, core: kubernetes.client.CoreV1Api, namespace: str, strategy: str,
                   rng: random.Random) -> float:
    manifest = rollout_manifest(stack, "focal-loss", namespace, strategy, mutate=canary_only)
    spec = ModelRolloutSpec.model_validate(manifest["spec"])
    apply_manifests(stack, [manifest])
    wait_until(lambda: all(canary_flag_done(r) for r in list_rollouts(stack, namespace)), "the canary switch", 120)
    configmap = core.read_namespaced_config_map(CONFIGMAP, namespace)
    assert configmap.data.get(f"CVN_LOSS_FUNCTION__{SYMBOL}", "").startswith("focal"), configmap.data
    assert spec.analysis.trigger_period().total_seconds() == TRIGGER_INTERVAL_S
    time.sleep(rng.uniform(0, BREACH_WITHIN_S))  # the breach at a random phase of both cadences

    visible, patched, stop = FirstTime(), FirstTime(), threading.Event()
    provider = PrometheusProvider(stack.prometheus.url, timeout_s=2)
    watchers = [
        threading.Thread(target=watch_configmap, daemon=True,
                         args=(core, namespace, configmap.metadata.resource_version, patched, stop, 60)),
        threading.Thread(target=watch_prometheus, daemon=True, args=(provider, spec, visible, stop, 60)),
    ]
    for watcher in watchers:
        watcher.start()
    breached_at = time.monotonic()
    stack.feed.set("expectancy_net_realized", -0.05, symbol=SYMBOL, variant="candidate")
    try:
        if not (visible.event.wait(60) and patched.event.wait(60)):
            raise TimeoutError(f"no rollback seen: visible={visible.at} patched={patched.at}")
    finally:
        stop.set()
        stack.feed.set("expectancy_net_realized", 0.02, symbol=SYMBOL, variant="candidate")
    assert visible.at is not None and patched.at is not None
    log(f"{namespace}: visible {visible.at - breached_at:.3f}s after the feed changed, "
        f"ConfigMap reverted {patched.at - visible.at:.3f}s after that")
    # Before the next repetition, the trigger must read healthy again (the feed is shared).
    trigger, symbols = spec.stages[0].rollback_triggers[0], spec.stage_symbols(spec.stages[0])
    wait_until(lambda: not breached(provider, trigger, symbols), "the trigger healthy again", 30)
    return patched.at - visible.at


def main() -> None:
    rng = random.Random(4)
    with contextlib.redirect_stdout(sys.stderr), tempfile.TemporaryDirectory(prefix="bench-rollback-") as scratch:
        workdir = Path(scratch)
        log(f"starting the stack in {workdir}")
        stack = start_stack(workdir, sweep_folds=4)  # no shadow stage: the sweep is not judged
        operator = None
        try:
            suffix = uuid.uuid4().hex[:6]
            namespaces = [f"lat-{i}-{suffix}" for i in range(REPETITIONS)]
            for i, namespace in enumerate(namespaces):
                prepare_namespace(stack, namespace, strategy=f"lat{i}{suffix}")
            operator = start_operator(workdir, stack.plane.kubeconfig, namespaces)
            core = kubernetes.client.CoreV1Api(
                kubernetes.config.new_client_from_config(config_file=str(stack.plane.kubeconfig)))
            latencies = []
            for i, namespace in enumerate(namespaces):
                latencies.append(one_repetition(stack, core, namespace, f"lat{i}{suffix}", rng))
                log(f"repetition {i + 1}/{REPETITIONS}: {latencies[-1]:.3f}s")
            goal = 5.0
            emit("operator_rollback_latency_median", statistics.median(latencies), "s", goal, "lower")
            emit("operator_rollback_latency_max", max(latencies), "s", goal, "lower")
            log(f"all: {', '.join(f'{x:.3f}' for x in latencies)}")
        finally:
            if operator is not None:
                operator.stop()
            stack.stop()


if __name__ == "__main__":
    main()
