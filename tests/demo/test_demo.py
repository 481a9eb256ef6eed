"""The demo's own pieces: the kubelet-style ConfigMap mirror against the real apiserver, and the
trading desk against real `model-runtime serve` processes and a real trade journal.

The whole `make demo` takes longer than a test should (training dominates), so its pieces are
tested here and the demo itself is run by hand (`make demo`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from devstack.configsync import ConfigMapMirror, configmap_reader, write_volume
from devstack.controlplane import ControlPlane
from devstack.mlflow import MlflowServer
from devstack.process import Server, free_port, http_ok
from devstack.simulator import DeskConfig, Replay, TradingDesk, market
from model_runtime.cli import main as model_runtime
from model_runtime.loss_flag import read_config_dir
from model_runtime.outcomes.journal import ClosedTrade, read_closed_since

SYMBOLS = ("BTCUSDC", "ETHUSDC")
FOCAL = "focal:gamma=2,alpha=0.25"


def eventually(check, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_write_volume_swaps_data_atomically_and_drops_old_versions(tmp_path: Path) -> None:
    write_volume(tmp_path, {"CVN_LOSS_FUNCTION": "binary:logistic", "CVN_LOSS_FUNCTION__BTCUSDC": FOCAL})
    first = os.readlink(tmp_path / "..data")
    assert read_config_dir(tmp_path) == {"CVN_LOSS_FUNCTION": "binary:logistic", "CVN_LOSS_FUNCTION__BTCUSDC": FOCAL}
    assert os.readlink(tmp_path / "CVN_LOSS_FUNCTION") == "..data/CVN_LOSS_FUNCTION"

    write_volume(tmp_path, {"CVN_LOSS_FUNCTION": "binary:logistic"})  # the canary key is gone: a rollback
    assert os.readlink(tmp_path / "..data") != first
    assert not (tmp_path / first).exists(), "the previous version must be removed"
    assert read_config_dir(tmp_path) == {"CVN_LOSS_FUNCTION": "binary:logistic"}
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("..")) == ["CVN_LOSS_FUNCTION"]


def test_fill_pnl_and_the_wrong_side_fault(tmp_path: Path) -> None:
    desk = TradingDesk({}, "http://127.0.0.1:9", "http://127.0.0.1:9", sa.create_engine(f"sqlite:///{tmp_path / 'j.db'}"),
                       DeskConfig(notional=1000, cost=0.001, bars_per_second=10, horizon_bars=12))
    now = datetime.now(UTC)
    long = desk.fill("BTCUSDC", "candidate", now, 0.01, True)
    assert long.side == "long" and long.pnl_net == pytest.approx(1000 * np.expm1(0.01) - 1.0)
    assert long.closed_at - long.opened_at == timedelta(seconds=1.2)
    desk.inject_wrong_side("BTCUSDC")
    short = desk.fill("BTCUSDC", "candidate", now, 0.01, True)
    assert short.side == "short" and short.pnl_net == pytest.approx(-1000 * np.expm1(0.01) - 1.0)
    assert desk.fill("BTCUSDC", "baseline", now, 0.01, True).side == "long", "the fault hits the candidate only"
    assert desk.fill("ETHUSDC", "candidate", now, 0.01, True).side == "long"


@pytest.mark.e2e
@pytest.mark.slow
def test_configmap_mirror_follows_the_apiserver(control_plane: ControlPlane, tmp_path: Path) -> None:
    namespace = f"mirror-{os.getpid()}"
    control_plane.kubectl("create", "namespace", namespace)
    control_plane.kubectl("-n", namespace, "create", "configmap", "cvntrade-model-config",
                          "--from-literal=CVN_LOSS_FUNCTION=binary:logistic")
    mirror = ConfigMapMirror(configmap_reader(control_plane.kubeconfig, namespace, "cvntrade-model-config"),
                             tmp_path / "volume", interval=0.2).start()
    try:
        assert read_config_dir(tmp_path / "volume") == {"CVN_LOSS_FUNCTION": "binary:logistic"}
        patch = {"data": {"CVN_LOSS_FUNCTION__BTCUSDC": FOCAL}}
        control_plane.kubectl("-n", namespace, "patch", "configmap", "cvntrade-model-config", "--type=merge",
                              "-p", json.dumps(patch))
        assert eventually(lambda: read_config_dir(tmp_path / "volume").get("CVN_LOSS_FUNCTION__BTCUSDC") == FOCAL)
        updates = mirror.updates
        time.sleep(1.0)
        assert mirror.updates == updates, "an unchanged ConfigMap must not be rewritten"
    finally:
        mirror.stop()
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def servers(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """Champion and candidate of two symbols; a live server with BTCUSDC on the candidate, a paper one."""
    for loss in ("binary:logistic", FOCAL):
        assert model_runtime(["train", "--tracking-uri", mlflow_server.url, "--symbols", ",".join(SYMBOLS),
                              "--strategy", "demotest", "--rows", "3000", "--rounds", "10", "--loss", loss]) == 0
    root = tmp_path_factory.mktemp("desk")
    write_volume(root / "live", {"CVN_LOSS_FUNCTION": "binary:logistic", "CVN_LOSS_FUNCTION__BTCUSDC": FOCAL})
    write_volume(root / "paper", {"CVN_LOSS_FUNCTION": "binary:logistic"})
    started, urls = [], []
    try:
        for name in ("live", "paper"):
            port = free_port()
            server = Server(name=name, log_path=root / f"{name}.log", argv=[
                str(Path(sys.executable).parent / "model-runtime"), "serve", "--tracking-uri", mlflow_server.url,
                "--symbols", ",".join(SYMBOLS), "--strategy", "demotest", "--host", "127.0.0.1", "--port", str(port),
                "--config-dir", str(root / name)]).start()
            started.append(server)
            server.wait_ready(lambda p=port: http_ok(f"http://127.0.0.1:{p}/readyz"), timeout=120)
            urls.append(f"http://127.0.0.1:{port}")
        yield urls[0], urls[1], root
    finally:
        for server in started:
            server.stop()


@pytest.mark.e2e
@pytest.mark.slow
def test_desk_journals_candidate_and_paper_baseline_fills(servers: tuple[str, str, Path]) -> None:
    live, paper, root = servers
    engine = sa.create_engine(f"sqlite:///{root / 'journal.db'}")
    replays = {s: Replay.after_training(market(s, 3000, 0)) for s in SYMBOLS}
    desk = TradingDesk(replays, live, paper, engine, DeskConfig(bars_per_second=200, tick_seconds=0.25)).start()
    try:
        assert eventually(lambda: all(desk.fills[key] >= 3 for key in
                                      (("BTCUSDC", "candidate"), ("BTCUSDC", "baseline"), ("ETHUSDC", "baseline"))),
                          timeout=30), (desk.fills, desk.errors)
        assert desk.fills[("ETHUSDC", "candidate")] == 0, "ETHUSDC is not on the candidate"
        desk.inject_wrong_side("BTCUSDC")
        injected = datetime.now(UTC)
        assert eventually(lambda: any(t.side == "short" for t in trades(engine, injected)), timeout=30)
    finally:
        desk.stop()
    assert not desk.errors, desk.errors
    shorts = {(t.symbol, t.variant) for t in trades(engine, injected) if t.side == "short"}
    assert shorts == {("BTCUSDC", "candidate")}


def trades(engine: sa.Engine, since: datetime) -> list[ClosedTrade]:
    now = datetime.now(UTC) + timedelta(minutes=1)
    return [t for t in read_closed_since(engine, since - timedelta(minutes=5), now)
            if isinstance(t, ClosedTrade) and t.opened_at >= since]
