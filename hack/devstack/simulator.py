"""The demo's trading desk: replays a synthetic market through the real inference servers and
writes the resulting fills into the trade journal, where the real exporter finds them.

Market. The `model_runtime.training.synthetic` bars the trainer used (same rows and seed), replayed from
where the trainer's training split ends, so the models trade bars they never trained on.

Trading. Every tick each symbol's next bars go to two servers: the live one, which follows
the ConfigMap and so serves the candidate wherever the rollout switched it on, and a paper
one pinned to the champion, so every symbol always has a baseline to compare with. A buy
opens a long that closes `horizon` bars later; its net PnL is the bar's forward return on the
notional minus round-trip costs. A fault can be injected: the candidate's orders for a symbol
go out with the wrong side (short instead of long), which flips the sign of its gross PnL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import requests
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from model_runtime.outcomes.journal import ClosedTrade, create_journal, record_trades
from model_runtime.training.synthetic import MarketSpec, feature_names, generate_market

log = logging.getLogger(__name__)
TRAIN_SHARE = 0.6  # `model-runtime train`: 60 / 20 / 20 train / validation / holdout


def market(symbol: str, rows: int, seed: int) -> pd.DataFrame:
    """The bars `model-runtime train/sweep --rows ROWS --seed SEED` train on, so the replay matches them."""
    return generate_market(symbol, MarketSpec(rows=rows, seed=seed))


@dataclass
class Replay:
    """The bars after the training split, played in a loop."""

    x: np.ndarray
    fwd_return: np.ndarray
    label: np.ndarray
    position: int = 0

    @classmethod
    def after_training(cls, frame: pd.DataFrame) -> Replay:
        tail = frame.iloc[int(len(frame) * TRAIN_SHARE):]
        tail = tail[np.isfinite(tail["fwd_return"].to_numpy())]
        return cls(np.ascontiguousarray(tail[feature_names()].to_numpy(dtype=np.float64)),
                   tail["fwd_return"].to_numpy(dtype=np.float64), tail["label"].to_numpy(dtype=bool))

    def take(self, n: int) -> np.ndarray:
        """Indices of the next `n` bars (wrapping around)."""
        index = (self.position + np.arange(n)) % len(self.x)
        self.position = int(index[-1] + 1) % len(self.x)
        return index


class DeskConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    bars_per_second: float = Field(default=20.0, gt=0)
    tick_seconds: float = Field(default=0.5, gt=0)
    horizon_bars: int = Field(default=12, ge=1, description="bars a position is held (the label horizon)")
    notional: float = Field(default=1000.0, gt=0, description="quote currency per trade")
    cost: float = Field(default=0.001, ge=0, description="round-trip fees and slippage, share of notional")


@dataclass
class TradingDesk:
    """Sends bars to the live and paper servers each tick and journals the fills as they close."""

    replays: dict[str, Replay]
    live_url: str
    paper_url: str
    journal: sa.Engine
    config: DeskConfig = field(default_factory=DeskConfig)
    wrong_side: set[str] = field(default_factory=set)
    fills: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    _open: list[ClosedTrade] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        create_journal(self.journal)
        self._session = requests.Session()

    def inject_wrong_side(self, symbol: str) -> None:
        """From now on the candidate's orders for `symbol` are shorts where the model said buy."""
        self.wrong_side.add(symbol)

    def predict(self, url: str, symbol: str, x: np.ndarray) -> dict | None:
        try:
            response = self._session.post(f"{url}/predict", json={"symbol": symbol, "features": x.tolist()},
                                          timeout=5)
        except requests.RequestException as error:
            self.errors[type(error).__name__] += 1
            return None
        if response.status_code != 200:
            self.errors[f"HTTP {response.status_code}"] += 1
            return None
        return response.json()

    def tick(self, now: datetime) -> None:
        """One batch of bars per symbol: baseline fills from the paper server, candidate fills from the live one."""
        bars = max(1, round(self.config.bars_per_second * self.config.tick_seconds))
        bar_time = timedelta(seconds=1 / self.config.bars_per_second)
        for symbol, replay in self.replays.items():
            index = replay.take(bars)
            x = replay.x[index]
            for url, wanted in ((self.paper_url, "baseline"), (self.live_url, "candidate")):
                answer = self.predict(url, symbol, x)
                if answer is None or answer["variant"] != wanted:
                    continue  # a live symbol still on the champion trades like the paper baseline
                for offset, (row, buy) in enumerate(zip(index, answer["buy"], strict=True)):
                    if buy:
                        self._open.append(self.fill(symbol, wanted, now + offset * bar_time,
                                                    replay.fwd_return[row], bool(replay.label[row])))
        self.settle(now)

    def fill(self, symbol: str, variant: str, opened_at: datetime, fwd_return: float, actual_buy: bool) -> ClosedTrade:
        gross = self.config.notional * float(np.expm1(fwd_return))
        side = "long"
        if variant == "candidate" and symbol in self.wrong_side:
            side, gross = "short", -gross
        held = timedelta(seconds=self.config.horizon_bars / self.config.bars_per_second)
        return ClosedTrade(symbol=symbol, variant=variant, opened_at=opened_at, closed_at=opened_at + held, side=side,
                           pnl_net=gross - self.config.notional * self.config.cost, predicted_buy=True,
                           actual_buy=actual_buy)

    def settle(self, now: datetime) -> None:
        """Journal the positions that have closed by `now`."""
        closed = [t for t in self._open if t.closed_at <= now]
        if closed:
            record_trades(self.journal, closed)
            self.fills.update(t.key for t in closed)
            self._open = [t for t in self._open if t.closed_at > now]

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.tick(datetime.now(UTC))
            except Exception:  # a bad tick must not end the desk; it is logged
                log.exception("trading tick failed")
            self._stop.wait(max(0.0, self.config.tick_seconds - (time.monotonic() - started)))

    def start(self) -> TradingDesk:
        self._thread = threading.Thread(target=self._run, name="trading-desk", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._session.close()
