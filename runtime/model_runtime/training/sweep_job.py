"""`model-runtime sweep`: baseline vs candidate on walk-forward folds, one MLflow run per row.

This is the evidence the operator's shadow gate reads; the layout is documented in docs/sweep-layout.md.
Rows with the same (symbol, fold) are paired: same data, same folds, same booster settings, only the
loss differs.
"""

from __future__ import annotations

import logging
import time
import uuid

from mlflow.tracking import MlflowClient
from pydantic import Field

from model_runtime.loss_flag import LossSpec
from model_runtime.registry import connect, experiment_id, log_metrics_run
from model_runtime.training.booster import SplitSpec, fit_fold, time_splits, to_dataset
from model_runtime.training.datasource import load_symbol_frames
from model_runtime.training.job import JobSettings

log = logging.getLogger(__name__)

SWEEP_METRICS = ("f1_buy", "ece_hold", "expectancy_net", "auc", "log_loss", "sharpness", "temperature",
                 "threshold", "trades", "ece_hold_uncalibrated", "buy_rate_hold")


class SweepSettings(JobSettings):
    experiment: str = "focal-loss-sweep"
    baseline_loss: str = "binary:logistic"
    loss: str = Field(default="focal:gamma=2,alpha=0.25", description="the candidate's loss")
    folds: int = Field(default=13, ge=1)
    validation: float = 0.15
    holdout: float = 0.5


def run_sweep(settings: SweepSettings) -> int:
    """Log symbols x folds x {baseline, candidate} runs tagged with one sweep_id; returns the exit code."""
    variants = {"baseline": LossSpec.parse(settings.baseline_loss), "candidate": LossSpec.parse(settings.loss)}
    client = connect(settings.tracking_uri)
    exp = experiment_id(client, settings.experiment)
    sweep_id = uuid.uuid4().hex[:12]
    frames = load_symbol_frames(settings.symbols, data=settings.data, rows=settings.rows, seed=settings.seed)
    started, rows = time.monotonic(), 0
    for symbol, frame in frames.items():
        data = to_dataset(frame)
        split = SplitSpec(folds=settings.folds, validation=settings.validation, holdout=settings.holdout)
        for fold in time_splits(len(data.y), split):
            for variant, loss in variants.items():
                trained = fit_fold(data, fold, loss, settings.booster)
                log_metrics_run(
                    client, exp,
                    tags={"variant": variant, "symbol": symbol, "fold": str(fold.index), "strategy": settings.strategy,
                          "loss_function": str(loss), "sweep_id": sweep_id},
                    params={"rounds": settings.booster.rounds, "max_depth": settings.booster.max_depth,
                            "train_rows": fold.train.stop, "holdout_rows": fold.holdout.stop - fold.holdout.start,
                            "seed": settings.seed},
                    metrics={k: trained.metrics[k] for k in SWEEP_METRICS if k in trained.metrics},
                )
                rows += 1
        log.info("sweep symbol=%s done rows=%d elapsed=%.1fs", symbol, rows, time.monotonic() - started)
    retired = retire_previous_sweeps(client, exp, settings.symbols, settings.strategy, sweep_id)
    log.info("sweep sweep_id=%s experiment=%s rows=%d retired=%d", sweep_id, settings.experiment, rows, retired)
    return 0


def retire_previous_sweeps(client: MlflowClient, exp: str, symbols: list[str], strategy: str, sweep_id: str) -> int:
    """Soft-delete older sweep rows of these symbols and strategy, once the new sweep is complete.

    The shadow gate treats two runs of one (symbol, fold, variant) as ambiguous evidence, so a re-run
    replaces the previous sweep instead of doubling it; deleted runs stay restorable in MLflow.
    """
    retired = 0
    for symbol in symbols:
        query = f"tags.symbol = '{symbol}' and tags.strategy = '{strategy}' and tags.sweep_id != '{sweep_id}'"
        token = None
        while True:
            page = client.search_runs([exp], query, max_results=1000, page_token=token)
            for run in page:
                client.delete_run(run.info.run_id)
                retired += 1
            token = page.token
            if not token:
                break
    return retired
