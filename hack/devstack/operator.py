"""The operator as a real process (`modelrollout-operator`), the way a Deployment runs it.

By default the console script next to this Python. `MODELROLLOUT_OPERATOR` names another one, e.g.
that of a venv with the operator distribution alone (`pip install ./operator`), which is what its
image carries: in the dev venv, full `mlflow` (the model runtime's) makes `import mlflow` load
pandas and scipy, so the operator's footprint there is not the image's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from devstack.process import Server, free_port, http_ok


def start_operator(workdir: Path, kubeconfig: Path, namespaces: Sequence[str], *, name: str = "operator",
                   peering: str | None = None, priority: int | None = None) -> Server:
    """Start one replica; without `peering` it runs standalone. Returns once its liveness probe answers."""
    health_port, metrics_port = free_port(), free_port()
    script = os.environ.get("MODELROLLOUT_OPERATOR") or str(Path(sys.executable).parent / "modelrollout-operator")
    argv = [script, "--metrics-port", str(metrics_port),
            "--health-port", str(health_port)]
    for namespace in namespaces:
        argv += ["--namespace", namespace]
    argv += ["--peering", peering] if peering else ["--standalone"]
    if priority is not None:
        argv += ["--priority", str(priority)]
    server = Server(name=name, argv=argv, log_path=workdir / f"{name}.log",
                    env={"KUBECONFIG": str(kubeconfig), "POD_NAME": name}).start()
    server.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"  # type: ignore[attr-defined]
    server.wait_ready(lambda: http_ok(f"http://127.0.0.1:{health_port}/healthz"), timeout=60)
    return server
