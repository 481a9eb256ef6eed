"""`model-runtime serve` as a real process against a real MLflow: flag switches, alias moves, bad input, outage."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from devstack.mlflow import start_mlflow
from devstack.process import Server, free_port, http_ok
from model_runtime.cli import main
from model_runtime.training.synthetic import feature_names, generate_market

pytestmark = pytest.mark.slow
BIN = shutil.which("model-runtime", path=str(Path(sys.executable).parent)) or "model-runtime"


def write_volume(root: Path, version: str, values: dict[str, str]) -> None:
    """A ConfigMap volume update as the kubelet does it: new ..<version> dir, atomic ..data symlink swap."""
    target = root / f"..{version}"
    target.mkdir()
    for key, value in values.items():
        (target / key).write_text(value)
    (root / "..data_tmp").symlink_to(target.name)
    os.replace(root / "..data_tmp", root / "..data")
    for key in values:
        if not (root / key).is_symlink():
            (root / key).symlink_to(f"..data/{key}")
    for stale in {p.name for p in root.iterdir() if p.is_symlink() and not p.name.startswith("..")} - set(values):
        (root / stale).unlink()


def start_server(tracking_uri: str, symbols: str, strategy: str, log: Path, *flag_source: str) -> tuple[Server, str]:
    """The server with its flags from `flag_source`: `--config-dir DIR` or `--config-map NAMESPACE/NAME ...`."""
    port = free_port()
    server = Server(name="model-runtime", log_path=log, argv=[
        BIN, "serve", "--tracking-uri", tracking_uri, "--symbols", symbols, "--strategy", strategy,
        "--host", "127.0.0.1", "--port", str(port), *flag_source,
        "--poll-seconds", "1", "--window", "200"]).start()
    url = f"http://127.0.0.1:{port}"
    server.wait_ready(lambda: http_ok(f"{url}/readyz"), timeout=90)
    return server, url


def post(url: str, body: bytes | dict) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/predict", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def samples(url: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name}


def value(url: str, name: str, **labels: str) -> float | None:
    wanted = set(labels.items())
    found = [v for key, v in samples(url, name).items() if wanted <= set(key)]
    assert len(found) <= 1, f"{name}{labels} matched {len(found)} series"
    return found[0] if found else None


def eventually(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def rows(symbol: str, n: int, seed: int = 3) -> list[list[float]]:
    frame = generate_market(symbol, rows=5000)
    x = frame[feature_names()].to_numpy()
    return x[np.random.default_rng(seed).choice(len(x), n, replace=False)].tolist()


@pytest.fixture(scope="module")
def served(trained_models, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    config = tmp_path_factory.mktemp("configmap")
    write_volume(config, "v1", {"CVN_LOSS_FUNCTION": "binary:logistic"})
    server, url = start_server(trained_models.tracking_uri, ",".join(trained_models.symbols),
                               trained_models.strategy, config.parent / "serve.log", "--config-dir", str(config))
    yield url, config
    server.stop()


def test_flag_switch_flips_focal_loss_active_without_dropping_requests(served):
    url, config = served
    assert value(url, "focal_loss_active", symbol="BTCUSDC") == 0.0
    assert post(url, {"symbol": "BTCUSDC", "features": rows("BTCUSDC", 1)})[1]["alias"] == "champion"

    failures: list[int] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            status, _ = post(url, {"symbol": "BTCUSDC", "features": rows("BTCUSDC", 1)})
            if status != 200:
                failures.append(status)

    sender = threading.Thread(target=load)
    sender.start()
    try:
        write_volume(config, "v2", {"CVN_LOSS_FUNCTION": "binary:logistic",
                                    "CVN_LOSS_FUNCTION__BTCUSDC": "focal:gamma=2,alpha=0.25"})
        assert eventually(lambda: value(url, "focal_loss_active", symbol="BTCUSDC", gamma="2", alpha="0.25") == 1.0,
                          timeout=5.0)
    finally:
        stop.set()
        sender.join()
    assert failures == []
    assert value(url, "focal_loss_active", symbol="ETHUSDC") == 0.0  # the canary is one symbol only
    assert value(url, "model_version_info", symbol="BTCUSDC", alias="candidate", variant="candidate") == 1.0
    status, body = post(url, {"symbol": "BTCUSDC", "features": rows("BTCUSDC", 2)})
    assert status == 200 and body["alias"] == "candidate" and body["loss_function"].startswith("focal")

    write_volume(config, "v3", {"CVN_LOSS_FUNCTION": "binary:logistic"})  # rollback is a flag flip
    assert eventually(lambda: value(url, "focal_loss_active", symbol="BTCUSDC") == 0.0, timeout=5.0)


def test_alias_move_in_mlflow_is_picked_up_by_polling(served, trained_models):
    url, _ = served
    client = MlflowClient(trained_models.tracking_uri, trained_models.tracking_uri)
    name = f"cvntrade_XGBoost_ETHUSDC_{trained_models.strategy}"
    client.set_registered_model_alias(name, "champion", "2")  # full promotion
    try:
        assert eventually(lambda: value(url, "model_version_info", symbol="ETHUSDC", alias="champion",
                                        version="2") == 1.0)
        assert value(url, "focal_loss_active", symbol="ETHUSDC", gamma="2") == 1.0
    finally:
        client.set_registered_model_alias(name, "champion", "1")  # rollback
    assert eventually(lambda: value(url, "model_version_info", symbol="ETHUSDC", version="1") == 1.0)


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"symbol": "BTCUSDC", "features": [[1.0, 2.0]]}, 400, "expected 30 features per row, got 2"),
    (b'{"symbol": "BTCUSDC", "features": [[NaN' + b", 0" * 29 + b"]]}", 400, "NaN/inf not allowed"),
    ({"symbol": "DOGEUSDC", "features": [[0.0] * 30]}, 404, "unknown symbol 'DOGEUSDC'"),
    (b"{not json", 400, "body must be JSON"),
    ({"symbol": "BTCUSDC"}, 400, "'features' must be a non-empty list"),
    ({"symbol": "BTCUSDC", "features": [[0.0] * 30, [0.0] * 29]}, 400, "rows of equal length"),
    ({"symbol": "BTCUSDC", "features": [["a"] * 30]}, 400, "numbers only"),
])
def test_bad_requests_get_a_4xx_with_a_message_and_the_server_stays_up(served, body, status, message):
    url, _ = served
    before = value(url, "predict_requests_total", code=str(status), symbol="BTCUSDC" if status == 400 and
                   isinstance(body, dict) and "features" in body else "unknown") or 0.0
    got, answer = post(url, body)
    assert got == status and message in answer["error"]
    assert http_ok(f"{url}/healthz")
    assert post(url, {"symbol": "ETHUSDC", "features": rows("ETHUSDC", 1)})[0] == 200
    after = sum(v for key, v in samples(url, "predict_requests_total").items() if ("code", str(status)) in key)
    assert after >= before + 1


def test_psi_of_top_features_and_sharpness_follow_the_live_window(served):
    url, _ = served
    live = rows("ETHUSDC", 200, seed=11)
    status, body = post(url, {"symbol": "ETHUSDC", "features": live})
    assert status == 200 and len(body["buy_proba"]) == 200
    psi = {dict(k)["feature"]: v for k, v in samples(url, "feature_psi").items() if ("symbol", "ETHUSDC") in k}
    assert len(psi) == 5 and max(psi.values()) < 0.25, psi  # same distribution as training
    sharp = value(url, "output_sharpness", symbol="ETHUSDC", variant="baseline")
    assert 0.5 <= sharp <= 1.0
    assert value(url, "buy_proba_count", symbol="ETHUSDC", variant="baseline") >= 200

    shifted = (np.array(live) + 5 * np.array(live).std(axis=0)).tolist()
    assert post(url, {"symbol": "ETHUSDC", "features": shifted})[0] == 200
    psi = {dict(k)["feature"]: v for k, v in samples(url, "feature_psi").items() if ("symbol", "ETHUSDC") in k}
    assert min(psi.values()) > 1.0, psi
    assert value(url, "model_training_f1_buy", symbol="ETHUSDC", variant="candidate") > 0
    assert value(url, "model_ece_hold", symbol="ETHUSDC", variant="baseline") >= 0


def test_mlflow_outage_keeps_serving_the_loaded_model(tmp_path):
    mlflow = start_mlflow(tmp_path / "mlflow")
    try:
        assert main(["train", "--tracking-uri", mlflow.url, "--symbols", "XRPUSDC", "--strategy", "outage",
                     "--rows", "3000", "--rounds", "10", "--loss", "binary:logistic"]) == 0
        write_volume(tmp_path, "v1", {"CVN_LOSS_FUNCTION": "binary:logistic"})
        server, url = start_server(mlflow.url, "XRPUSDC", "outage", tmp_path / "serve.log", "--config-dir", str(tmp_path))
    except BaseException:
        mlflow.stop()
        raise
    try:
        assert value(url, "model_registry_up") == 1.0
        mlflow.stop()
        assert eventually(lambda: value(url, "model_registry_up") == 0.0, timeout=15.0)
        status, body = post(url, {"symbol": "XRPUSDC", "features": rows("XRPUSDC", 3)})
        assert status == 200 and body["version"] == "1"
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
            assert json.loads(response.read())["registry_error"]
    finally:
        server.stop()
        mlflow.stop()
