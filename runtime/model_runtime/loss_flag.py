"""The `CVN_LOSS_FUNCTION` flag: parsing, per-symbol overrides, and where its values come from.

The loss is chosen by configuration alone so that a rollback is a flag flip, never a deploy. Values:
`binary:logistic`, or `focal` with optional parameters, `focal:gamma=<g>,alpha=<a>` (gamma=2, alpha=0.25
by default). `CVN_LOSS_FUNCTION__<SYMBOL>` overrides the global key for one symbol (a canary).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_settings import NoDecode

FLAG = "CVN_LOSS_FUNCTION"
OVERRIDE_PREFIX = f"{FLAG}__"
LOGISTIC = "binary:logistic"


class LossSpec(BaseModel):
    """One loss function; `str()` gives the canonical flag value, which is also logged to MLflow."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["binary:logistic", "focal"]
    gamma: float = Field(default=2.0, ge=0.0, le=10.0)
    alpha: float = Field(default=0.25, gt=0.0, lt=1.0)

    @property
    def is_focal(self) -> bool:
        return self.kind == "focal"

    def __str__(self) -> str:
        if not self.is_focal:
            return LOGISTIC
        return f"focal:gamma={self.gamma:g},alpha={self.alpha:g}"

    @classmethod
    def parse(cls, value: str) -> LossSpec:
        """Parse a flag value; raises ValueError naming the bad part and the accepted forms."""
        text = value.strip()
        if text == LOGISTIC:
            return cls(kind=LOGISTIC)
        head, _, params = text.partition(":")
        if head != "focal":
            raise ValueError(f"{FLAG}={value!r}: expected {LOGISTIC!r} or 'focal:gamma=<g>,alpha=<a>'")
        fields: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in params.split(","))):
            key, sep, number = item.partition("=")
            if not sep or key.strip() not in ("gamma", "alpha"):
                raise ValueError(f"{FLAG}={value!r}: unknown parameter {item!r} (only gamma=, alpha=)")
            try:
                fields[key.strip()] = float(number)
            except ValueError:
                raise ValueError(f"{FLAG}={value!r}: {key.strip()} must be a number, got {number!r}") from None
        try:
            return cls(kind="focal", **fields)
        except ValidationError as error:
            problems = "; ".join(f"{e['loc'][0]} {e['msg']}" for e in error.errors())
            raise ValueError(f"{FLAG}={value!r}: {problems}") from None


Role = Literal["champion", "candidate"]


def served_role(flag: LossSpec, champion: LossSpec | None, candidate: LossSpec | None) -> Role:
    """Which model a symbol serves: the candidate only where its flag selects the candidate's loss and not
    the champion's; the champion everywhere else.

    So a rollout switches a symbol by the flag alone and a revert of the flag alone switches it back,
    whatever the registry can be reached for. Once a change is accepted (the champion now has the
    flag's loss), a retrain that moves `candidate` is not served until a rollout's flag selects it.
    """
    return "candidate" if candidate is not None and flag == candidate and flag != champion else "champion"


def _coerce(value: Any) -> Any:
    return LossSpec.parse(value) if isinstance(value, str) else value


LossValue = Annotated[LossSpec, BeforeValidator(_coerce)]


class LossFlags(BaseModel):
    """The global flag plus per-symbol overrides, as read at one moment."""

    model_config = ConfigDict(frozen=True)

    default: LossValue = LossSpec(kind=LOGISTIC)
    overrides: dict[str, LossValue] = Field(default_factory=dict)

    def for_symbol(self, symbol: str) -> LossSpec:
        return self.overrides.get(symbol.upper(), self.default)

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> LossFlags:
        """Build from env-style keys; a bad value raises ValueError naming the key."""
        fields: dict[str, Any] = {"overrides": {}}
        for key, raw in values.items():
            if key == FLAG:
                fields["default"] = _parse_key(key, raw)
            elif key.startswith(OVERRIDE_PREFIX) and len(key) > len(OVERRIDE_PREFIX):
                fields["overrides"][key[len(OVERRIDE_PREFIX):].upper()] = _parse_key(key, raw)
        return cls(**fields)


def _parse_key(key: str, raw: str) -> LossSpec:
    try:
        return LossSpec.parse(raw)
    except ValueError as error:
        raise ValueError(f"{key}: {error}") from None


def _split_symbols(value: Any) -> Any:
    if isinstance(value, str):
        return [s.strip().upper() for s in value.split(",") if s.strip()]
    return [s.upper() for s in value] if isinstance(value, list) else value


# Settings fields shared by the commands: `--symbols`/MODEL_RUNTIME_SYMBOLS as "BTCUSDC,ETHUSDC", and the
# tracking URI also from MLflow's own MLFLOW_TRACKING_URI.
Symbols = Annotated[list[str], NoDecode, BeforeValidator(_split_symbols), Field(min_length=1)]
TrackingUri = Annotated[str, Field(validation_alias=AliasChoices(
    "tracking_uri", "MODEL_RUNTIME_TRACKING_URI", "MLFLOW_TRACKING_URI"))]


def read_config_dir(directory: Path) -> dict[str, str]:
    """The flag keys of a mounted ConfigMap: one file per key, hidden `..data` entries skipped.

    Kubernetes updates a ConfigMap volume by swapping the `..data` symlink, so reading every key
    afresh on each call always sees one consistent version.
    """
    values: dict[str, str] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith(FLAG) and path.is_file():
            values[path.name] = path.read_text().strip()
    return values


def flag_keys(values: Mapping[str, str]) -> dict[str, str]:
    """Only the `CVN_LOSS_FUNCTION[__<SYMBOL>]` keys of an environment or a ConfigMap's data."""
    return {k: v for k, v in values.items() if k == FLAG or k.startswith(OVERRIDE_PREFIX)}


def current_flag_values(config_dir: Path | None, environ: Mapping[str, str] | None = None,
                        config_map: Mapping[str, str] | None = None) -> dict[str, str]:
    """Flag keys from the environment, overlaid by the live source: the mounted ConfigMap (`config_dir`)
    or the ConfigMap's data as watched through the API (`config_map`)."""
    values = flag_keys(os.environ if environ is None else environ)
    if config_dir is not None:
        values.update(read_config_dir(config_dir))
    if config_map is not None:
        values.update({k: v.strip() for k, v in flag_keys(config_map).items()})
    return values
