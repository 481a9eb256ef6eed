"""Scale: many concurrent ModelRollouts in one namespace, driven by one operator process.

Every rollout is the fast example held at its canary stage (minDuration 1 h, analysis interval
10 s), each with its own flag ConfigMap, all reading the same registered models. The canary is
the stage that exercises the most per cycle: 4 Prometheus gates + 1 rollback trigger (9 distinct
queries), the MLflow version read, a status write. After every rollout has switched its canary
symbol and a warm-up interval has passed, a steady window is measured:

* RSS of the operator process (/proc/PID/status VmRSS, sampled every second): median and peak;
* CPU seconds (utime+stime from /proc/PID/stat) per rollout analysis cycle and per round
  (one cycle of every rollout);
* Prometheus queries per rollout cycle, from Prometheus' own
  `prometheus_http_requests_total{handler="/api/v1/query"}`, and per distinct query and second:
  rollouts asking the same query within 1 s share one answer (docs/semantics.md, "Shared
  queries"), so the goal is at most one per distinct query per second however many rollouts ask;
  the operator's own `modelrollout_prometheus_queries_total` and `..._shared_total` say how many
  it sent and how many it shared;
* kube-apiserver requests per rollout cycle, from its /metrics (the operator's GETs and PUTs);
* the effective analysis interval (window x rollouts / cycles completed): goal interval + 1 s
  (the 1 s timer tick), anything longer means the operator does not keep up and rollback
  latency grows by as much;
* the reconcile duration p50/p99 from the operator's `modelrollout_reconcile_duration_seconds`
  (every 1 s timer tick is observed, so p50 is the cheap "not due yet" tick and p99 the cycle).

A cycle is counted from `modelrollout_gate_evaluations` (each canary cycle adds one per gate and
canary symbol). `BENCH_QUICK=1`: 20 rollouts, 20 s window, a smaller sweep. `BENCH_ROLLOUTS=N`
(or the first argument) sets the count; `make bench` runs 200 and 1,000. The RSS goal is issue
12's 150 MB up to 200 rollouts and 200 MB above. The machine's 1-minute load average at the end
of the window is a figure of its own (`..._load_average_1m`): on a shared machine, read the
others beside it. `BENCH_PROFILE=1` runs the operator under `devstack.sampler` and prints where
its threads' wall time went during the window (the sampler costs CPU: don't quote those figures).
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from devstack.bench import emit
from devstack.operator import start_operator
from devstack.sampler import read_profile, start_sampled_operator
from devstack.scenario import (
    Stack,
    canary_flag_done,
    prepare_namespace,
    rollout_manifest,
    start_stack,
    wait_until,
)
from modelrollout.crd import GROUP, PLURAL, VERSION
from modelrollout.gates import gate_queries, trigger_queries
from modelrollout.spec import ModelRolloutSpec

QUICK = os.environ.get("BENCH_QUICK") == "1"
ROLLOUTS = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("BENCH_ROLLOUTS", "20" if QUICK else "200"))
WINDOW_S = 20.0 if QUICK else 60.0
INTERVAL_S = 10.0
RSS_GOAL_MB = 150.0 if ROLLOUTS <= 200 else 200.0
CREATORS = 4  # concurrent creates: the apiserver's CEL validation, not the client, sets the pace
PROFILE = os.environ.get("BENCH_PROFILE") == "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[scale] {message}", file=sys.stderr, flush=True)


def held_canary(configmap: str) -> Any:
    def mutate(spec: dict[str, Any]) -> None:
        spec["analysis"]["interval"] = f"{INTERVAL_S:g}s"
        spec["change"]["configMap"]["name"] = configmap
        spec["stages"][1]["minDuration"] = "1h"
    return mutate


def distinct_queries(spec: ModelRolloutSpec, stage_index: int) -> int:
    """The stage's distinct PromQL: what one analysis cycle should send to Prometheus."""
    stage = spec.stages[stage_index]
    symbols = spec.stage_symbols(stage)
    queries = {q for gate in stage.gates for q in gate_queries(gate, symbols).values()}
    queries |= {q for t in stage.rollback_triggers for q in trigger_queries(t, symbols).values()}
    return len(queries)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15 of stat)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError("no VmRSS")


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def samples(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of `name` whose labels include `labels` (text exposition format)."""
    found = []
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})?\s+(\S+)", line)
        if not match:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            found.append((have, float(match.group(2))))
    return found


def total(text: str, name: str, **labels: str) -> float:
    return sum(value for _, value in samples(text, name, **labels))


def histogram_quantile(q: float, before: str, after: str, name: str) -> float:
    """Like PromQL's histogram_quantile over the window's bucket increments (linear within a bucket)."""
    def buckets(text: str) -> dict[float, float]:
        return {float(lbl["le"]): value for lbl, value in samples(text, f"{name}_bucket")}

    start, end = buckets(before), buckets(after)
    bounds = sorted(end)
    counts = [end[b] - start.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    rank, lower, below = q * counts[-1], 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(cumulative - below, 1e-12)
        lower, below = bound, cumulative
    return lower


class Snapshot:
    """Every counter the window is measured by, read at one moment."""

    def __init__(self, stack: Stack, operator_pid: int, metrics_url: str) -> None:
        self.at = time.monotonic()
        self.cpu = cpu_seconds(operator_pid)
        self.operator = scrape(metrics_url)
        self.prometheus = scrape(f"{stack.prometheus.url}/metrics")
        self.apiserver = stack.plane.kubectl("get", "--raw", "/metrics").stdout

    def gate_evaluations(self) -> float:
        return total(self.operator, "modelrollout_gate_evaluations_total")

    def queries(self) -> float:
        return total(self.prometheus, "prometheus_http_requests_total", handler="/api/v1/query")

    def operator_queries(self) -> tuple[float, float]:
        """(sent, shared) by the operator's own count; both 0 for an operator that does not count."""
        return (total(self.operator, "modelrollout_prometheus_queries_total"),
                total(self.operator, "modelrollout_prometheus_queries_shared_total"))

    def apiserver_requests(self) -> dict[tuple[str, str], float]:
        counts: dict[tuple[str, str], float] = {}
        for labels, value in samples(self.apiserver, "apiserver_request_total"):
            if labels.get("resource") in ("modelrollouts", "configmaps", "events", "secrets"):
                key = (labels["resource"] + ("/" + labels["subresource"] if labels.get("subresource") else ""),
                       labels["verb"])
                counts[key] = counts.get(key, 0.0) + value
        return counts


def create_all(custom: Any, namespace: str, manifests: list[dict[str, Any]]) -> None:
    """Create every rollout, a few at a time, asking again after a timeout (an existing one is done).

    One `kubectl apply` of hundreds of rollouts outlasts kubectl's timeout on a loaded machine:
    each create runs the CRD's CEL rules.
    """
    def create(manifest: dict[str, Any]) -> None:
        for _ in range(10):
            try:
                custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest,
                                                       _request_timeout=120)
                return
            except ApiException as error:
                if error.status == 409:
                    return
                if error.status not in (429, 500, 503, 504):
                    raise
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(1)
        raise TimeoutError(f"could not create {manifest['metadata']['name']}")

    pool = ThreadPoolExecutor(CREATORS)
    try:
        list(pool.map(create, manifests))
    finally:  # on a failure or Ctrl-C, create no more (the stack is about to stop)
        pool.shutdown(wait=False, cancel_futures=True)


def report_profile(before: dict[str, float], after: dict[str, float], top: int = 25) -> None:
    """The window's samples by modelrollout call chain, as shares of all sampled thread time."""
    diff = {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}
    whole = sum(diff.values()) or 1.0
    log(f"where the operator's threads spent their wall time ({whole:.0f} samples):")
    for key, count in sorted(diff.items(), key=lambda kv: -kv[1])[:top]:
        log(f"  {100 * count / whole:5.1f}%  {key}")
    phases: dict[str, float] = {}
    for key, count in diff.items():
        chain = key.split(" | ")[0].split(" > ")
        phase = next((f for f in chain if f.split(".")[-1] in (
            "get_rollout", "carry_out", "observe", "_commit", "model_versions", "measure_stage", "decide",
            "_status", "model_validate")), chain[-1])
        phase = "model_versions" if "model_versions" in key else (
            "prometheus query" if "PrometheusProvider.query" in key else phase)
        phases[phase] = phases.get(phase, 0.0) + count
    log("by phase: " + ", ".join(f"{k} {100 * v / whole:.1f}%" for k, v in sorted(phases.items(),
                                                                              key=lambda kv: -kv[1])))


def main() -> None:
    with contextlib.redirect_stdout(sys.stderr), tempfile.TemporaryDirectory(prefix="bench-scale-") as scratch:
        workdir = Path(scratch)
        log(f"starting the stack in {workdir}; {ROLLOUTS} rollouts")
        stack = start_stack(workdir, sweep_folds=4 if QUICK else 13)
        operator = None
        try:
            suffix = uuid.uuid4().hex[:6]
            namespace, strategy = f"scale-{suffix}", f"scale{suffix}"
            configmaps = [f"flags-{i}" for i in range(ROLLOUTS)]
            prepare_namespace(stack, namespace, strategy=strategy, configmaps=configmaps)
            manifests = [rollout_manifest(stack, f"rollout-{i}", namespace, strategy, mutate=held_canary(cm))
                         for i, cm in enumerate(configmaps)]
            spec = ModelRolloutSpec.model_validate(manifests[0]["spec"])
            queries_per_cycle = distinct_queries(spec, 1)
            gates_per_cycle = len(spec.stages[1].gates) * len(spec.stage_symbols(spec.stages[1]))
            profile = workdir / "profile.json"
            if PROFILE:
                operator = start_sampled_operator(workdir, stack.plane.kubeconfig, [namespace], profile)
            else:
                operator = start_operator(workdir, stack.plane.kubeconfig, [namespace])
            pid = operator.process.pid
            custom = kubernetes.client.CustomObjectsApi(
                kubernetes.config.new_client_from_config(config_file=str(stack.plane.kubeconfig)))
            started = time.monotonic()
            create_all(custom, namespace, manifests)
            log(f"{ROLLOUTS} rollouts created after {time.monotonic() - started:.0f}s")

            def all_in_canary() -> bool:
                try:
                    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
                except ApiException as error:  # a loaded apiserver may time a LIST of many rollouts out
                    log(f"listing the rollouts failed ({error.status} {error.reason}); asking again")
                    return False
                done = sum(canary_flag_done(item) for item in items)
                log(f"{done}/{ROLLOUTS} rollouts have switched their canary symbol; operator RSS {rss_mb(pid):.0f} MB, "
                    f"load average {os.getloadavg()[0]:.1f}")
                return done == ROLLOUTS

            wait_until(all_in_canary, "every rollout at its canary", timeout=max(1200, 3 * ROLLOUTS), poll=5)
            log(f"all at canary after {time.monotonic() - started:.0f}s; warming up for one interval")
            time.sleep(INTERVAL_S)

            rss: list[float] = []
            profile_before = read_profile(profile)
            before = Snapshot(stack, pid, operator.metrics_url)  # type: ignore[attr-defined]
            deadline = before.at + WINDOW_S
            while time.monotonic() < deadline:
                rss.append(rss_mb(pid))
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            after = Snapshot(stack, pid, operator.metrics_url)  # type: ignore[attr-defined]
            if operator.process.poll() is not None:
                raise RuntimeError(f"the operator died:\n{operator.log_tail()}")
            if PROFILE:
                time.sleep(2.5)  # the sampler rewrites its file every 2 s
                report_profile(profile_before, read_profile(profile))

            window = after.at - before.at
            cycles = (after.gate_evaluations() - before.gate_evaluations()) / gates_per_cycle
            cpu = after.cpu - before.cpu
            queries = after.queries() - before.queries()
            (sent_before, shared_before), (sent_after, shared_after) = before.operator_queries(), after.operator_queries()
            sent, shared = sent_after - sent_before, shared_after - shared_before
            load1 = os.getloadavg()[0]
            api_before, api_after = before.apiserver_requests(), after.apiserver_requests()
            api = {k: v - api_before.get(k, 0.0) for k, v in api_after.items() if v - api_before.get(k, 0.0) > 0}
            if cycles <= 0:
                raise RuntimeError("no analysis cycle completed in the window")
            name = "reconcile_duration_seconds"
            p50 = histogram_quantile(0.5, before.operator, after.operator, f"modelrollout_{name}")
            p99 = histogram_quantile(0.99, before.operator, after.operator, f"modelrollout_{name}")
            log(f"window {window:.1f}s: {cycles:.0f} rollout cycles, {cpu:.2f} CPU s ({cpu / window:.2f} cores), "
                f"{queries:.0f} Prometheus queries (operator: {sent:.0f} sent, {shared:.0f} shared; "
                f"{queries_per_cycle} distinct); load average {os.getloadavg()}; apiserver requests: "
                + ", ".join(f"{r} {v}: {n:.0f}" for (r, v), n in sorted(api.items())))
            log(f"RSS samples (MB): min {min(rss):.0f} median {statistics.median(rss):.0f} max {max(rss):.0f}")

            prefix = f"operator_scale_{ROLLOUTS}"
            emit(f"{prefix}_rss_median", statistics.median(rss), "MB", RSS_GOAL_MB, "lower")
            emit(f"{prefix}_rss_peak", max(rss), "MB", RSS_GOAL_MB, "lower")
            emit(f"{prefix}_cpu_per_rollout_cycle", cpu / cycles, "s", 0.025, "lower")
            emit(f"{prefix}_cpu_per_round", cpu / cycles * ROLLOUTS, "s", round(0.025 * ROLLOUTS, 3), "lower")
            emit(f"{prefix}_cpu_cores", cpu / window, "cores", 0.5, "lower")
            emit(f"{prefix}_prometheus_queries_per_rollout_cycle", queries / cycles, "queries", queries_per_cycle,
                 "lower")
            emit(f"{prefix}_prometheus_queries_per_distinct_query_second", queries / queries_per_cycle / window,
                 "queries", 1.0, "lower")
            emit(f"{prefix}_load_average_1m", load1, "runnable", 2.0, "lower")  # the machine's 2 cores
            emit(f"{prefix}_apiserver_requests_per_rollout_cycle", sum(api.values()) / cycles, "requests", 2.0,
                 "lower")
            emit(f"{prefix}_effective_interval", window * ROLLOUTS / cycles, "s", INTERVAL_S + 1.0, "lower")
            emit(f"{prefix}_reconcile_p50", p50, "s", INTERVAL_S, "lower")
            emit(f"{prefix}_reconcile_p99", p99, "s", INTERVAL_S, "lower")
        finally:
            if operator is not None:
                operator.stop()
            stack.stop()


if __name__ == "__main__":
    main()
