"""`model-runtime sweep`: baseline vs candidate on walk-forward folds, one MLflow run per row.

This is the evidence the operator's shadow gate reads; the layout is documented in docs/sweep-layout.md.
Rows with the same (symbol, fold) are paired: same data, same folds, same booster settings, only the
loss differs.

A sweep too big for one machine runs as a Kubernetes Indexed Job: each completion index is one shard
(`--shard INDEX/COUNT`, the index from `$(JOB_COMPLETION_INDEX)`) that runs every COUNT-th (symbol, fold)
cell, both variants of a cell together, all under one `--sweep-id`. The operator creates that Job for a
shadow stage whose sweep gate has a `job`, and judges the runs of its sweep id once every index succeeded.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Annotated

from mlflow.tracking import MlflowClient
from pydantic import BeforeValidator, Field, StringConstraints

from model_runtime.loss_flag import LossSpec
from model_runtime.registry import connect, experiment_id, log_metrics_run
from model_runtime.training.booster import SplitSpec, fit_fold, time_splits, to_dataset
from model_runtime.training.datasource import load_symbol_frames
from model_runtime.training.job import JobSettings

log = logging.getLogger(__name__)

SWEEP_METRICS = ("f1_buy", "ece_hold", "expectancy_net", "auc", "log_loss", "sharpness", "temperature",
                 "threshold", "trades", "ece_hold_uncalibrated", "buy_rate_hold")


@dataclass(frozen=True)
class Shard:
    """`INDEX/COUNT`: this process runs the cells whose position modulo COUNT is INDEX."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: object) -> object:
        """`INDEX/COUNT` as a Shard (anything else is left to pydantic, which refuses it)."""
        if not isinstance(text, str):
            return text
        index, slash, count = text.partition("/")
        if not (slash and index.strip().isdigit() and count.strip().isdigit()):
            raise ValueError(f"shard {text!r} is not INDEX/COUNT, e.g. 0/8")
        shard = cls(int(index), int(count))
        if not 0 <= shard.index < shard.count:
            raise ValueError(f"shard {text!r}: the index must be in 0..COUNT-1")
        return shard

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


class SweepSettings(JobSettings):
    experiment: str = "focal-loss-sweep"
    baseline_loss: str = "binary:logistic"
    loss: str = Field(default="focal:gamma=2,alpha=0.25", description="the candidate's loss")
    folds: int = Field(default=13, ge=1)
    validation: float = 0.15
    holdout: float = 0.5
    shard: Annotated[Shard, BeforeValidator(Shard.parse)] | None = Field(
        default=None, description="INDEX/COUNT: run only this shard's cells (a completion index of an Indexed Job)")
    sweep_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")] | None = Field(
        default=None, description="tag every run with this id (shards of one sweep share it); default: a new one")


def cells(symbols: list[str], folds: int, shard: Shard | None) -> list[tuple[str, int]]:
    """The (symbol, fold) cells this process runs, in order: all of them, or every COUNT-th from INDEX."""
    every = [(symbol, fold) for symbol in symbols for fold in range(folds)]
    return every if shard is None else every[shard.index::shard.count]


def run_sweep(settings: SweepSettings) -> int:
    """Log this shard's (or every) symbols x folds x {baseline, candidate} runs under one sweep_id; returns the
    exit code.

    A shard run again (its pod failed and the Job retried the index) first retires the runs its earlier try
    logged, so a cell is never counted twice. Only an unsharded sweep retires earlier sweeps: a shard cannot
    know that the others succeeded, and the operator reads a Job's runs by their sweep id alone.
    """
    variants = {"baseline": LossSpec.parse(settings.baseline_loss), "candidate": LossSpec.parse(settings.loss)}
    client = connect(settings.tracking_uri)
    exp = experiment_id(client, settings.experiment)
    sweep_id = settings.sweep_id or uuid.uuid4().hex[:12]
    mine = cells(settings.symbols, settings.folds, settings.shard)
    shard_tags = {} if settings.shard is None else {"shard": str(settings.shard)}
    if shard_tags:
        retired = retire_runs(client, exp, f"tags.sweep_id = '{sweep_id}' and tags.shard = '{settings.shard}'")
        log.info("sweep shard=%s cells=%d retired_from_earlier_try=%d", settings.shard, len(mine), retired)
    symbols = list(dict.fromkeys(symbol for symbol, _ in mine))
    frames = load_symbol_frames(symbols, data=settings.data, rows=settings.rows, seed=settings.seed)
    split = SplitSpec(folds=settings.folds, validation=settings.validation, holdout=settings.holdout)
    started, rows = time.monotonic(), 0
    for symbol in symbols:
        data = to_dataset(frames[symbol])
        wanted = {fold for cell_symbol, fold in mine if cell_symbol == symbol}
        for fold in (f for f in time_splits(len(data.y), split) if f.index in wanted):
            for variant, loss in variants.items():
                trained = fit_fold(data, fold, loss, settings.booster)
                log_metrics_run(
                    client, exp,
                    tags={"variant": variant, "symbol": symbol, "fold": str(fold.index), "strategy": settings.strategy,
                          "loss_function": str(loss), "sweep_id": sweep_id} | shard_tags,
                    params={"rounds": settings.booster.rounds, "max_depth": settings.booster.max_depth,
                            "train_rows": fold.train.stop, "holdout_rows": fold.holdout.stop - fold.holdout.start,
                            "seed": settings.seed},
                    metrics={k: trained.metrics[k] for k in SWEEP_METRICS if k in trained.metrics},
                )
                rows += 1
        log.info("sweep symbol=%s done rows=%d elapsed=%.1fs", symbol, rows, time.monotonic() - started)
    retired = 0
    if settings.shard is None:
        retired = sum(retire_runs(client, exp, f"tags.symbol = '{symbol}' and tags.strategy = '{settings.strategy}' "
                                               f"and tags.sweep_id != '{sweep_id}'") for symbol in settings.symbols)
    log.info("sweep sweep_id=%s experiment=%s shard=%s rows=%d retired=%d", sweep_id, settings.experiment,
             settings.shard or "-", rows, retired)
    return 0


def retire_runs(client: MlflowClient, exp: str, query: str) -> int:
    """Soft-delete the runs matching `query`; returns how many.

    Used once a sweep is complete, on the older sweeps of its symbols and strategy: the shadow gate treats two
    runs of one (symbol, fold, variant) as ambiguous evidence, so a re-run replaces the previous sweep instead
    of doubling it; and by a shard on its own earlier try. Deleted runs stay restorable in MLflow.
    """
    retired = 0
    token = None
    while True:
        page = client.search_runs([exp], query, max_results=1000, page_token=token)
        for run in page:
            client.delete_run(run.info.run_id)
            retired += 1
        token = page.token
        if not token:
            return retired
