"""CLI wiring: subcommand dispatch, settings errors, and the trainer's Pushgateway push on the wire."""

from __future__ import annotations

import http.server
import threading

import pytest

from model_runtime import cli
from model_runtime.loss_flag import LossSpec
from model_runtime.serving.server import ServeSettings
from model_runtime.training.job_metrics import TrainerMetrics
from model_runtime.training.sweep_job import SweepSettings


def test_journal_exporter_gets_the_remaining_arguments(monkeypatch):
    import model_runtime.outcomes.exporter as journal

    calls = []
    monkeypatch.setattr(journal, "main", lambda argv: calls.append(argv) or 7)
    assert cli.main(["journal-exporter", "--port", "9100", "--once"]) == 7
    assert calls == [["--port", "9100", "--once"]]


def test_missing_config_dir_is_a_clear_error(capsys, tmp_path):
    code = cli.main(["serve", "--tracking-uri", "http://127.0.0.1:1", "--symbols", "BTCUSDC",
                     "--config-dir", str(tmp_path / "absent")])
    assert code == 2
    assert "config_dir" in capsys.readouterr().err


def test_config_dir_and_config_map_are_exclusive(capsys, tmp_path):
    code = cli.main(["serve", "--tracking-uri", "http://127.0.0.1:1", "--symbols", "BTCUSDC",
                     "--config-dir", str(tmp_path), "--config-map", "trading/loss-flags"])
    assert code == 2
    assert "config_dir and config_map are two sources of the same flags: give one" in capsys.readouterr().err


@pytest.mark.parametrize("reference", ["loss-flags", "trading/", "Trading/loss-flags", "a/b/c"])
def test_config_map_must_be_namespace_slash_name(capsys, reference):
    code = cli.main(["serve", "--tracking-uri", "http://127.0.0.1:1", "--symbols", "BTCUSDC", "--config-map", reference])
    assert code == 2
    assert "config_map" in capsys.readouterr().err


def test_config_map_without_credentials_is_a_clear_error(monkeypatch, tmp_path):
    from model_runtime.serving.flag_source import api_client

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="config_map: no Kubernetes credentials"):
        api_client()


def test_config_map_comes_from_the_environment_too(monkeypatch):
    monkeypatch.setenv("MODEL_RUNTIME_CONFIG_MAP", "trading/loss-flags")
    settings = ServeSettings(tracking_uri="http://mlflow:5000", symbols="BTCUSDC")
    assert settings.config_map == "trading/loss-flags" and settings.config_dir is None


def test_settings_come_from_flags_or_the_environment(monkeypatch):
    args = cli.build_parser().parse_args(["sweep", "--symbols", "btcusdc, ethusdc,", "--folds", "3", "--nthread", "1"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    settings = SweepSettings(**cli._settings_kwargs(args))
    assert settings.symbols == ["BTCUSDC", "ETHUSDC"] and settings.folds == 3 and settings.booster.nthread == 1
    assert settings.tracking_uri == "http://mlflow:5000"
    monkeypatch.setenv("MODEL_RUNTIME_SYMBOLS", "solusdc,XRPUSDC")
    monkeypatch.setenv("MODEL_RUNTIME_TRACKING_URI", "http://other:5000")
    from_env = ServeSettings()
    assert from_env.symbols == ["SOLUSDC", "XRPUSDC"] and from_env.tracking_uri == "http://other:5000"


@pytest.fixture
def pushgateway():
    """A loopback HTTP endpoint recording what a Pushgateway would receive."""
    received: list[tuple[str, str, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.command, self.path, body))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()


def test_trainer_metrics_are_pushed_under_the_job_name(pushgateway):
    url, received = pushgateway
    metrics = TrainerMetrics()
    metrics.started(LossSpec.parse("focal:gamma=1,alpha=0.5"), symbol="BTCUSDC")
    metrics.failure(LossSpec.parse("focal:gamma=1,alpha=0.5"))
    metrics.publish(pushgateway=url, textfile=None)
    [(method, path, body)] = received
    assert method == "PUT" and path == "/metrics/job/model-runtime-train"
    text = body.decode()
    assert 'focal_loss_active{alpha="0.5",gamma="1"} 1.0' in text
    assert 'xgboost_training_failed_total{loss_function="focal:gamma=1,alpha=0.5"} 1.0' in text


def test_unreachable_pushgateway_does_not_fail_the_job(caplog):
    TrainerMetrics().publish(pushgateway="http://127.0.0.1:9", textfile=None)
    assert "unreachable" in caplog.text
