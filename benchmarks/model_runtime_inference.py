"""Inference latency of `model-runtime serve`: p50/p99 of single-row /predict at a steady 200 req/s.

A real MLflow server and a real server process on loopback; this script is the second process that
sends the load, open loop: requests leave on schedule whether or not earlier ones returned, each on
its own task, so a slow server cannot slow the sender down and hide its own queueing. Latency runs
from the moment a request is handed to the connection (the event loop's timers fire up to ~1 ms late,
which is the client's slop, not the server's). Median of the runs' p50/p99. BENCH_QUICK=1: one short run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from devstack.bench import emit
from devstack.mlflow import start_mlflow
from devstack.process import Server, free_port, http_ok
from model_runtime.cli import main as model_runtime
from model_runtime.training.synthetic import feature_names, generate_market

QUICK = os.environ.get("BENCH_QUICK") == "1"
RATE = 200
SECONDS = 3 if QUICK else 20
TRAIN = ["--rows", "5000", "--rounds", "20"] if QUICK else ["--rows", "20000"]
RUNS = 1 if QUICK else 3
SYMBOL = "BTCUSDC"


async def load(url: str, rows: list[list[float]]) -> np.ndarray:
    """Send RATE req/s for SECONDS; return latencies in seconds (failed requests raise)."""
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        async def one(i: int) -> None:
            body = json.dumps({"symbol": SYMBOL, "features": [rows[i % len(rows)]]})
            sent = time.perf_counter()
            async with session.post(f"{url}/predict", data=body,
                                    headers={"Content-Type": "application/json"}) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"/predict answered {response.status}")
            latencies.append(time.perf_counter() - sent)

        for i in range(RATE):  # warm-up: connections, first predictions
            await one(i)
        latencies.clear()
        start = time.perf_counter() + 0.1
        tasks = []
        for i in range(RATE * SECONDS):
            scheduled = start + i / RATE
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return np.array(latencies)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-inference-"))
    mlflow = start_mlflow(work / "mlflow")
    server = None
    try:
        assert model_runtime(["--log-level", "WARNING", "train", "--tracking-uri", mlflow.url, "--symbols", SYMBOL,
                              "--strategy", "bench", *TRAIN, "--loss", "binary:logistic"]) == 0
        port = free_port()
        binary = shutil.which("model-runtime", path=str(Path(sys.executable).parent)) or "model-runtime"
        server = Server(name="model-runtime", log_path=work / "serve.log", argv=[
            binary, "--log-level", "WARNING", "serve", "--tracking-uri", mlflow.url, "--symbols", SYMBOL,
            "--strategy", "bench", "--host", "127.0.0.1", "--port", str(port)]).start()
        url = f"http://127.0.0.1:{port}"
        server.wait_ready(lambda: http_ok(f"{url}/readyz"), timeout=120)
        rows = generate_market(SYMBOL, rows=2000)[feature_names()].to_numpy().tolist()
        p50, p99 = [], []
        for run in range(RUNS):
            latencies = asyncio.run(load(url, rows))
            p50.append(float(np.percentile(latencies, 50)) * 1e3)
            p99.append(float(np.percentile(latencies, 99)) * 1e3)
            print(f"run {run}: n={latencies.size} p50={p50[-1]:.2f}ms p99={p99[-1]:.2f}ms "
                  f"max={latencies.max() * 1e3:.2f}ms", file=sys.stderr)
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            buckets = {s.labels["le"]: s.value for f in text_string_to_metric_families(response.read().decode())
                       for s in f.samples if s.name == "inference_latency_seconds_bucket"}
        print(f"server-side share of requests handled within 5 ms: {buckets['0.005'] / buckets['+Inf']:.4f} "
              f"(1 ms: {buckets['0.001'] / buckets['+Inf']:.4f}); load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
        emit("model_runtime_inference_p50_ms_at_200rps", float(np.median(p50)), "ms", 2.0, "lower")
        emit("model_runtime_inference_p99_ms_at_200rps", float(np.median(p99)), "ms", 5.0, "lower")
    finally:
        if server is not None:
            server.stop()
        mlflow.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    with contextlib.redirect_stdout(sys.stderr):  # MLflow prints run links; emit() writes to the real stdout
        main()
