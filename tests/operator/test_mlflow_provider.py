"""The MLflow adapter against a real `mlflow server` (SQLite): sweep runs, aliases, tags, outages."""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
from mlflow import MlflowClient
from mlflow.entities import RunStatus

from devstack.mlflow import MlflowServer
from devstack.process import free_port
from modelrollout.mlflow_provider import MlflowProvider, MlflowUnavailable
from modelrollout.observation import SweepRow
from modelrollout.spec import ModelsSpec

SYMBOLS = ("BTCUSDC", "ETHUSDC")


@pytest.fixture(autouse=True)
def restore_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider sets MLflow's retry/timeout variables process-wide; give them back after each test."""
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)


@pytest.fixture(scope="module")
def client(mlflow_server: MlflowServer) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)


@pytest.fixture(scope="module")
def sweep(client: MlflowClient) -> tuple[str, dict[str, SweepRow]]:
    """A sweep of 2 symbols x 3 folds x 2 variants, plus runs that are not evidence."""
    experiment = f"sweep-{uuid.uuid4().hex[:8]}"
    experiment_id = client.create_experiment(experiment)

    def run(tags: dict[str, str], metrics: dict[str, float], status: str | None = "FINISHED") -> str:
        run_id = client.create_run(experiment_id, tags=tags).info.run_id
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        if status:
            client.set_terminated(run_id, status)
        return run_id

    expected: dict[str, SweepRow] = {}
    for symbol in SYMBOLS:
        for fold in range(3):
            for variant, f1 in (("baseline", 0.5 + fold / 100), ("candidate", 0.53 + fold / 100)):
                metrics = {"f1_buy": f1, "ece_hold": 0.05}
                tags = {"variant": variant, "symbol": symbol, "fold": str(fold)}
                run_id = run(tags, metrics)
                expected[run_id] = SweepRow(run_id, symbol, str(fold), variant, metrics)
    run({}, {"best_f1": 0.6})  # the sweep's parent run: no sweep tags
    run({"variant": "control", "symbol": "BTCUSDC", "fold": "0"}, {"f1_buy": 0.1})
    valid = {"variant": "candidate", "symbol": "BTCUSDC", "fold": "9"}
    run(valid, {"f1_buy": 0.9}, status=None)  # still running
    run(valid, {"f1_buy": 0.9}, status=RunStatus.to_string(RunStatus.FAILED))
    client.delete_run(run(valid, {"f1_buy": 0.9}))
    return experiment, expected


def test_sweep_evidence_reads_every_finished_tagged_run_across_pages(
        mlflow_server: MlflowServer, sweep: tuple[str, dict[str, SweepRow]], caplog: pytest.LogCaptureFixture) -> None:
    experiment, expected = sweep
    with caplog.at_level(logging.WARNING, logger="modelrollout.mlflow_provider"):
        evidence = MlflowProvider(mlflow_server.url, page_size=5).sweep_evidence(experiment)

    assert evidence.error is None
    assert evidence.experiment == experiment
    assert len(evidence.rows) == len(expected) == 12
    assert {row.run_id: row for row in evidence.rows} == expected
    assert f"experiment {experiment!r}: skipped 2 run(s) without valid sweep tags" in caplog.text  # parent, control


def test_a_missing_experiment_is_an_error_in_the_evidence(mlflow_server: MlflowServer) -> None:
    evidence = MlflowProvider(mlflow_server.url).sweep_evidence("no-such-sweep")
    assert evidence.rows == ()
    assert evidence.error == f"experiment 'no-such-sweep' not found in MLflow at {mlflow_server.url}"


@pytest.fixture(scope="module")
def registry(client: MlflowClient) -> dict[str, object]:
    """BTCUSDC: v1 champion, v2 candidate, no pin tag. ETHUSDC: v1 champion with a pin tag, no candidate."""
    strategy = f"s{uuid.uuid4().hex[:8]}"
    models = ModelsSpec(tracking_uri="http://unused", strategy=strategy)
    experiment_id = client.create_experiment(f"training-{strategy}")
    runs: dict[str, str] = {}
    for symbol, count in (("BTCUSDC", 2), ("ETHUSDC", 1)):
        name = models.registered_model(symbol)
        client.create_registered_model(name)
        for version in range(1, count + 1):
            run_id = client.create_run(experiment_id).info.run_id
            client.set_terminated(run_id)
            runs[f"{symbol}/{version}"] = run_id
            client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
        client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(models.registered_model("BTCUSDC"), "candidate", "2")
    client.set_registered_model_tag(models.registered_model("ETHUSDC"), "feature_artifact_run_id", "pinned-run")
    return {"models": models, "runs": runs}


def test_model_versions_reads_aliases_and_the_runs_behind_them(
        mlflow_server: MlflowServer, registry: dict[str, object]) -> None:
    models, runs = registry["models"], registry["runs"]
    assert isinstance(models, ModelsSpec) and isinstance(runs, dict)
    btc, eth = models.registered_model("BTCUSDC"), models.registered_model("ETHUSDC")

    versions = MlflowProvider(mlflow_server.url).model_versions(models, ["BTCUSDC", "ETHUSDC", "SOLUSDC"])

    assert versions.champion == {btc: "1", eth: "1"}
    assert versions.candidate == {btc: "2"}  # ETHUSDC has no candidate alias, SOLUSDC no registered model
    assert versions.feature_runs == {btc: runs["BTCUSDC/1"], eth: "pinned-run"}
    assert versions.candidate_runs == {btc: runs["BTCUSDC/2"]}


def test_set_alias_moves_once_and_then_is_a_no_op(mlflow_server: MlflowServer, client: MlflowClient,
                                                  registry: dict[str, object]) -> None:
    models = registry["models"]
    assert isinstance(models, ModelsSpec)
    name = models.registered_model("BTCUSDC")
    provider = MlflowProvider(mlflow_server.url)

    assert provider.set_alias(name, "previous-champion", "1") is True
    assert provider.set_alias(name, "previous-champion", "1") is False
    assert provider.set_alias(name, "previous-champion", "2") is True
    assert client.get_registered_model(name).aliases["previous-champion"] == "2"
    with pytest.raises(ValueError, match=r"Model Version \(name=.*, version=7\) not found"):
        provider.set_alias(name, "previous-champion", "7")
    with pytest.raises(ValueError, match="no_such_model"):
        provider.set_alias("no_such_model", "champion", "1")


def test_set_model_tag_sets_once_and_then_is_a_no_op(mlflow_server: MlflowServer, client: MlflowClient,
                                                     registry: dict[str, object]) -> None:
    models = registry["models"]
    assert isinstance(models, ModelsSpec)
    name = models.registered_model("BTCUSDC")
    provider = MlflowProvider(mlflow_server.url)

    assert provider.set_model_tag(name, "feature_artifact_run_id", "run-a") is True
    assert provider.set_model_tag(name, "feature_artifact_run_id", "run-a") is False
    assert client.get_registered_model(name).tags["feature_artifact_run_id"] == "run-a"
    with pytest.raises(ValueError, match="no_such_model"):
        provider.set_model_tag("no_such_model", "k", "v")


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A port that accepts connections and never answers: a hung MLflow."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize("kind", ["closed port", "silent server"])
def test_an_outage_answers_within_the_timeout(kind: str, silent_server: str) -> None:
    url = f"http://127.0.0.1:{free_port()}" if kind == "closed port" else silent_server
    provider = MlflowProvider(url, timeout_s=1)
    models = ModelsSpec(tracking_uri=url, strategy="trend")

    started = time.monotonic()
    with pytest.raises(MlflowUnavailable, match=f"MLflow at {url}: cannot read registered model"):
        provider.model_versions(models, ["BTCUSDC"])
    with pytest.raises(MlflowUnavailable, match="cannot set alias"):
        provider.set_alias("m", "champion", "1")
    evidence = provider.sweep_evidence("sweep")
    elapsed = time.monotonic() - started

    assert evidence.rows == () and evidence.error is not None
    assert evidence.error.startswith(f"MLflow at {url}: cannot read the runs of experiment 'sweep'")
    assert elapsed < 3 * 3  # three requests, one attempt each, each bounded by ~1 s (not MLflow's minutes)
