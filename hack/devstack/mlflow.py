"""A real `mlflow server` with a SQLite backend store and served artifacts, on loopback."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from devstack.process import Server, free_port, http_ok


@dataclass
class MlflowServer:
    url: str
    server: Server

    def stop(self) -> None:
        self.server.stop()


def start_mlflow(workdir: Path, port: int | None = None) -> MlflowServer:
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    mlflow_bin = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    server = Server(
        name="mlflow",
        argv=[
            mlflow_bin, "server",
            "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
            "--artifacts-destination", str(workdir / "artifacts"),
            "--serve-artifacts",
            "--host", "127.0.0.1",
            "--port", str(port),
            "--workers", "1",
        ],
        log_path=workdir / "mlflow.log",
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    ).start()
    url = f"http://127.0.0.1:{port}"
    # /health answers before the tracking store is open; an API read proves the store serves too.
    server.wait_ready(lambda: http_ok(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"),
                      timeout=120)
    return MlflowServer(url=url, server=server)
