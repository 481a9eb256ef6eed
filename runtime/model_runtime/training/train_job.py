"""`model-runtime train`: one model per symbol and strategy, logged, registered and aliased in MLflow."""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field

from model_runtime.loss_flag import LossFlags, LossSpec, current_flag_values
from model_runtime.registry import Naming, log_trained_model
from model_runtime.training.booster import SplitSpec, fit_fold, time_splits, to_dataset
from model_runtime.training.datasource import load_symbol_frames
from model_runtime.training.job import JobSettings
from model_runtime.training.job_metrics import TrainerMetrics

log = logging.getLogger(__name__)


class TrainSettings(JobSettings):
    experiment: str = "model-runtime-train"
    loss: str | None = Field(default=None, description="else CVN_LOSS_FUNCTION[__SYMBOL]")
    alias: str | None = Field(default=None, description="else candidate for focal, champion for logistic")
    split: SplitSpec = SplitSpec()
    naming: Naming = Naming()
    pushgateway: str | None = None
    metrics_textfile: Path | None = None


def loss_for(settings: TrainSettings, symbol: str) -> LossSpec:
    if settings.loss is not None:
        return LossSpec.parse(settings.loss)
    return LossFlags.from_mapping(current_flag_values(None)).for_symbol(symbol)


def run_train(settings: TrainSettings) -> int:
    """Train every symbol; a failing symbol is counted and logged, the others still train. Exit code 1 if any failed."""
    metrics = TrainerMetrics()
    frames = load_symbol_frames(settings.symbols, data=settings.data, rows=settings.rows, seed=settings.seed)
    failed = 0
    for symbol, frame in frames.items():
        loss = loss_for(settings, symbol)
        metrics.started(loss, symbol=symbol, strategy=settings.strategy)
        try:
            data = to_dataset(frame)
            fold = time_splits(len(data.y), settings.split)[-1]
            trained = fit_fold(data, fold, loss, settings.booster)
            alias = settings.alias or (settings.naming.candidate_alias if loss.is_focal
                                       else settings.naming.champion_alias)
            name = settings.naming.model_name(symbol, settings.strategy)
            version = log_trained_model(
                trained, tracking_uri=settings.tracking_uri, experiment=settings.experiment, model_name=name,
                alias=alias, tags={"symbol": symbol, "strategy": settings.strategy, "loss_function": str(loss),
                                   "variant": "candidate" if loss.is_focal else "baseline"})
            log.info("trained symbol=%s model=%s version=%s alias=%s f1_buy=%.4f ece_hold=%.4f", symbol, name,
                     version, alias, trained.metrics["f1_buy"], trained.metrics["ece_hold"])
        except Exception:
            failed += 1
            metrics.failure(loss)
            log.exception("training failed symbol=%s loss_function=%s", symbol, loss)
    metrics.publish(pushgateway=settings.pushgateway, textfile=settings.metrics_textfile)
    return 1 if failed else 0
