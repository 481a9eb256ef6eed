"""A real Prometheus (Debian's package) on loopback, scraping the targets a test names.

History older than the scrape loop can reach is loaded with
`promtool tsdb create-blocks-from openmetrics` before the server starts.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from devstack.controlplane import REPO_ROOT
from devstack.process import Server, free_port, http_ok

# The chart's rule files, as its PrometheusRule objects carry them: the product's recorded
# per-trade statistics (which the recommended gate queries read) and its alerts.
CHART_RULE_FILES = tuple(REPO_ROOT / "charts" / "modelrollout" / "files" / name
                         for name in ("recording-rules.yaml", "alert-rules.yaml"))


@dataclass
class PrometheusServer:
    url: str
    server: Server
    config_path: Path

    def stop(self) -> None:
        self.server.stop()

    def reload(self, scrape_targets: Sequence[str], scrape_interval: str = "1s", rule_files: Sequence[Path] = ()) -> None:
        """Rewrite the scrape config and ask Prometheus to reload it (lifecycle API)."""
        import urllib.request

        write_config(self.config_path, scrape_targets, scrape_interval, rule_files)
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass


def write_config(path: Path, scrape_targets: Sequence[str], scrape_interval: str, rule_files: Sequence[Path]) -> None:
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": f"target-{i}", "static_configs": [{"targets": [target]}]}
            for i, target in enumerate(scrape_targets)
        ],
    }
    path.write_text(yaml.safe_dump(config))


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        raise RuntimeError("promtool not found: install Debian's `prometheus` package (make deps does)")
    return found


def backfill_openmetrics(data_dir: Path, openmetrics_text: str) -> None:
    """Write historic samples as TSDB blocks into `data_dir` (call before start_prometheus)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    source = data_dir.parent / "backfill.om"
    source.write_text(openmetrics_text)
    subprocess.run([promtool(), "tsdb", "create-blocks-from", "openmetrics", str(source), str(data_dir)],
                   check=True, capture_output=True)


def start_prometheus(
    workdir: Path,
    scrape_targets: Sequence[str] = (),
    scrape_interval: str = "1s",
    rule_files: Sequence[Path] = (),
    port: int | None = None,
) -> PrometheusServer:
    binary = shutil.which("prometheus")
    if not binary:
        raise RuntimeError("prometheus not found: install Debian's `prometheus` package (make deps does)")
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    write_config(config_path, scrape_targets, scrape_interval, rule_files)
    port = port or free_port()
    server = Server(
        name="prometheus",
        argv=[
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
            "--web.enable-remote-write-receiver",
            "--storage.tsdb.retention.time=30d",
            "--query.lookback-delta=30s",
        ],
        log_path=workdir / "prometheus.log",
    ).start()
    url = f"http://127.0.0.1:{port}"
    server.wait_ready(lambda: http_ok(f"{url}/-/ready"), timeout=60)
    return PrometheusServer(url=url, server=server, config_path=config_path)
