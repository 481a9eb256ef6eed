"""Generated manifests on the real apiserver: whatever the schema lets through, the operator's
model either accepts, and then renders every query, duration, key and name of it without an
exception, or refuses naming the field (the rollout goes Invalid; no error limit is spent).

Hypothesis starts from the two examples and mutates them: a leaf replaced by a value drawn from
the CRD's schema node at that path (the schema is generated from the pydantic models, so the
generator follows them) or by a value known to be tricky (zero and out-of-order durations,
unknown placeholders, reserved aliases, dot keys), an optional field added from the schema, a key
removed, a list item duplicated. Each manifest is created with a server-side dry run; the counts
are printed at the end (`pytest -s` shows them).
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from mlflow.utils.validation import _validate_model_name, _validate_tag_name

try:  # MLflow 3.18 renamed its alias validators (they now serve every resource's aliases)
    from mlflow.utils.validation import _validate_alias_name as _validate_model_alias_name
    from mlflow.utils.validation import _validate_alias_name_reserved as _validate_model_alias_name_reserved
except ImportError:
    from mlflow.utils.validation import _validate_model_alias_name, _validate_model_alias_name_reserved
from pydantic import ValidationError

from devstack.controlplane import ControlPlane
from modelrollout import engine
from modelrollout.controller import validation_message
from modelrollout.crd import GROUP, PLURAL, VERSION, openapi_schema
from modelrollout.gates import gate_queries, stage_window, trigger_queries
from modelrollout.observation import Observation
from modelrollout.spec import DURATION_PATTERN, ModelRolloutSpec, parse_duration
from modelrollout.status import ModelRolloutStatus

pytestmark = pytest.mark.e2e
REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [yaml.safe_load(path.read_text()) for path in sorted((REPO_ROOT / "examples").glob("focal-loss-rollout*.yaml"))]
SPEC_SCHEMA = openapi_schema(ModelRolloutSpec)
EXAMPLES_TRIED = 200
QUERY_MAX = 4096  # the maxLength that marks a query template in the schema
DURATIONS = ["0s", "0ms", "0h0m", "1s1h", "1h1h", "5ms5s", "999999999w", "99999999999d", "366d", "366d1s", "1h30m",
             "500ms", "48h", "7d", "", "-5m", "5"]
NAMES = ["", "..", ".", ".a", "a/b", "../x", "latest", "v1", "V1", "champion", "candidate", "previous-champion",
         "BTCUSDC", "X" * 300, "{symbol}", "{foo}", "x{", "}", "{key}", "{strategy}", "{key}__{symbol}",
         "http://localhost:9090", "http://:9090", "mlflow:5000"]
QUERY_EDITS = [("{symbols}", "{symbol}"), ("{window}", "{windw}"), ("{variant}", "candidate"),
               ('variant="candidate"', 'variant="{variant}"'), ("{window}", "0s"), ("[{window}]", "[{window}] {x}"),
               ("{symbols}", "{symbols}|{variant}")]


def edited_query(query: str) -> st.SearchStrategy[str]:
    """The query with a placeholder misspelt, dropped or added, as a user might edit it."""
    edits = [(old, new) for old, new in QUERY_EDITS if old in query]
    return st.sampled_from(edits).map(lambda edit: query.replace(*edit)) if edits else st.just(query + "{window}")


Path_ = tuple[str | int, ...]


def nodes(value: Any, schema: dict[str, Any], path: Path_ = ()) -> Iterator[tuple[Path_, Any, dict[str, Any]]]:
    """Every (path, value, schema node) of a spec, the spec itself first."""
    yield path, value, schema
    if isinstance(value, dict):
        for key, item in value.items():
            if key in schema.get("properties", {}):
                yield from nodes(item, schema["properties"][key], (*path, key))
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from nodes(item, schema["items"], (*path, index))


def from_schema(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values for a schema node: mostly of its type and near its bounds, some beyond them."""
    if "enum" in schema:
        return st.sampled_from([*schema["enum"], "bogus"])
    kind = schema.get("type")
    if kind == "string":
        drawn = (st.from_regex(schema["pattern"], fullmatch=True) if "pattern" in schema
                 else st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), max_size=40))
        if schema.get("format") == "date":
            drawn = st.dates().map(lambda d: d.isoformat())
        return drawn
    if kind == "integer":
        low, high = schema.get("minimum", -3), schema.get("maximum", 10**6)
        return st.integers(min_value=int(low) - 2, max_value=int(high) + 2)
    if kind == "number":
        low, high = schema.get("minimum", -10.0), schema.get("maximum", 10.0)
        return st.floats(min_value=low - 1, max_value=high + 1, allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(from_schema(schema["items"], depth + 1), max_size=3 if depth < 2 else 1)
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        optional = [name for name in properties if name not in required] if depth < 2 else []
        return st.fixed_dictionaries({name: from_schema(properties[name], depth + 1) for name in required},
                                     optional={name: from_schema(properties[name], depth + 1) for name in optional})
    return st.none()


def at(spec: Any, path: Path_) -> Any:
    for step in path:
        spec = spec[step]
    return spec


def is_query(schema: dict[str, Any]) -> bool:
    return schema.get("maxLength") == QUERY_MAX


def is_duration(schema: dict[str, Any]) -> bool:
    return schema.get("pattern") == DURATION_PATTERN


@st.composite
def manifests(draw: st.DrawFn) -> dict[str, Any]:
    """An example with one to three mutations: generic ones from the schema, and targeted ones
    (a query edited, a duration or a name set to a tricky value) that reach the operator's inputs."""
    manifest = copy.deepcopy(draw(st.sampled_from(EXAMPLES)))
    spec = manifest["spec"]
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        found = list(nodes(spec, SPEC_SCHEMA))
        strings = [node for node in found if node[0] and isinstance(node[1], str)]
        targeted = {"query": ([n for n in strings if is_query(n[2])], edited_query),
                    "duration": ([n for n in strings if is_duration(n[2])], lambda _: st.sampled_from(DURATIONS)),
                    "name": ([n for n in strings if not is_query(n[2]) and not is_duration(n[2])],
                             lambda _: st.sampled_from(NAMES))}
        operation = draw(st.sampled_from(["query", "duration", "name", "replace", "add", "remove", "duplicate"]))
        if operation in targeted:
            candidates, values = targeted[operation]
            if not candidates:  # an earlier mutation removed every node of that kind
                continue
            path, value, _ = draw(st.sampled_from(candidates))
            at(spec, path[:-1])[path[-1]] = draw(values(value))
            continue
        path, value, schema = draw(st.sampled_from(found))
        if operation == "add" and isinstance(value, dict):
            absent = [name for name in schema.get("properties", {}) if name not in value]
            if absent:
                name = draw(st.sampled_from(absent))
                value[name] = draw(from_schema(schema["properties"][name]))
        elif operation == "remove" and path:
            del at(spec, path[:-1])[path[-1]]
        elif operation == "duplicate" and isinstance(value, list) and value:
            value.append(copy.deepcopy(draw(st.sampled_from(value))))
        elif path and not isinstance(value, dict | list):
            at(spec, path[:-1])[path[-1]] = draw(from_schema(schema))
    return manifest


def names_a_field(error: ValidationError) -> bool:
    """Each error has a location, or (a rule over several fields) says which field it is about."""
    return all(item["loc"] or re.match(r"^Value error, [a-zA-Z.]+: ", item["msg"]) for item in error.errors())


def render_everything(spec: ModelRolloutSpec, core: client.CoreV1Api) -> None:
    """What the operator derives from an accepted spec, each as the engine and adapters would."""
    now = datetime.now(UTC)
    for _, value, schema in nodes(spec.model_dump(mode="json", by_alias=True, exclude_none=True), SPEC_SCHEMA):
        if schema.get("pattern") == DURATION_PATTERN:
            assert now + parse_duration(value) >= now
            for ran in (None, timedelta(0), timedelta(seconds=1), timedelta(days=400)):
                parse_duration(stage_window(value, ran))
    for stage in spec.stages:
        symbols = spec.stage_symbols(stage)
        for ran in (None, timedelta(0), timedelta(milliseconds=1500), timedelta(days=400)):
            # A sequential rule reads the stage since it started: with no start (None) it is never rendered.
            for gate in stage.gates:
                if ran is not None or gate.kind != "sequential":
                    gate_queries(gate, symbols, ran)
            for trigger in stage.rollback_triggers:
                if ran is not None or trigger.kind != "sequential":
                    trigger_queries(trigger, symbols, ran)
    status = ModelRolloutStatus()
    engine.plan_measurements(spec, status, now)
    engine.decide(spec, status, Observation(), [], now, 1)
    change = spec.change
    keys = {change.key: change.baseline, **{change.override_key(s): change.candidate for s in spec.symbols}}
    assert len(keys) == len(spec.symbols) + 1
    core.create_namespaced_config_map("default", {"metadata": {"name": "flags-probe"}, "data": keys}, dry_run="All")
    for symbol in spec.symbols:
        _validate_model_name(spec.models.registered_model(symbol))
    for alias in (spec.models.aliases.champion, spec.models.aliases.candidate, spec.models.aliases.previous):
        _validate_model_alias_name(alias)
        _validate_model_alias_name_reserved(alias)
    _validate_tag_name(spec.models.feature_artifact.tag)


def apply_dry_run(custom: client.CustomObjectsApi,
                  manifest: dict[str, Any]) -> tuple[dict[str, Any], ApiException | None]:
    """(the object as the apiserver would store it, or why it refused it)."""
    try:
        return custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, manifest,
                                                      dry_run="All"), None
    except ApiException as refused:
        return {}, refused


def model_error(spec: dict[str, Any]) -> ValidationError | None:
    try:
        ModelRolloutSpec.model_validate(spec)
    except ValidationError as error:
        return error
    return None


def test_whatever_the_apiserver_accepts_the_operator_accepts_and_renders_or_refuses_naming_the_field(
        crd_installed: ControlPlane) -> None:
    api_client = config.new_client_from_config(config_file=str(crd_installed.kubeconfig))
    custom, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
    tally: Counter[str] = Counter()

    @settings(max_examples=EXAMPLES_TRIED, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(manifests())
    def check(manifest: dict[str, Any]) -> None:
        tally["tried"] += 1
        stored, refused = apply_dry_run(custom, manifest)
        if refused is not None:
            assert refused.status == 422, refused.body  # Invalid, naming the field; never a server error
            tally["refused by the apiserver"] += 1
            if model_error(manifest["spec"]) is None:
                tally["refused by the apiserver, accepted by the model"] += 1
            return
        error = model_error(stored["spec"])
        if error is not None:
            assert names_a_field(error), validation_message(error)
            tally["accepted by the apiserver, refused by the model (Invalid)"] += 1
            return
        tally["accepted by both"] += 1
        render_everything(ModelRolloutSpec.model_validate(stored["spec"]), core)

    check()
    print("\ngenerated manifests:", dict(tally))
    assert tally["refused by the apiserver"] >= tally["tried"] // 10
    assert tally["accepted by both"] >= tally["tried"] // 10
