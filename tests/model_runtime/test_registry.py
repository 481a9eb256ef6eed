"""Trainer and sweep against a real `mlflow server`, checked through the MLflow client."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from model_runtime.cli import main
from model_runtime.drift import ARTIFACT_PATH
from model_runtime.serving.model_store import load_served_model

pytestmark = pytest.mark.slow


def test_train_registers_each_symbol_and_sets_aliases(trained_models, tmp_path):
    client = MlflowClient(trained_models.tracking_uri, trained_models.tracking_uri)
    for symbol in trained_models.symbols:
        name = f"cvntrade_XGBoost_{symbol}_{trained_models.strategy}"
        model = client.get_registered_model(name)
        assert model.aliases == {"champion": "1", "candidate": "2"}
        champion = client.get_model_version_by_alias(name, "champion")
        candidate = client.get_model_version_by_alias(name, "candidate")
        assert champion.tags["loss_function"] == "binary:logistic"
        assert candidate.tags["loss_function"] == "focal:gamma=2,alpha=0.25"
        run = client.get_run(candidate.run_id)
        assert run.data.tags["symbol"] == symbol and run.data.params["loss_function"] == "focal:gamma=2,alpha=0.25"
        for metric in ("f1_buy", "ece_hold", "log_loss", "auc", "temperature", "expectancy_net", "sharpness"):
            assert np.isfinite(run.data.metrics[metric]), metric
        assert 0.5 < run.data.metrics["auc"] <= 1.0
        reference = json.loads(Path(client.download_artifacts(candidate.run_id, ARTIFACT_PATH, str(tmp_path))).read_text())
        assert len(reference["features"]) == 30 and set(reference["bins"]) == set(reference["features"])


def test_logged_model_predicts_calibrated_margins_after_a_round_trip(trained_models):
    client = MlflowClient(trained_models.tracking_uri, trained_models.tracking_uri)
    name = f"cvntrade_XGBoost_BTCUSDC_{trained_models.strategy}"
    served = load_served_model(client, name, "candidate", "2", None)
    assert served.loss.is_focal and served.temperature != 1.0 and 0 < served.threshold < 1
    assert served.metrics["temperature"] == pytest.approx(served.temperature)
    proba = served.predict_proba(np.zeros((3, served.n_features)))
    assert ((proba > 0) & (proba < 1)).all()


def test_trainer_exports_batch_job_metrics(trained_models):
    focal = trained_models.textfiles["focal:gamma=2,alpha=0.25"]
    assert 'focal_loss_active{alpha="0.25",gamma="2"} 1.0' in focal
    assert 'xgboost_training_failed_total{loss_function="focal:gamma=2,alpha=0.25"} 0.0' in focal
    assert 'focal_loss_active{alpha="",gamma=""} 0.0' in trained_models.textfiles["binary:logistic"]


def test_training_failure_is_counted_and_the_exit_code_says_so(mlflow_server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="model_runtime")
    bad = tmp_path / "bars.csv"
    bad.write_text("a,b\n1,2\n3,4\n")  # no label column
    textfile = tmp_path / "job.prom"
    code = main(["train", "--tracking-uri", mlflow_server.url, "--symbols", "BTCUSDC", "--data", str(bad),
                 "--loss", "focal", "--metrics-textfile", str(textfile)])
    assert code == 1
    assert 'xgboost_training_failed_total{loss_function="focal:gamma=2,alpha=0.25"} 1.0' in textfile.read_text()
    assert "focal_loss_active gamma=2 alpha=0.25" in caplog.text


def test_bad_flag_value_is_a_clear_cli_error(mlflow_server, capsys, monkeypatch):
    monkeypatch.setenv("CVN_LOSS_FUNCTION", "focal:gamma=banana")
    assert main(["train", "--tracking-uri", mlflow_server.url, "--symbols", "BTCUSDC", "--rows", "2000"]) == 2
    assert "gamma must be a number" in capsys.readouterr().err


def test_sweep_logs_paired_rows_and_a_rerun_replaces_them(mlflow_server):
    args = ["sweep", "--tracking-uri", mlflow_server.url, "--experiment", "mr-sweep", "--symbols", "BTCUSDC,SOLUSDC",
            "--strategy", "sw", "--rows", "4000", "--rounds", "20", "--folds", "3"]
    assert main(args) == 0
    client = MlflowClient(mlflow_server.url, mlflow_server.url)
    experiment = client.get_experiment_by_name("mr-sweep").experiment_id
    runs = client.search_runs([experiment], max_results=1000)
    assert len(runs) == 2 * 2 * 3
    keys = {(r.data.tags["symbol"], r.data.tags["fold"], r.data.tags["variant"]) for r in runs}
    assert keys == {(s, str(f), v) for s in ("BTCUSDC", "SOLUSDC") for f in range(3) for v in ("baseline", "candidate")}
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["strategy"] == "sw"
        assert run.data.tags["loss_function"] == ("binary:logistic" if run.data.tags["variant"] == "baseline"
                                                  else "focal:gamma=2,alpha=0.25")
        assert {"f1_buy", "ece_hold", "expectancy_net", "auc", "log_loss"} <= set(run.data.metrics)
    first_sweep = runs[0].data.tags["sweep_id"]

    assert main(args) == 0
    active = client.search_runs([experiment], max_results=1000)
    assert len(active) == 12 and {r.data.tags["sweep_id"] for r in active} != {first_sweep}


def test_shards_of_one_sweep_cover_every_cell_once_and_a_retried_shard_replaces_its_runs(mlflow_server):
    """An Indexed Job's completion indexes: together the whole sweep under one id, each cell once, even when
    the Job runs an index again after its pod failed (the earlier try's runs are retired, not doubled)."""
    base = ["sweep", "--tracking-uri", mlflow_server.url, "--experiment", "mr-sharded", "--symbols", "BTCUSDC,SOLUSDC",
            "--strategy", "sh", "--rows", "4000", "--rounds", "10", "--folds", "3", "--sweep-id", "job-a"]
    for index in range(4):
        assert main([*base, "--shard", f"{index}/4"]) == 0
    assert main([*base, "--shard", "2/4"]) == 0  # the Job retries index 2
    client = MlflowClient(mlflow_server.url, mlflow_server.url)
    experiment = client.get_experiment_by_name("mr-sharded").experiment_id
    runs = client.search_runs([experiment], "tags.sweep_id = 'job-a'", max_results=1000)
    keys = sorted((r.data.tags["symbol"], r.data.tags["fold"], r.data.tags["variant"]) for r in runs)
    assert keys == sorted((s, str(f), v) for s in ("BTCUSDC", "SOLUSDC") for f in range(3)
                          for v in ("baseline", "candidate"))
    by_cell = {(r.data.tags["symbol"], r.data.tags["fold"]): r.data.tags["shard"] for r in runs}
    assert by_cell == {("BTCUSDC", "0"): "0/4", ("BTCUSDC", "1"): "1/4", ("BTCUSDC", "2"): "2/4",
                       ("SOLUSDC", "0"): "3/4", ("SOLUSDC", "1"): "0/4", ("SOLUSDC", "2"): "1/4"}
    assert main([*base, "--shard", "4/4"]) == 2  # an index outside the Job's is a flag error, not an empty shard
