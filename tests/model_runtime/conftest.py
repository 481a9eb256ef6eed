"""Models trained once per session into the real MLflow server, shared by the registry and server tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from model_runtime.cli import main

SYMBOLS = ("BTCUSDC", "ETHUSDC")
STRATEGY = "mrtest"
SMALL = ["--rows", "5000", "--rounds", "30", "--strategy", STRATEGY, "--symbols", ",".join(SYMBOLS)]


@dataclass(frozen=True)
class TrainedModels:
    tracking_uri: str
    symbols: tuple[str, ...]
    strategy: str
    textfiles: dict[str, str]


@pytest.fixture(scope="session")
def trained_models(mlflow_server, tmp_path_factory) -> TrainedModels:
    """Versions 1 (binary:logistic, alias champion) and 2 (focal, alias candidate) of each symbol."""
    out = tmp_path_factory.mktemp("trainer-metrics")
    textfiles = {}
    for loss in ("binary:logistic", "focal:gamma=2,alpha=0.25"):
        textfile = out / f"{loss.split(':')[0]}.prom"
        code = main(["train", "--tracking-uri", mlflow_server.url, "--experiment", "mr-train", "--loss", loss,
                     "--metrics-textfile", str(textfile), *SMALL])
        assert code == 0
        textfiles[loss] = textfile.read_text()
    return TrainedModels(mlflow_server.url, SYMBOLS, STRATEGY, textfiles)
