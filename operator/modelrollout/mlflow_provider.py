"""MLflow adapter: reads the shadow sweep and the registry's aliases, moves aliases and tags.

A thin shell over `mlflow.MlflowClient` that decides nothing: the gate judges the sweep
(`modelrollout.sweep_stats`), the engine decides which alias moves where. Its only jobs
are to bound MLflow's patience, to say plainly when MLflow cannot be read, and to make
every write "set to target" so that repeating it is harmless.

`mlflow` (the mlflow-skinny client) is imported at the first MLflow call, not with this
module: it is the largest import the operator has, and an operator whose rollouts need no
MLflow read yet (or a `kubectl modelrollout` command that reads none) should not carry it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, cast

from modelrollout.observation import SweepEvidence, SweepRow, Variant
from modelrollout.spec import ModelsSpec
from modelrollout.status import ModelVersions

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import RegisteredModel

log = logging.getLogger(__name__)

SWEEP_TAGS = ("variant", "symbol", "fold")
VARIANTS = ("baseline", "candidate")


class MlflowUnavailable(RuntimeError):
    """MLflow could not be read or written (unreachable, timed out, server error, refused)."""


class NotFound(ValueError, LookupError):
    """The registered model or version does not exist: the caller's problem, not an outage."""


class MlflowProvider:
    """One tracking server, used for both tracking and the model registry.

    MLflow's REST client reads its retry policy from the process environment on every
    request, with defaults (7 retries, exponential backoff, 120 s timeout) that turn an
    outage into minutes of blocking. The constructor therefore sets, process-wide,
    `MLFLOW_HTTP_REQUEST_MAX_RETRIES=0` and `MLFLOW_HTTP_REQUEST_TIMEOUT=ceil(timeout_s)`:
    one attempt per request, answered within the timeout. Retrying is the operator's
    analysis cycle's job, which comes back at the next interval anyway.
    """

    def __init__(self, tracking_uri: str, timeout_s: float = 10.0, *, page_size: int = 1000) -> None:
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, math.ceil(timeout_s)))
        self.tracking_uri = tracking_uri
        self.page_size = page_size
        self._runs: dict[tuple[str, str], str | None] = {}  # a model version's run never changes

    @cached_property
    def _client(self) -> MlflowClient:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def sweep_evidence(self, experiment: str, *, sweep_id: str | None = None) -> SweepEvidence:
        """Every finished, active run of the experiment that carries the sweep tags (and `sweep_id`, when
        given: one sweep's runs alone, e.g. those of the operator's sweep Job); never raises.

        Runs that are still running, failed or were killed are not evidence and are not
        read. Runs without all of `variant`, `symbol`, `fold` (e.g. a sweep's parent run),
        or with a variant other than baseline/candidate, are skipped and logged, and the
        evidence stays error-free: skipping can only remove evidence, which the gate turns
        into Inconclusive, never into Pass.
        """
        try:
            with self._errors(f"read the runs of experiment {experiment!r}"):
                found = self._client.get_experiment_by_name(experiment)
                if found is None:
                    return SweepEvidence(experiment, error=f"experiment {experiment!r} not found in MLflow at "
                                                           f"{self.tracking_uri}")
                runs = list(self._finished_runs(found.experiment_id, sweep_id))
        except (MlflowUnavailable, ValueError) as error:
            return SweepEvidence(experiment, error=str(error))
        rows = tuple(row for row in map(_sweep_row, runs) if row is not None)
        if len(rows) < len(runs):
            skipped = sorted({run.info.run_id for run in runs} - {row.run_id for row in rows})
            log.warning("experiment %r: skipped %d run(s) without valid sweep tags %s: %s", experiment,
                        len(skipped), SWEEP_TAGS, ", ".join(skipped))
        return SweepEvidence(experiment, rows)

    def model_versions(self, models: ModelsSpec, symbols: Sequence[str]) -> ModelVersions:
        """Champion and candidate versions by registered model, and the runs behind them.

        A registered model or alias that does not exist is simply absent. `feature_runs`
        is the champion's feature-artifact run: the registered model's pin tag when set,
        else the champion version's run; `candidate_runs` is the candidate version's run.
        Raises MlflowUnavailable when MLflow cannot be read.
        """
        champions: dict[str, str] = {}
        candidates: dict[str, str] = {}
        feature_runs: dict[str, str] = {}
        candidate_runs: dict[str, str] = {}
        for name in dict.fromkeys(models.registered_model(symbol) for symbol in symbols):
            model = self._registered_model(name)
            if model is None:
                continue
            champion = model.aliases.get(models.aliases.champion)
            candidate = model.aliases.get(models.aliases.candidate)
            if champion is not None:
                champions[name] = champion
            if candidate is not None:
                candidates[name] = candidate
            if feature_run := model.tags.get(models.feature_artifact.tag) or self._run_of(name, champion):
                feature_runs[name] = feature_run
            if candidate_run := self._run_of(name, candidate):
                candidate_runs[name] = candidate_run
        return ModelVersions(champion=champions, candidate=candidates, feature_runs=feature_runs,
                             candidate_runs=candidate_runs)

    def set_alias(self, registered_model: str, alias: str, version: str) -> bool:
        """Point `alias` at `version`; False when it already did (nothing written).

        Raises ValueError for a model or version that does not exist, MlflowUnavailable on outage.
        """
        with self._errors(f"set alias {alias!r} of {registered_model!r} to version {version}"):
            if self._client.get_registered_model(registered_model).aliases.get(alias) == version:
                return False
            self._client.set_registered_model_alias(registered_model, alias, version)
        return True

    def set_model_tag(self, registered_model: str, key: str, value: str) -> bool:
        """Set a registered model's tag; False when it already had that value (nothing written).

        Raises ValueError for a model that does not exist, MlflowUnavailable on outage.
        """
        with self._errors(f"set tag {key!r} of {registered_model!r} to {value!r}"):
            if self._client.get_registered_model(registered_model).tags.get(key) == value:
                return False
            self._client.set_registered_model_tag(registered_model, key, value)
        return True

    def _finished_runs(self, experiment_id: str, sweep_id: str | None) -> Iterator[Run]:
        from mlflow.entities import ViewType

        query = "attributes.status = 'FINISHED'" + ("" if sweep_id is None else f" and tags.sweep_id = '{sweep_id}'")
        token = None
        while True:
            page = self._client.search_runs([experiment_id], filter_string=query,
                                            run_view_type=ViewType.ACTIVE_ONLY, max_results=self.page_size,
                                            page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def _registered_model(self, name: str) -> RegisteredModel | None:
        try:
            with self._errors(f"read registered model {name!r}"):
                return self._client.get_registered_model(name)
        except LookupError:
            return None

    def _run_of(self, name: str, version: str | None) -> str | None:
        if version is None:
            return None
        if (name, version) not in self._runs:
            try:
                with self._errors(f"read version {version} of {name!r}"):
                    self._runs[(name, version)] = self._client.get_model_version(name, version).run_id or None
            except LookupError:
                return None
        return self._runs[(name, version)]

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """MLflow's exceptions as ours: what is missing or invalid is the caller's (NotFound,
        ValueError); every other failure means MLflow cannot be used now (MlflowUnavailable)."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except MlflowException as error:
            message = f"MLflow at {self.tracking_uri}: cannot {doing}: {error.message}"
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise NotFound(message) from error
            if error.error_code == "INVALID_PARAMETER_VALUE":
                raise ValueError(message) from error
            raise MlflowUnavailable(message) from error


def _sweep_row(run: Run) -> SweepRow | None:
    tags = run.data.tags
    if not all(tags.get(tag) for tag in SWEEP_TAGS) or tags["variant"] not in VARIANTS:
        return None
    variant = cast(Variant, tags["variant"])  # one of VARIANTS, checked above
    return SweepRow(run_id=run.info.run_id, symbol=tags["symbol"], fold=tags["fold"], variant=variant,
                    metrics=dict(run.data.metrics))
