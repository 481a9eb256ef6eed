"""A real PostgreSQL (Debian's package) on loopback, for the trade journal's tests.

PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` system
user the Debian package creates and every command runs through `runuser`.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from devstack.process import Server, free_port

DATABASE = "journal"


def postgres_bin_dir() -> Path:
    """The newest installed server's bin directory (/usr/lib/postgresql/<major>/bin)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if not candidates:
        raise RuntimeError("PostgreSQL server not found: install Debian's `postgresql` package (make deps does)")
    return candidates[-1].parent


@dataclass
class PostgresServer:
    url: str
    """SQLAlchemy URL of the `journal` database (psycopg 3 driver, trust auth on loopback)."""
    data_dir: Path
    server: Server
    run_as: list[str]
    bin_dir: Path

    def stop(self) -> None:
        """Fast shutdown (open sessions are cut, not waited for), then remove the cluster."""
        subprocess.run([*self.run_as, str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast",
                        "-w", "-t", "30"], capture_output=True, check=False)
        self.server.stop()
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def start_postgres(port: int | None = None) -> PostgresServer:
    bin_dir = postgres_bin_dir()
    root = os.geteuid() == 0
    user = "postgres" if root else getpass.getuser()
    run_as = ["runuser", "-u", user, "--"] if root else []
    # Not under pytest's tmp_path: its parents are root-only (0700), unreachable for `postgres`.
    workdir = Path(tempfile.mkdtemp(prefix="modelrollout-pg-"))
    data_dir, socket_dir = workdir / "data", workdir / "socket"
    socket_dir.mkdir()
    if root:
        shutil.chown(workdir, user)
        shutil.chown(socket_dir, user)
    subprocess.run([*run_as, str(bin_dir / "initdb"), "-D", str(data_dir), "-U", user, "--auth=trust",
                    "--encoding=UTF8", "--locale=C", "--no-sync"], check=True, capture_output=True)
    port = port or free_port()
    server = Server(
        name="postgres",
        argv=[*run_as, str(bin_dir / "postgres"), "-D", str(data_dir), "-p", str(port),
              "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={socket_dir}",
              "-c", "fsync=off", "-c", "full_page_writes=off"],
        log_path=workdir / "postgres.log",
    ).start()

    def accepts_connections() -> bool:
        probe = subprocess.run([str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                               capture_output=True, check=False)
        return probe.returncode == 0

    try:
        server.wait_ready(accepts_connections, timeout=60)
        subprocess.run([*run_as, str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, DATABASE],
                       check=True, capture_output=True)
    except BaseException:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return PostgresServer(url=f"postgresql+psycopg://{user}@127.0.0.1:{port}/{DATABASE}", data_dir=data_dir,
                          server=server, run_as=run_as, bin_dir=bin_dir)
