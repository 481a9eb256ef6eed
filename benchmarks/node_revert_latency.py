"""The revert on a node: from a breach to the model server POD answering with the baseline.

Everything the user runs is a pod on the local node (devstack.node): the chart's operator (two
replicas, one acting) and two model servers from the model-runtime image, `watching` (its flag from
the API, `--config-map`) and `mounted` (its flag from a ConfigMap volume, which the kubelet updates
at its next sync of the pod). Each repetition applies a fresh canary rollout (the fast example, its
shadow stage dropped, BTCUSDC switched, the canary held 10 minutes), waits until both pods answer
with the candidate's version, then at a random moment turns the candidate's expectancy negative in
the SeriesFeed and times, from that write:

* the ConfigMap back at the baseline (polled every 50 ms through the API);
* `watching` answering with the baseline's version (asked every 50 ms at its pod IP);
* `mounted` answering with the baseline's version (asked every 200 ms, for up to 4 minutes).

Figures: breach -> watching pod serving the baseline (median, max; goal 60 s, the plan's promise),
ConfigMap revert -> watching pod and ConfigMap revert -> mounted pod (median, max), side by side in
one run. The breach's own delay (scrape interval, trigger window, the trigger interval) is inside the
first figure. `BENCH_QUICK=1`: one repetition, `watching` alone (the mounted pod's minute or more
twice over is what a smoke run can spare least); otherwise `BENCH_REPETITIONS` (default 5).
"""

from __future__ import annotations

import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devstack.bench import emit
from devstack.nodestack import FlagSource, ServingOnNode, serving_on_node, start_node_stack
from devstack.prometheus import start_prometheus
from devstack.scenario import BASELINE, FLAG_KEY, wait_until

QUICK = os.environ.get("BENCH_QUICK") == "1"
REPETITIONS = 1 if QUICK else int(os.environ.get("BENCH_REPETITIONS", "5"))
SYMBOL = "BTCUSDC"
SERVED = ["BTCUSDC", "ETHUSDC"]
BASELINE_VERSION, CANDIDATE_VERSION = "1", "2"
PROMISE_S = 60.0
SERVERS: dict[str, FlagSource] = {"watching": "api"} if QUICK else {"watching": "api", "mounted": "volume"}


def log(message: str) -> None:
    print(f"[node-revert] {message}", file=sys.stderr, flush=True)


def first_time(predicate: Callable[[], bool], what: str, timeout: float, poll: float) -> float:
    """The monotonic time at which `predicate` first held (an error, e.g. a refused connection, is "not yet")."""

    def holds() -> bool:
        with contextlib.suppress(Exception):
            return predicate()
        return False

    wait_until(holds, what, timeout, poll)
    return time.monotonic()


def one_repetition(serving: ServingOnNode, index: int, rng: random.Random) -> dict[str, float]:
    scenario = serving.scenario
    name = f"revert-{index}"

    def canary_held(spec: dict[str, Any]) -> None:
        spec["symbols"] = SERVED
        spec["stages"] = spec["stages"][1:]
        spec["stages"][0]["minDuration"] = "10m"
        for trigger in spec["stages"][0]["rollbackTriggers"]:
            trigger["window"] = "2s"
        spec["models"]["trackingUri"] = serving.in_cluster["mlflow"]
        spec["prometheus"]["url"] = serving.in_cluster["prometheus"]

    scenario.apply(scenario.manifest(name=name, mutate=canary_held))
    scenario.wait_for(lambda s: s.get("stage") == "canary" and any(a["state"] == "Done" for a in s.get("actions", [])),
                      "the canary switched", timeout=120, name=name)
    urls = {server: serving.url(server) for server in serving.servers}
    for server, url in urls.items():
        wait_until(lambda u=url, s=server: serving.answer(s, SYMBOL, u)["version"] == CANDIDATE_VERSION,
                   f"{server} serving the candidate", timeout=240)
    time.sleep(rng.uniform(0, 5))

    breached = time.monotonic()
    scenario.feed.set("expectancy_net_realized", -0.05, symbol=SYMBOL, variant="candidate")
    try:
        reverted = first_time(lambda: scenario.configmap().get(f"{FLAG_KEY}__{SYMBOL}", BASELINE) == BASELINE,
                              "the ConfigMap revert", 90, 0.05)
        watching = first_time(lambda: serving.answer("watching", SYMBOL, urls["watching"])["version"] == BASELINE_VERSION,
                              "watching serving the baseline", 60, 0.05)
        figures = {"breach_to_watching": watching - breached, "revert_to_watching": watching - reverted,
                   "breach_to_revert": reverted - breached}
        if "mounted" in urls:
            mounted = first_time(lambda: serving.answer("mounted", SYMBOL, urls["mounted"])["version"] == BASELINE_VERSION,
                                 "mounted serving the baseline", 240, 0.2)
            figures["revert_to_mounted"] = mounted - reverted
    finally:
        scenario.feed.set("expectancy_net_realized", 0.02, symbol=SYMBOL, variant="candidate")
    scenario.wait_phase("RolledBack", timeout=120, name=name)
    scenario.kubectl("delete", "mro", name)
    log(f"repetition {index + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in figures.items()))
    time.sleep(10)  # the trigger's 2 s window forgets the breach before the next rollout begins
    return figures


def main() -> None:
    rng = random.Random(14)
    with contextlib.redirect_stdout(sys.stderr), tempfile.TemporaryDirectory(prefix="bench-node-") as scratch:
        workdir = Path(scratch)
        started = time.monotonic()
        stack = start_node_stack(workdir / "node")
        log(f"node and images ready in {time.monotonic() - started:.0f}s")
        prometheus = start_prometheus(workdir / "prometheus")
        try:
            with serving_on_node(stack, prometheus, workdir / "serving", symbols=SERVED, servers=SERVERS) as serving:
                runs = [one_repetition(serving, i, rng) for i in range(REPETITIONS)]
        finally:
            prometheus.stop()
            stack.stop()
        for figure, goal in (("breach_to_watching", PROMISE_S), ("revert_to_watching", 5.0), ("revert_to_mounted", PROMISE_S)):
            values = [run[figure] for run in runs if figure in run]
            if not values:
                continue
            emit(f"node_revert_{figure}_median", statistics.median(values), "s", goal, "lower")
            emit(f"node_revert_{figure}_max", max(values), "s", goal, "lower")
        log("all: " + "; ".join(", ".join(f"{k} {v:.2f}" for k, v in run.items()) for run in runs))


if __name__ == "__main__":
    main()
