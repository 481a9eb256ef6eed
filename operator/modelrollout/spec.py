"""The ModelRollout spec: the single source of truth for what a rollout asks for.

The CRD's OpenAPI schema is generated from these models (`modelrollout.crd`), and each
cross-field rule exists twice on purpose: as a CEL rule the kube-apiserver enforces at
`kubectl apply`, and as a pydantic validator the operator enforces on whatever reaches
it. A test runs one corpus of invalid manifests through both and demands equal verdicts.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, GetJsonSchemaHandler, StringConstraints, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict
from pydantic_core import CoreSchema


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One `x-kubernetes-validations` entry; `field_path` makes the error name the field."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


@dataclass(frozen=True, eq=False)  # hashed by identity: typing hashes Annotated metadata
class Cel:
    """CEL rules on a type's own schema node, so every field of the type carries them (and a
    refusal names that field): the schema half of a rule whose pydantic half is the type's
    AfterValidator."""

    rules: tuple[JsonDict, ...]

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        json_schema = dict(handler(schema))
        json_schema["x-kubernetes-validations"] = [*json_schema.get("x-kubernetes-validations", []), *self.rules]
        return json_schema


SYMBOL_PATTERN = r"^[A-Z0-9]{2,20}$"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A ConfigMap or Secret key as the apiserver takes it: -._a-zA-Z0-9, not `.`, `..` or `..x`.
DATA_KEY_PATTERN = r"^([-_a-zA-Z0-9]|[.][-_a-zA-Z0-9])[-._a-zA-Z0-9]*$"
DATA_KEY_MAX = 253
LONGEST_SYMBOL = "X" * 20  # stands for any symbol where a rendered name's length is checked
MODEL_NAME_MAX = 250  # MLflow: registered model names live in a 256-character column

# Prometheus' duration syntax: units largest first, each at most once (Prometheus refuses `1s1h`),
# at most nine digits each, so the CEL sum below cannot overflow an int64 of milliseconds.
DURATION_UNITS_MS = {"w": 604_800_000, "d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
DURATION_PATTERN = "^" + "".join(f"([0-9]{{1,9}}{unit})?" for unit in DURATION_UNITS_MS) + "$"
MAX_DURATION = timedelta(days=366)
"""The longest duration a spec may give: a year's window or delay is a typo, not a plan (and
nine digits of weeks would overflow the datetime arithmetic the engine does with it)."""


def _duration_ms_cel(of: str = "self") -> str:
    """The duration `of` (a CEL expression, `self` by default) in milliseconds: its i-th number times its i-th unit."""
    numbers, units = f"{of}.findAll('[0-9]+')", f"{of}.findAll('[a-z]+')"
    scale = "{" + ", ".join(f"'{unit}': {ms}" for unit, ms in DURATION_UNITS_MS.items()) + "}"
    return " + ".join(f"(size({numbers}) > {i} ? int({numbers}[{i}]) * {scale}[{units}[{i}]] : 0)"
                      for i in range(len(DURATION_UNITS_MS)))


_MAX_DURATION_MS = int(MAX_DURATION.total_seconds() * 1000)
_DURATION_CEL = (cel(f"!self.matches('{DURATION_PATTERN}') || {_duration_ms_cel()} <= {_MAX_DURATION_MS}",
                     f"must be at most {MAX_DURATION.days}d"),)
_POSITIVE_CEL = (cel("self.matches('[1-9]')", "must be a positive duration, not 0"),)


def duration_ms(text: str) -> int:
    """`30s`, `48h`, `7d`, `1h30m` (Prometheus' duration syntax) in milliseconds."""
    if not text or not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r} (expected e.g. 30s, 48h, 7d, 1h30m: units largest first)")
    return sum(int(n) * DURATION_UNITS_MS[unit] for n, unit in re.findall(r"([0-9]+)(ms|w|d|h|m|s)", text))


def parse_duration(text: str) -> timedelta:
    """A spec duration as a timedelta; ValueError (never an overflow) beyond MAX_DURATION."""
    milliseconds = duration_ms(text)
    if milliseconds > _MAX_DURATION_MS:
        raise ValueError(f"duration {text!r} is longer than {MAX_DURATION.days}d")
    return timedelta(milliseconds=milliseconds)


def _bounded(text: str) -> str:
    parse_duration(text)
    return text


def _positive(text: str) -> str:
    if parse_duration(text) <= timedelta(0):
        raise ValueError("must be a positive duration, not 0")
    return text


# Placeholders a query template may hold; PromQL's own braces (`{symbol=~"..."}`) are not one.
PLACEHOLDER = r"[{][A-Za-z_][A-Za-z0-9_]*[}]"
QUERY_PLACEHOLDERS = ("{symbols}", "{window}")
VARIANT_PLACEHOLDER = "{variant}"


def _placeholder_rules(known: tuple[str, ...]) -> tuple[JsonDict, ...]:
    blanked = "self" + "".join(f".replace('{name}', ' ')" for name in known)
    return (cel(f"!{blanked}.matches('{PLACEHOLDER}')",
                f"unknown {{placeholder}}: a template may hold only {', '.join(known)}"),)


def _known_placeholders(known: tuple[str, ...]) -> Any:
    def check(template: str) -> str:
        blanked = template
        for name in known:
            blanked = blanked.replace(name, " ")
        unknown = sorted(set(re.findall(PLACEHOLDER, blanked)))
        if unknown:
            raise ValueError(f"unknown placeholder(s) {', '.join(unknown)}: a template may hold only "
                             f"{', '.join(known)}")
        return template
    return AfterValidator(check)


def _has_variant(template: str) -> str:
    if VARIANT_PLACEHOLDER not in template:
        raise ValueError("must contain {variant}: it runs once for the candidate and once for the baseline")
    return template


def _url(text: str) -> str:
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 (parsing the port is the check: it raises on a bad one)
    except ValueError as error:
        raise ValueError(f"must be a URL that names a host: {error}") from None
    if not parts.hostname:
        raise ValueError("must be a URL that names a host")
    return text


def _alias(name: str) -> str:
    if name == "latest" or re.fullmatch(r"v[0-9]+", name):
        raise ValueError(f"{name!r} is reserved by MLflow (latest, v<number>)")
    return name


Symbol = Annotated[str, StringConstraints(pattern=SYMBOL_PATTERN)]
Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, min_length=2, max_length=32),
                     Cel(_DURATION_CEL), AfterValidator(_bounded)]
"""A duration of zero or more, at most MAX_DURATION."""
PositiveDuration = Annotated[Duration, Cel(_POSITIVE_CEL), AfterValidator(_positive)]
"""A duration that must not be 0 (windows, intervals, timeouts)."""
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=63)]
Alias = Annotated[Name, Cel((cel("self != 'latest' && !self.matches('^v[0-9]+$')",
                                 "is reserved by MLflow (latest, v<number>)"),)), AfterValidator(_alias)]
Text = Annotated[str, StringConstraints(max_length=1024)]
NonEmpty = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
DataKey = Annotated[str, StringConstraints(pattern=DATA_KEY_PATTERN, max_length=DATA_KEY_MAX)]
PrincipalName = Annotated[str, StringConstraints(pattern=r"^[^;,\s]+$", max_length=253)]  # user or group
PromQL = Annotated[str, StringConstraints(min_length=1, max_length=4096), Cel(_placeholder_rules(QUERY_PLACEHOLDERS)),
                   _known_placeholders(QUERY_PLACEHOLDERS)]
"""A query template with {symbols} and {window} only: it runs once, for no variant."""
VariantPromQL = Annotated[
    str, StringConstraints(min_length=1, max_length=4096),
    Cel(_placeholder_rules((*QUERY_PLACEHOLDERS, VARIANT_PLACEHOLDER))
        + (cel(f"self.contains('{VARIANT_PLACEHOLDER}')", "must contain {variant}: it runs once for the candidate "
               "and once for the baseline"),)),
    _known_placeholders((*QUERY_PLACEHOLDERS, VARIANT_PLACEHOLDER)), AfterValidator(_has_variant)]
"""A query template run once per variant: it must hold {variant}, and may hold {symbols} and {window}."""
OptionalVariantPromQL = Annotated[
    str, StringConstraints(min_length=1, max_length=4096),
    Cel(_placeholder_rules((*QUERY_PLACEHOLDERS, VARIANT_PLACEHOLDER))),
    _known_placeholders((*QUERY_PLACEHOLDERS, VARIANT_PLACEHOLDER))]
"""A query template that may hold {variant} (a sequential test's sums: per variant against the baseline,
the candidate's alone against a value), {symbols} and {window}."""
Url = Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=1024),
                Cel((cel("isURL(self) && url(self).getHostname() != ''", "must be a URL that names a host"),)),
                AfterValidator(_url)]
Comparator = Literal[">=", ">", "<=", "<"]
GateKind = Literal["threshold", "comparison", "sampleSize", "noFiringAlert", "sweep", "sequential"]
TriggerKind = Literal["threshold", "sequential"]
StageType = Literal["shadow", "canary", "full"]
RollbackStep = Literal["configMap", "mlflowAlias", "featureArtifact"]


class SpecModel(BaseModel):
    """camelCase on the wire (Kubernetes style), snake_case in Python; unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True,
                              allow_inf_nan=False)


class ConfigMapRef(SpecModel):
    name: Name
    namespace: Name | None = Field(default=None, description="Defaults to the rollout's namespace.")


class FlagChange(SpecModel):
    """The change itself: one ConfigMap key flipped from baseline to candidate."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("self.baseline != self.candidate", "baseline and candidate must differ", ".candidate"),
        cel("self.symbolOverrideKey.contains('{symbol}')", "symbolOverrideKey must contain {symbol}",
            ".symbolOverrideKey"),
        cel(f"self.symbolOverrideKey.replace('{{key}}', self.key).replace('{{symbol}}', '{LONGEST_SYMBOL}')"
            f".matches('{DATA_KEY_PATTERN}') && size(self.symbolOverrideKey.replace('{{key}}', self.key)"
            f".replace('{{symbol}}', '{LONGEST_SYMBOL}')) <= {DATA_KEY_MAX}",
            f"symbolOverrideKey must give a ConfigMap key (-._a-zA-Z0-9, not starting with .., at most "
            f"{DATA_KEY_MAX} characters with a 20-character symbol)", ".symbolOverrideKey"),
    ]})

    config_map: ConfigMapRef
    key: DataKey
    baseline: NonEmpty
    candidate: NonEmpty
    symbol_override_key: Annotated[str, StringConstraints(pattern=r"^([-._a-zA-Z0-9]|[{]key[}]|[{]symbol[}])+$",
                                                          max_length=DATA_KEY_MAX)] = Field(
        default="{key}__{symbol}",
        description="Per-symbol override key that switches one symbol for a canary; {key} and {symbol} are filled in.",
    )

    @model_validator(mode="after")
    def _differ(self) -> FlagChange:
        if self.baseline == self.candidate:
            raise ValueError("change.candidate: baseline and candidate must differ")
        if "{symbol}" not in self.symbol_override_key:
            raise ValueError("change.symbolOverrideKey: must contain {symbol}")
        longest = self.override_key(LONGEST_SYMBOL)
        if not re.fullmatch(DATA_KEY_PATTERN, longest) or len(longest) > DATA_KEY_MAX:
            raise ValueError(f"change.symbolOverrideKey: must give a ConfigMap key (-._a-zA-Z0-9, not starting with "
                             f".., at most {DATA_KEY_MAX} characters with a 20-character symbol)")
        return self

    def override_key(self, symbol: str) -> str:
        return self.symbol_override_key.replace("{key}", self.key).replace("{symbol}", symbol)


class Aliases(SpecModel):
    """Three distinct MLflow aliases: a rollback moves `champion` back to what `previous` holds."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("self.champion != self.candidate && self.champion != self.previous && self.candidate != self.previous",
            "champion, candidate and previous must be three different aliases", ".previous"),
    ]})

    champion: Alias = "champion"
    candidate: Alias = "candidate"
    previous: Alias = "previous-champion"

    @model_validator(mode="after")
    def _distinct(self) -> Aliases:
        if len({self.champion, self.candidate, self.previous}) != 3:
            raise ValueError("models.aliases.previous: champion, candidate and previous must be three different "
                             "aliases")
        return self


class FeatureArtifactPin(SpecModel):
    """Which run's feature artifact (feature list + drift reference) a registered model uses."""

    enabled: bool = True
    tag: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$", max_length=250)] = (
        "feature_artifact_run_id")
    """An MLflow registry tag key (MLflow refuses `.`, `..x` and paths that normalise differently)."""


class ModelsSpec(SpecModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("self.registeredModelTemplate.contains('{symbol}')", "registeredModelTemplate must contain {symbol}",
            ".registeredModelTemplate"),
        cel(f"size(self.registeredModelTemplate.replace('{{symbol}}', '{LONGEST_SYMBOL}')"
            f".replace('{{strategy}}', self.strategy)) <= {MODEL_NAME_MAX}",
            f"registeredModelTemplate must give a name of at most {MODEL_NAME_MAX} characters with a "
            "20-character symbol", ".registeredModelTemplate"),
    ]})

    tracking_uri: Url
    registered_model_template: Annotated[str, StringConstraints(
        pattern=r"^([-_A-Za-z0-9]|[{]symbol[}]|[{]strategy[}])([-_.A-Za-z0-9]|[{]symbol[}]|[{]strategy[}])*$",
        max_length=MODEL_NAME_MAX)] = "cvntrade_XGBoost_{symbol}_{strategy}"
    """{symbol} and {strategy} are filled in; no other braces, and no leading dot (MLflow refuses `..x`)."""
    strategy: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]+$", max_length=63)]
    aliases: Aliases = Aliases()
    feature_artifact: FeatureArtifactPin = FeatureArtifactPin()

    @model_validator(mode="after")
    def _template(self) -> ModelsSpec:
        if "{symbol}" not in self.registered_model_template:
            raise ValueError("models.registeredModelTemplate: must contain {symbol}")
        if len(self.registered_model(LONGEST_SYMBOL)) > MODEL_NAME_MAX:
            raise ValueError(f"models.registeredModelTemplate: must give a name of at most {MODEL_NAME_MAX} characters "
                             "with a 20-character symbol")
        return self

    def registered_model(self, symbol: str) -> str:
        return self.registered_model_template.replace("{symbol}", symbol).replace("{strategy}", self.strategy)


class SecretKeyRef(SpecModel):
    name: Name
    key: DataKey


class PrometheusSpec(SpecModel):
    url: Url
    auth_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding a bearer token sent as Authorization header.")
    timeout: PositiveDuration = "10s"


class ReplaySpec(SpecModel):
    """The plan's rules replayed over the baseline's own history when a rollout (revision) starts.

    The baseline stands in for the candidate, so every firing is a false alarm; a rule that would
    have fired in more than `warnAbove` of the stage-long windows is reported as a Warning and in the
    BaselineReplay condition. Advisory: it never holds or moves a rollout (`modelrollout.replay`).
    """

    enabled: bool = True
    since: PositiveDuration = Field(default="30d", description="How much history to replay.")
    every: PositiveDuration = Field(default="1d", description="A stage-long window starts this often.")
    step: PositiveDuration = Field(default="10m", description="How often a rule is looked at in the replay.")
    warn_above: float = Field(default=0.05, ge=0, le=1,
                              description="Share of windows a rule may fire in before it is reported.")


DEFAULT_TRIGGER_INTERVAL = "5s"


class AnalysisSpec(SpecModel):
    """Two cadences: gates every `interval`, rollback triggers every `triggerInterval` (docs/semantics.md)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel(f"!has(self.triggerInterval) || {_duration_ms_cel('self.triggerInterval')} <= "
            f"{_duration_ms_cel('self.interval')}", "triggerInterval must not be longer than interval",
            ".triggerInterval"),
    ]})

    interval: PositiveDuration = Field(default="60s", description="How often gates are evaluated (and triggers with "
                                                                  "them).")
    # No schema default: a defaulted 5s would refuse every manifest whose interval is shorter, for a field it never wrote.
    trigger_interval: PositiveDuration | None = Field(
        default=None, description=f"How often rollback triggers are checked between gate evaluations; "
                                  f"default {DEFAULT_TRIGGER_INTERVAL}, or `interval` when that is shorter.")
    replay: ReplaySpec = ReplaySpec()

    @model_validator(mode="after")
    def _trigger_interval(self) -> AnalysisSpec:
        if self.trigger_interval is not None and \
                parse_duration(self.trigger_interval) > parse_duration(self.interval):
            raise ValueError("triggerInterval: must not be longer than interval")
        return self

    def trigger_period(self) -> timedelta:
        """How often rollback triggers are checked: `triggerInterval`, else 5 s or the interval when shorter."""
        if self.trigger_interval is not None:
            return parse_duration(self.trigger_interval)
        return min(parse_duration(DEFAULT_TRIGGER_INTERVAL), parse_duration(self.interval))


# Which accountability list may make each human request: abort is a rollback; promote and retry
# move levers forward (retry re-runs a stage that may switch a canary on again), so they need approval.
AUTHORITY_FIELD = {"promote": "mayApprove", "retry": "mayApprove", "abort": "mayRollBack"}


class Principals(SpecModel):
    """Who may make one kind of human decision: users by name, or any member of a group.

    Names are matched against the identity the apiserver authenticated (request.userInfo),
    never against what a client writes. `system:` identities (service accounts, nodes, the
    built-in groups such as system:authenticated or system:masters) cannot be named: a human
    decision is made by a named human, and a built-in group would hand it to everyone in it.
    Names hold no `;` or `,`, the separators of the request annotation the apiserver checks.
    """

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("self.users.size() + self.groups.size() > 0", "name at least one user or group", ".users"),
        cel("!self.users.exists(n, n.startsWith('system:')) && !self.groups.exists(n, n.startsWith('system:'))",
            "system: users and groups cannot be named: a human decision is made by named humans"),
    ]})

    # `default=[]` (pydantic copies it) rather than a factory, so the schema defaults it too and CEL sees both lists
    users: list[PrincipalName] = Field(default=[], max_length=20, json_schema_extra={"x-kubernetes-list-type": "set"})
    groups: list[PrincipalName] = Field(default=[], max_length=20, json_schema_extra={"x-kubernetes-list-type": "set"})

    @model_validator(mode="after")
    def _rules(self) -> Principals:
        if not self.users and not self.groups:
            raise ValueError("users: name at least one user or group")
        if any(n.startswith("system:") for n in self.users + self.groups):
            raise ValueError("system: users and groups cannot be named: a human decision is made by named humans")
        if len(set(self.users)) != len(self.users) or len(set(self.groups)) != len(self.groups):
            raise ValueError("users: duplicate name")
        return self

    def allow(self, user: str, groups: Iterable[str]) -> bool:
        """Whether `user`, a member of `groups` (as the apiserver authenticated them), is named here."""
        return user in self.users or any(g in self.groups for g in groups)

    def describe(self) -> str:
        return f"users [{', '.join(self.users)}], groups [{', '.join(self.groups)}]"


class Accountability(SpecModel):
    """Who answers for the change, who may approve it or take it back, and when it must be revisited.

    The admission policy (crds/modelrollout-requests.yaml) enforces `mayApprove` and
    `mayRollBack` on every request annotation and lets only `mayApprove` (as the rollout
    stood before the edit) change this block; the operator checks the requests again.
    """

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("self.owner != self.backupOwner", "backupOwner must differ from owner", ".backupOwner"),
        cel("has(self.sunsetAfter) != has(self.sunsetDate)", "set exactly one of sunsetAfter and sunsetDate",
            ".sunsetAfter"),
    ]})

    owner: NonEmpty
    backup_owner: NonEmpty
    may_approve: Principals = Field(description="Who may promote a stage that awaits approval, retry a stage, and "
                                                "edit this accountability block.")
    may_roll_back: Principals = Field(description="Who may abort (roll back now) without a committee.")
    sunset_after: Duration | None = Field(default=None, description="Period after full rollout to accept or revisit.")
    sunset_date: date | None = None

    @model_validator(mode="after")
    def _rules(self) -> Accountability:
        if self.owner == self.backup_owner:
            raise ValueError("accountability.backupOwner: must differ from owner")
        if (self.sunset_after is None) == (self.sunset_date is None):
            raise ValueError("accountability.sunsetAfter: set exactly one of sunsetAfter and sunsetDate")
        return self

    def authority(self, kind: str) -> Principals:
        """Who may make a request of `kind` (AUTHORITY_FIELD)."""
        return self.may_roll_back if AUTHORITY_FIELD[kind] == "mayRollBack" else self.may_approve


class ThresholdGate(SpecModel):
    """Passes when every symbol's value of `query` satisfies `op value`."""

    query: PromQL
    op: Comparator
    value: float


class ComparisonGate(SpecModel):
    """Candidate versus baseline: `query` is run once per variant ({variant} is filled in).

    Passes when the candidate is at least as good as the baseline (within `tolerance`), or,
    when `stddevQuery` and `countQuery` are given, inside the baseline's confidence interval.
    """

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("has(self.stddevQuery) == has(self.countQuery)", "stddevQuery and countQuery go together",
            ".stddevQuery"),
    ]})

    query: VariantPromQL
    direction: Literal["higherIsBetter", "lowerIsBetter"] = "higherIsBetter"
    tolerance: float = Field(default=0.0, ge=0)
    stddev_query: VariantPromQL | None = None
    count_query: VariantPromQL | None = None
    confidence: float = Field(default=0.95, gt=0.5, lt=1)

    @model_validator(mode="after")
    def _together(self) -> ComparisonGate:
        if (self.stddev_query is None) != (self.count_query is None):
            raise ValueError("comparison.stddevQuery: stddevQuery and countQuery go together")
        return self


class SampleSizeGate(SpecModel):
    """Inconclusive (never failed) while fewer than `min` samples exist: no verdict on thin data."""

    query: PromQL
    min: int = Field(ge=1)


class NoFiringAlertGate(SpecModel):
    alert_names: list[Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=128)]] = Field(
        min_length=1, max_length=20)


class EnvVar(SpecModel):
    name: Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", max_length=253)]
    value: Annotated[str, StringConstraints(max_length=4096)] = ""


class SweepJob(SpecModel):
    """The sweep, run by the operator as a Kubernetes Indexed Job when the shadow stage begins.

    Each completion index runs `model-runtime sweep --shard INDEX/shards` in `image`: every shards-th
    (symbol, fold) cell of spec.symbols, both variants, the baseline and candidate losses being
    change.baseline and change.candidate, logged to models.trackingUri under the experiment of the gate
    and one sweep id (the Job's name). The gate judges exactly those runs, once every index succeeded; a
    Job that fails, passes its deadline or is deleted is an Error that holds the stage (Degraded), never
    a verdict, and `kubectl modelrollout retry` runs a new one.
    """

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("self.parallelism <= self.shards", "parallelism cannot exceed shards", ".parallelism"),
    ]})

    image: Annotated[str, StringConstraints(pattern=r"^[^\s]+$", min_length=1, max_length=1024)]
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    shards: int = Field(default=1, ge=1, le=1000, description="Completion indexes; each runs every shards-th cell.")
    parallelism: int = Field(default=1, ge=1, le=1000, description="Shards running at once.")
    folds: int = Field(default=13, ge=1, le=1000, description="Walk-forward folds per symbol and variant.")
    args: list[Annotated[str, StringConstraints(max_length=1024)]] = Field(
        default=[], max_length=50, description="More `model-runtime sweep` flags, e.g. [--rows, '20000', --rounds, '100'].")
    env: list[EnvVar] = Field(default=[], max_length=50)
    service_account_name: Name | None = None
    backoff_limit_per_index: int = Field(default=2, ge=0, le=100, description="Retries of one failed shard.")
    active_deadline: PositiveDuration = Field(default="36h", description="The whole Job's time limit.")

    @model_validator(mode="after")
    def _parallelism(self) -> SweepJob:
        if self.parallelism > self.shards:
            raise ValueError("parallelism: parallelism cannot exceed shards")
        return self


class SweepGate(SpecModel):
    """The shadow stage's statistical gate over sweep runs logged in MLflow."""

    experiment: NonEmpty
    min_rows: int = Field(default=125, ge=4)
    metric: NonEmpty = "f1_buy"
    calibration_metric: NonEmpty = "ece_hold"
    calibration_tolerance: float = Field(default=0.01, ge=0)
    min_cohens_d: float = Field(default=0.3, ge=0)
    max_adjusted_p: float = Field(default=0.05, gt=0, le=1)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    bootstrap_resamples: int = Field(default=10000, ge=100, le=1000000)
    aggregation: Literal["allSymbols", "anySignificantNoneWorse"] = Field(
        default="allSymbols",
        description="allSymbols: every symbol must pass every lift check. anySignificantNoneWorse: at least one "
                    "symbol passes them all and no symbol's lift CI lies wholly below 0 (more power, same "
                    "false promotion bound under BH; docs/shadow-gate.md).")
    job: SweepJob | None = Field(default=None, description=(
        "Run the sweep as an Indexed Job when the stage begins and judge its runs alone; without it, the gate "
        "judges the finished runs already in the experiment."))


class SequentialTest(SpecModel):
    """A per-trade mean judged by an anytime-valid confidence sequence (`modelrollout.confidence_sequences`).

    The three queries are templates of the per-trade sufficient statistics by (symbol), each the
    growth of a counter over {window}: the trade count, the sum and the sum of squares of net PnL.
    {window} is the time the stage has run, so they cover exactly the stage. The same templates with
    {window} set to `block` give per-block sums, from which a batch-means variance guards against
    correlated trades. The sequence covers the truth at every cycle at once with probability
    1 - alpha, so evaluating it every minute for a week keeps the false alarm rate at alpha.

    `against: baseline` judges candidate minus baseline ({variant} is filled in) against -margin
    (+margin for lowerIsBetter); `against: value` judges the candidate's own mean against `value`.
    As a gate: Pass when the sequence lies wholly on the better side, Fail when wholly on the worse
    side, Inconclusive while it straddles. As a rollback trigger: breached when wholly worse.
    """

    count_query: OptionalVariantPromQL
    sum_query: OptionalVariantPromQL
    sum_squares_query: OptionalVariantPromQL
    against: Literal["baseline", "value"] = "baseline"
    value: float = Field(default=0.0, description="against value: the per-trade mean's bar.")
    margin: float = Field(default=0.0, ge=0, description="against baseline: how much worse per trade is no harm.")
    direction: Literal["higherIsBetter", "lowerIsBetter"] = "higherIsBetter"
    alpha: float = Field(default=0.05, gt=0, lt=0.5, description="False alarm probability over the whole stage.")
    planned_trades: int = Field(default=200, ge=1, le=10_000_000,
                                description="Trades (per variant) at which the sequence is made tightest.")
    block: PositiveDuration = Field(default="6h", description="Time block of the batch-means variance.")
    min_trades: int = Field(default=20, ge=2, le=100000, description=(
        "No verdict before each variant has this many trades: the asymptotic sequence needs a variance "
        "estimate that has settled, and two similar early trades make a tiny one."))

    @model_validator(mode="after")
    def _templates(self) -> SequentialTest:
        """Checked by the operator, not the schema: a spec that breaks it gets an Invalid condition."""
        for field_name, query in (("countQuery", self.count_query), ("sumQuery", self.sum_query),
                                  ("sumSquaresQuery", self.sum_squares_query)):
            if "{window}" not in query:
                raise ValueError(f"sequential.{field_name}: must contain {{window}} (the growth since the stage "
                                 "started)")
            if self.against == "baseline" and "{variant}" not in query:
                raise ValueError(f"sequential.{field_name}: must contain {{variant}} to compare candidate "
                                 "with baseline")
        return self

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higherIsBetter"

    def bar(self) -> float:
        """The threshold the sequence is judged against: the value, or -margin (+margin) on the difference."""
        if self.against == "value":
            return self.value
        return -self.margin if self.higher_is_better else self.margin


GATE_KINDS: tuple[GateKind, ...] = ("threshold", "comparison", "sampleSize", "noFiringAlert", "sweep", "sequential")


class Gate(SpecModel):
    """One promotion criterion. `kind` names the one sub-object that configures it.

    Queries are templates: {symbols} (regex alternation of the stage's symbols), {variant}
    and {window} are filled in; every series must carry a `symbol` label. {window} is the
    gate's window, cut to the time the stage has run: a gate judges what happened in its
    stage, and candidate and baseline are measured over the same interval.
    """

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel(f"(self.kind == '{kind}') == has(self.{kind})", f"{kind} must be set exactly when kind is {kind}",
            f".{kind}")
        for kind in GATE_KINDS
    ]})

    name: Name
    kind: GateKind
    window: PositiveDuration = "5m"
    threshold: ThresholdGate | None = None
    comparison: ComparisonGate | None = None
    sample_size: SampleSizeGate | None = None
    no_firing_alert: NoFiringAlertGate | None = None
    sweep: SweepGate | None = None
    sequential: SequentialTest | None = None
    dry_run: bool = Field(default=False, description="Measured and shown, never counted (Argo Rollouts' dryRun).")

    @model_validator(mode="after")
    def _one_kind(self) -> Gate:
        for kind in GATE_KINDS:
            configured = getattr(self, _snake(kind)) is not None
            if (self.kind == kind) != configured:
                raise ValueError(f"{kind}: must be set exactly when kind is {kind}")
        return self


class RollbackTrigger(SpecModel):
    """Rolls back as soon as any symbol's value of `query` satisfies `op value` (the breach).

    `kind: sequential` instead rolls back when an anytime-valid confidence sequence of the per-trade
    mean lies wholly below `value` (or below the baseline by more than the margin): its false alarm
    probability over the whole stage is `alpha`, however often it is evaluated. A threshold trigger
    checked every cycle is a fixed-sample rule checked thousands of times, and rolls back a no-harm
    candidate in most week-long canaries (`benchmarks/decision_quality.py`).

    With `minSamples`, a symbol is judged only once `countQuery` reaches it: a handful of
    early trades is noise, not a breach (until then the trigger reads Inconclusive). With
    `initialDelay` (Argo Rollouts' name), no symbol is judged before the stage has run that
    long: outcomes that swing with the market need a span of time, not only a count.
    """

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("self.minSamples == 0 || has(self.countQuery)", "minSamples needs countQuery", ".countQuery"),
        cel("self.kind == 'sequential' ? has(self.sequential) : has(self.query) && has(self.op) && "
            "has(self.value) && has(self.window)", "a threshold trigger needs query, op, value and window; "
            "a sequential one needs sequential", ".sequential"),
        cel("self.kind == 'sequential' || !has(self.sequential)", "sequential is set only when kind is sequential",
            ".sequential"),
    ]})

    name: Name
    kind: TriggerKind = "threshold"
    query: PromQL | None = None
    op: Comparator | None = None
    value: float | None = None
    window: PositiveDuration | None = Field(default=None, description="Cut to the time the stage has run.")
    count_query: PromQL | None = None
    min_samples: int = Field(default=0, ge=0)
    initial_delay: Duration | None = Field(default=None, description="Not judged before the stage has run this long.")
    sequential: SequentialTest | None = None
    dry_run: bool = Field(default=False, description="Measured and shown, never rolls back (Argo Rollouts' dryRun).")

    @model_validator(mode="after")
    def _samples(self) -> RollbackTrigger:
        if self.min_samples > 0 and self.count_query is None:
            raise ValueError("countQuery: minSamples needs countQuery")
        if self.kind == "sequential" and self.sequential is None:
            raise ValueError("sequential: a sequential trigger needs sequential")
        if self.kind == "threshold" and None in (self.query, self.op, self.value, self.window):
            raise ValueError("sequential: a threshold trigger needs query, op, value and window")
        if self.kind != "sequential" and self.sequential is not None:
            raise ValueError("sequential: sequential is set only when kind is sequential")
        return self


class Limits(SpecModel):
    """Like Argo Rollouts' analysis limits; only failures beyond `failureLimit` roll back."""

    failure_limit: int = Field(default=0, ge=0, le=100)
    inconclusive_limit: int = Field(default=3, ge=0, le=1000)
    consecutive_error_limit: int = Field(default=4, ge=0, le=1000)


class Approval(SpecModel):
    required: bool = False


class Stage(SpecModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("self.type != 'full' || self.approval.required", "the full stage cannot disable approval",
            ".approval.required"),
        cel("self.type != 'canary' || (has(self.symbols) && size(self.symbols) > 0)",
            "a canary stage needs symbols", ".symbols"),
        cel("self.type == 'canary' || !has(self.symbols)", "only a canary stage names symbols", ".symbols"),
        cel("self.type == 'shadow' || self.gates.all(g, g.kind != 'sweep')",
            "sweep gates belong to the shadow stage", ".gates"),
        cel("self.gates.filter(g, has(g.sweep) && has(g.sweep.job)).size() <= 1",
            "at most one sweep gate of a stage runs a job", ".gates"),
        cel("self.type == 'full' || !has(self.watchDuration)", "only the full stage has a watchDuration",
            ".watchDuration"),
        cel("self.gates.all(g, self.gates.exists_one(h, h.name == g.name))", "gate names must be unique in a stage",
            ".gates"),
        cel("self.rollbackTriggers.all(t, self.rollbackTriggers.exists_one(u, u.name == t.name))",
            "rollback trigger names must be unique in a stage", ".rollbackTriggers"),
    ]})

    name: Name
    type: StageType
    symbols: list[Symbol] | None = Field(default=None, max_length=50,
                                         json_schema_extra={"x-kubernetes-list-type": "set"})
    min_duration: Duration = "0s"
    max_duration: Duration | None = Field(
        default=None, description="Inconclusive gates are not counted before this; at it the stage goes to a human.")
    gates: list[Gate] = Field(default=[], max_length=20)
    rollback_triggers: list[RollbackTrigger] = Field(default=[], max_length=20)
    limits: Limits = Limits()
    approval: Approval = Approval()
    watch_duration: PositiveDuration | None = Field(
        default=None, description="After full promotion, keep rollback triggers running this long.")

    @model_validator(mode="after")
    def _rules(self) -> Stage:
        if self.type == "full" and not self.approval.required:
            raise ValueError("approval.required: the full stage cannot disable approval")
        if self.type == "canary" and not self.symbols:
            raise ValueError("symbols: a canary stage needs symbols")
        if self.type != "canary" and self.symbols is not None:
            raise ValueError("symbols: only a canary stage names symbols")
        if self.type != "shadow" and any(g.kind == "sweep" for g in self.gates):
            raise ValueError("gates: sweep gates belong to the shadow stage")
        if len([g for g in self.gates if g.sweep is not None and g.sweep.job is not None]) > 1:
            raise ValueError("gates: at most one sweep gate of a stage runs a job")
        if self.type != "full" and self.watch_duration is not None:
            raise ValueError("watchDuration: only the full stage has a watchDuration")
        if self.symbols is not None and len(set(self.symbols)) != len(self.symbols):
            raise ValueError("symbols: duplicate symbol")
        if len({g.name for g in self.gates}) != len(self.gates):
            raise ValueError("gates: gate names must be unique in a stage")
        if len({t.name for t in self.rollback_triggers}) != len(self.rollback_triggers):
            raise ValueError("rollbackTriggers: rollback trigger names must be unique in a stage")
        return self


class RollbackSpec(SpecModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("self.order[0] == 'configMap'", "the ConfigMap flag is reverted first (the seconds path)", ".order"),
    ]})

    order: list[RollbackStep] = Field(default=["configMap", "mlflowAlias", "featureArtifact"], min_length=1,
                                      max_length=3, json_schema_extra={"x-kubernetes-list-type": "set"})

    @model_validator(mode="after")
    def _order(self) -> RollbackSpec:
        if self.order[0] != "configMap":
            raise ValueError("rollback.order: the ConfigMap flag is reverted first")
        if len(set(self.order)) != len(self.order):
            raise ValueError("rollback.order: duplicate step")
        return self


class ModelRolloutSpec(SpecModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("self.stages.all(s, self.stages.exists_one(t, t.name == s.name))", "stage names must be unique",
            ".stages"),
        cel("self.stages.all(s, s.type != 'canary' || !has(s.symbols) || (size(s.symbols) < size(self.symbols)"
            " && s.symbols.all(x, x in self.symbols)))",
            "canary symbols must be a non-empty strict subset of spec.symbols", ".stages"),
        cel("self.stages.exists_one(s, s.type == 'full') && self.stages[size(self.stages) - 1].type == 'full'",
            "exactly one full stage, and it comes last", ".stages"),
        cel("self.stages.exists_one(s, s.type == 'shadow') ? self.stages[0].type == 'shadow'"
            " : !self.stages.exists(s, s.type == 'shadow')", "at most one shadow stage, and it comes first",
            ".stages"),
        cel("self.symbols.all(s, self.change.symbolOverrideKey.replace('{key}', self.change.key)"
            ".replace('{symbol}', s) != self.change.key)",
            "change.symbolOverrideKey must not give change.key itself for a symbol", ".change.symbolOverrideKey"),
    ]})

    description: Text = ""
    paused: bool = Field(default=False, description="Stops progression; rollback triggers keep running.")
    accountability: Accountability
    change: FlagChange
    models: ModelsSpec
    symbols: list[Symbol] = Field(min_length=1, max_length=50, json_schema_extra={"x-kubernetes-list-type": "set"})
    prometheus: PrometheusSpec
    analysis: AnalysisSpec = AnalysisSpec()
    stages: list[Stage] = Field(min_length=1, max_length=10)
    rollback: RollbackSpec = RollbackSpec()

    @model_validator(mode="after")
    def _rules(self) -> ModelRolloutSpec:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError("stages: stage names must be unique")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("symbols: duplicate symbol")
        for stage in self.stages:
            if stage.type == "canary" and not (set(stage.symbols or ()) < set(self.symbols)):
                raise ValueError("stages: canary symbols must be a non-empty strict subset of spec.symbols")
        types = [s.type for s in self.stages]
        if types.count("full") != 1 or types[-1] != "full":
            raise ValueError("stages: exactly one full stage, and it comes last")
        if types.count("shadow") > 1 or ("shadow" in types and types[0] != "shadow"):
            raise ValueError("stages: at most one shadow stage, and it comes first")
        if any(self.change.override_key(symbol) == self.change.key for symbol in self.symbols):
            raise ValueError("change.symbolOverrideKey: must not give change.key itself for a symbol")
        return self

    def sweep_job_gate(self) -> Gate | None:
        """The shadow stage's sweep gate that runs its sweep as a Job, if any (at most one: see Stage)."""
        return next((g for s in self.stages if s.type == "shadow" for g in s.gates
                     if g.sweep is not None and g.sweep.job is not None), None)

    def stage_symbols(self, stage: Stage) -> list[str]:
        """The symbols a stage runs on the candidate (shadow: none live, but all evaluated)."""
        return list(stage.symbols) if stage.symbols else list(self.symbols)

    def rollout_revision_fields(self) -> dict[str, Any]:
        """What is rolled out; editing any of it mid-rollout restarts from shadow."""
        return self.model_dump(mode="json", include={"change", "models", "symbols", "stages", "rollback"})


def stage_duration(stage: Stage) -> timedelta:
    """How long a stage runs before its gates are decisive: its minimum, or its watch if longer."""
    needed = parse_duration(stage.min_duration)
    if stage.watch_duration:
        needed = max(needed, parse_duration(stage.watch_duration))
    return needed


def _snake(kind: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()
