"""`model-runtime serve`: per-symbol inference that follows the loss flag and the MLflow aliases live.

A symbol serves the `candidate` alias only where its flag selects the candidate's loss and not the
champion's (`model_runtime.loss_flag.served_role`), else `champion`. Both aliases of every symbol are
kept loaded, so a flag flip is a dictionary lookup: no restart, no dropped request, no MLflow call.
Two background loops feed the switch: the ConfigMap/env flag is re-read every
`config_poll_seconds` (Kubernetes swaps the `..data` symlink, so each read sees one whole version; or,
with `config_map`, the latest version a watch of the ConfigMap through the API received, see
`flag_source`), and the registry is polled every `poll_seconds` for alias moves and the
`feature_artifact_run_id` tag. A failed poll or a lost watch keeps the last models and flags serving and
is reported in /readyz and `model_registry_up` / `model_flag_source_up`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np
from aiohttp import web
from mlflow.tracking import MlflowClient
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import DirectoryPath, Field, FilePath, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model_runtime.loss_flag import LossFlags, Symbols, TrackingUri, current_flag_values, served_role
from model_runtime.registry import Naming, connect
from model_runtime.serving.flag_source import CONFIG_MAP_PATTERN, ConfigMapWatch, api_client, parse_config_map
from model_runtime.serving.metrics import ServerMetrics
from model_runtime.serving.model_store import ServedModel, load_served_model, registry_view

log = logging.getLogger(__name__)
MAX_ROWS = 10_000


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODEL_RUNTIME_", frozen=True)

    tracking_uri: TrackingUri
    symbols: Symbols
    strategy: str = "default"
    host: str = "0.0.0.0"  # noqa: S104 (a pod serves its Service)
    port: int = 8080
    config_dir: DirectoryPath | None = None
    config_map: str | None = Field(default=None, pattern=CONFIG_MAP_PATTERN)  # namespace/name, watched via the API
    kubeconfig: FilePath | None = None  # for config_map; default: in-cluster in a pod, else $KUBECONFIG
    poll_seconds: float = Field(default=5.0, gt=0)
    config_poll_seconds: float = Field(default=0.5, gt=0)
    window: int = Field(default=1000, ge=10)
    naming: Naming = Naming()

    @model_validator(mode="after")
    def _one_flag_source(self) -> ServeSettings:
        if self.config_dir is not None and self.config_map is not None:
            raise ValueError("config_dir and config_map are two sources of the same flags: give one (config_map "
                             "on a cluster, where the kubelet delivers a volume update only a minute or more late)")
        return self


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_rows(payload: object, n_features: int) -> np.ndarray:
    """`features` as a finite float64 matrix with the model's width; BadRequest(400) otherwise."""
    if not isinstance(payload, list) or not payload:
        raise BadRequest(400, "'features' must be a non-empty list of rows (or one row)")
    try:
        x = np.asarray(payload, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadRequest(400, "'features' must hold numbers only, in rows of equal length") from None
    x = x[None, :] if x.ndim == 1 else x
    if x.ndim != 2:
        raise BadRequest(400, "'features' must be a list of rows")
    if x.shape[0] > MAX_ROWS:
        raise BadRequest(413, f"at most {MAX_ROWS} rows per request")
    if x.shape[1] != n_features:
        raise BadRequest(400, f"expected {n_features} features per row, got {x.shape[1]}")
    bad = ~np.isfinite(x)
    if bad.any():
        row, column = map(int, np.argwhere(bad)[0])
        raise BadRequest(400, f"feature {column} of row {row} is {x[row, column]} (NaN/inf not allowed)")
    return np.ascontiguousarray(x)


def freeze_heap() -> None:
    """Collect, then exempt every object alive now from future collections (`gc.freeze`).

    MLflow, pandas, scikit-learn and XGBoost leave a few hundred thousand long-lived objects, and every
    full collection walks all of them: a pause of 100 ms and more on the event loop, paid by whichever
    requests are in flight (the p99). Frozen, they are never walked again. Called at startup and after a
    model load, the only times many long-lived objects appear, so what stays unfrozen is request garbage.
    """
    gc.collect()
    gc.freeze()


class Runtime:
    """Loaded models, the current flags and what each symbol serves."""

    def __init__(self, settings: ServeSettings, client: MlflowClient, flag_source: ConfigMapWatch | None = None) -> None:
        self.settings = settings
        self.client = client
        self.flag_source = flag_source
        self.flag_source_error: str | None = None
        self.flags = LossFlags()
        self.flag_values: dict[str, str] | None = None
        self.loaded: dict[str, dict[str, ServedModel]] = {s: {} for s in settings.symbols}
        self.serving: dict[str, ServedModel] = {}
        self.registry_error: str | None = "not polled yet"
        self.metrics = ServerMetrics(settings.window, lambda: self.serving)

    def variant(self, alias: str) -> str:
        return "candidate" if alias == self.settings.naming.candidate_alias else "baseline"

    def reselect(self, symbol: str) -> None:
        """Point the symbol at the alias its flag wants; fall back to the other alias until that one loads."""
        naming, models = self.settings.naming, self.loaded[symbol]
        champion, candidate = models.get(naming.champion_alias), models.get(naming.candidate_alias)
        role = served_role(self.flags.for_symbol(symbol), champion.loss if champion else None,
                           candidate.loss if candidate else None)
        wanted = naming.candidate_alias if role == "candidate" else naming.champion_alias
        model = models.get(wanted) or next(iter(models.values()), None)
        if model is None:
            return
        if model.alias != wanted:
            log.warning("symbol=%s wants alias %s which is not loaded; serving %s", symbol, wanted, model.alias)
        previous = self.serving.get(symbol)
        if previous is not model:
            self.serving[symbol] = model
            self.metrics.serving(symbol, self.variant(model.alias), model)
            log.info("symbol=%s serving alias=%s version=%s loss_function=%s", symbol, model.alias, model.version,
                     model.loss)

    def refresh_flags(self) -> None:
        """Re-read the flag; a bad value is logged and the previous flags stay in force. With a ConfigMap
        watch, nothing is applied before its first list, and a lost watch keeps the last version."""
        watched = None
        if self.flag_source is not None:
            self.flag_source_error = self.flag_source.error
            self.metrics.flag_source_up.set(0 if self.flag_source_error else 1)
            watched = self.flag_source.data
            if watched is None:
                return
        values = current_flag_values(self.settings.config_dir, config_map=watched)
        if values == self.flag_values:
            return
        self.flag_values = values
        try:
            self.flags = LossFlags.from_mapping(values)
        except ValueError as error:
            log.error("ignoring flag change, keeping the previous flags: %s", error)
            return
        log.info("flags changed: %s", {k: str(v) for k, v in values.items()})
        for symbol in self.settings.symbols:
            self.reselect(symbol)

    async def poll_registry(self) -> None:
        """Reload every alias whose version or pinned feature run changed; keep serving on any failure."""
        errors = []
        loaded = False
        naming = self.settings.naming
        for symbol in self.settings.symbols:
            name = naming.model_name(symbol, self.settings.strategy)
            try:
                view = await asyncio.to_thread(registry_view, self.client, name)
                models = dict(self.loaded[symbol])
                for alias in (naming.champion_alias, naming.candidate_alias):
                    version = view.versions.get(alias)
                    current = models.get(alias)
                    if version is None:
                        if models.pop(alias, None) is not None:
                            self.metrics.model_dropped(symbol, self.variant(alias))
                        continue
                    if current is not None and current.version == version and \
                            current.feature_run_id == (view.feature_run_id or current.run_id):
                        continue
                    models[alias] = await asyncio.to_thread(load_served_model, self.client, name, alias, version,
                                                            view.feature_run_id)
                    self.metrics.model_loaded(symbol, self.variant(alias), models[alias])
                    loaded = True
                    log.info("loaded %s@%s version=%s", name, alias, version)
                self.loaded[symbol] = models
                self.reselect(symbol)
            except Exception as error:  # noqa: BLE001 - an outage or a broken version must not stop serving
                errors.append(f"{name}: {error}")
                log.warning("registry poll failed for %s, keeping the loaded models: %s", name, error)
        self.registry_error = "; ".join(errors) or None
        if loaded:
            freeze_heap()
        self.metrics.registry_up.set(0 if errors else 1)

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Ready when the flags are read and every symbol serves a model; a registry or apiserver outage
        alone degrades but keeps it ready, because taking every replica out of the Service during an
        outage would stop trading."""
        symbols = {s: {"alias": m.alias, "version": m.version, "loss_function": str(m.loss)}
                   if (m := self.serving.get(s)) else None for s in self.settings.symbols}
        ready = self.flag_values is not None and all(symbols.values())
        return ready, {"ready": ready, "registry_error": self.registry_error,
                       "flag_source_error": self.flag_source_error, "symbols": symbols}


async def _every(interval: float, step: Callable[[], Awaitable[None]]) -> None:
    while True:
        try:
            await step()
        except Exception:  # a background loop must outlive any single failure
            log.exception("background step failed")
        await asyncio.sleep(interval)


def build_app(settings: ServeSettings) -> web.Application:
    # Fail a poll fast during an MLflow outage (the next poll retries) instead of MLflow's minutes of backoff.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    flag_source = None
    if settings.config_map is not None:
        flag_source = ConfigMapWatch(*parse_config_map(settings.config_map), api_client(settings.kubeconfig))
    runtime = Runtime(settings, connect(settings.tracking_uri), flag_source)
    known = set(settings.symbols)

    async def predict(request: web.Request) -> web.Response:
        started = time.perf_counter()
        symbol = "unknown"
        try:
            try:
                body = json.loads(await request.read())
            except (ValueError, UnicodeDecodeError):
                raise BadRequest(400, "body must be JSON: {\"symbol\": ..., \"features\": [[...], ...]}") from None
            if not isinstance(body, dict) or not isinstance(body.get("symbol"), str):
                raise BadRequest(400, "body must be an object with a string 'symbol'")
            if body["symbol"].upper() not in known:
                raise BadRequest(404, f"unknown symbol {body['symbol']!r}; served: {sorted(known)}")
            symbol = body["symbol"].upper()
            model = runtime.serving.get(symbol)
            if model is None:
                raise BadRequest(503, f"no model loaded for {symbol} yet")
            x = parse_rows(body.get("features"), model.n_features)
            proba = model.predict_proba(x)
        except BadRequest as error:
            runtime.metrics.requests.labels(symbol, str(error.status)).inc()
            return web.json_response({"error": str(error)}, status=error.status)
        variant = runtime.variant(model.alias)
        response = web.json_response({
            "symbol": symbol, "alias": model.alias, "version": model.version, "variant": variant,
            "loss_function": str(model.loss), "threshold": model.threshold,
            "buy_proba": proba.tolist(), "buy": (proba >= model.threshold).tolist(),
        })
        runtime.metrics.observe(symbol, variant, model.version, x, proba, time.perf_counter() - started)
        return response

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        ready, body = runtime.readiness()
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(runtime.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def refresh_flags() -> None:
        runtime.refresh_flags()

    async def background(_: web.Application) -> AsyncIterator[None]:
        if flag_source is not None:
            flag_source.start()
        runtime.refresh_flags()
        freeze_heap()
        tasks = [asyncio.create_task(_every(settings.config_poll_seconds, refresh_flags)),
                 asyncio.create_task(_every(settings.poll_seconds, runtime.poll_registry))]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if flag_source is not None:
            await asyncio.to_thread(flag_source.stop)

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/predict", predict)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.cleanup_ctx.append(background)
    return app


def run_server(settings: ServeSettings) -> int:
    web.run_app(build_app(settings), host=settings.host, port=settings.port, access_log=None,
                print=lambda message: log.info("%s", message))
    return 0
