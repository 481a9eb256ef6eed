"""Where an operator's wall time goes: a sampling profiler over every thread (py-spy's idea, in-process).

`python -m devstack.sampler OUT.json -- <modelrollout-operator args>` runs the operator with a
thread that, every `SAMPLE_S`, records each thread's chain of `modelrollout` functions (outermost
first) plus the library it is in below them (e.g. `mlflow`, `urllib3`). The cumulative counts are
rewritten to OUT.json every 2 s, so a caller diffs two readings to profile a window. Sampling is
wall time: a thread blocked on a socket counts, which is the point (reconcile time is mostly waits).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from devstack.process import Server, free_port, http_ok

SAMPLE_S = 0.01
WRITE_EVERY_S = 2.0
OWN = "/modelrollout/"


def signature(frame: FrameType | None) -> str | None:
    """`Controller.tick > Controller.reconcile > ... | library` for a thread inside modelrollout, else None."""
    chain: list[str] = []
    below = ""
    while frame is not None:
        filename = frame.f_code.co_filename
        if OWN in filename and "/devstack/" not in filename:
            chain.append(frame.f_code.co_qualname)
        elif not chain:
            parts = Path(filename).parts
            below = next((p for p in reversed(parts[:-1]) if p in (
                "mlflow", "kubernetes", "urllib3", "requests", "prometheus_api_client", "pydantic", "pydantic_core",
                "scipy", "numpy", "http", "json", "concurrent", "ssl", "socket", "kopf", "asyncio")),
                Path(filename).stem)
        frame = frame.f_back
    if not chain:
        return None
    return " > ".join(reversed(chain)) + f" | {below or 'modelrollout'}"


def run_sampler(out: Path) -> None:
    counts: Counter[str] = Counter()
    me = threading.get_ident()
    last_write = time.monotonic()
    samples = 0
    while True:
        for ident, frame in sys._current_frames().items():
            if ident != me and (key := signature(frame)) is not None:
                counts[key] += 1
        samples += 1
        if time.monotonic() - last_write >= WRITE_EVERY_S:
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps({"samples": samples, "sample_s": SAMPLE_S, "counts": dict(counts)}))
            os.replace(tmp, out)
            last_write = time.monotonic()
        time.sleep(SAMPLE_S)


def read_profile(path: Path) -> dict[str, float]:
    """The counts in a profile file (empty when not yet written)."""
    try:
        return {k: float(v) for k, v in json.loads(path.read_text())["counts"].items()}
    except (OSError, ValueError, KeyError):
        return {}


def start_sampled_operator(workdir: Path, kubeconfig: Path, namespaces: Sequence[str], out: Path,
                           name: str = "operator") -> Server:
    """Like `devstack.operator.start_operator` (standalone), with the sampler writing to `out`."""
    health_port, metrics_port = free_port(), free_port()
    argv = [sys.executable, "-m", "devstack.sampler", str(out), "--", "--metrics-port", str(metrics_port),
            "--health-port", str(health_port), "--standalone"]
    for namespace in namespaces:
        argv += ["--namespace", namespace]
    server = Server(name=name, argv=argv, log_path=workdir / f"{name}.log",
                    env={"KUBECONFIG": str(kubeconfig), "POD_NAME": name}).start()
    server.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"  # type: ignore[attr-defined]
    server.wait_ready(lambda: http_ok(f"http://127.0.0.1:{health_port}/healthz"), timeout=60)
    return server


def main() -> None:
    out, separator, *operator_args = sys.argv[1:]
    if separator != "--":
        raise SystemExit("usage: python -m devstack.sampler OUT.json -- <modelrollout-operator args>")
    threading.Thread(target=run_sampler, args=(Path(out),), daemon=True, name="sampler").start()
    from modelrollout.__main__ import main as operator_main

    operator_main(operator_args)


if __name__ == "__main__":
    main()
