"""What every batch job (train, sweep) is configured with: where to log, which data, which booster."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from model_runtime.loss_flag import Symbols, TrackingUri
from model_runtime.training.booster import BoosterParams


class JobSettings(BaseSettings):
    """CLI flags, with MODEL_RUNTIME_* environment variables as fallbacks."""

    model_config = SettingsConfigDict(env_prefix="MODEL_RUNTIME_", frozen=True)

    tracking_uri: TrackingUri
    symbols: Symbols
    strategy: str = "default"
    data: Path | None = None
    rows: int = 20_000
    seed: int = 0
    booster: BoosterParams = BoosterParams()
