"""The ModelRollout CRD, generated from the pydantic models so schema and code cannot drift.

`python -m modelrollout.crd > crds/modelrollout.yaml` writes it; a test regenerates it and
compares. Pydantic emits JSON Schema (draft 2020-12); the apiserver wants a *structural*
OpenAPI v3 schema, so refs are inlined, `Optional` becomes `nullable`, and keywords a
structural schema forbids (titles, additionalProperties: false, numeric exclusive bounds)
are rewritten.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from modelrollout.spec import ModelRolloutSpec
from modelrollout.status import ModelRolloutStatus

GROUP = "mlops.cvntrade.io"
VERSION = "v1alpha1"
KIND = "ModelRollout"
PLURAL = "modelrollouts"
SHORT_NAMES = ["mro"]

_DROPPED_KEYS = {"title", "$defs"}


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Rewrite one pydantic JSON-schema node into the apiserver's structural dialect."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return structural(merged, defs)
    any_of = schema.get("anyOf")
    if any_of is not None:
        non_null = [s for s in any_of if s.get("type") != "null"]
        if len(non_null) != 1:
            raise ValueError(f"unions other than Optional[X] are not structural: {schema}")
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        optional = structural({**non_null[0], **rest}, defs)
        if len(non_null) < len(any_of):
            optional["nullable"] = True
        if optional.get("default", 0) is None:
            del optional["default"]
        return optional
    node: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key == "default" and isinstance(value, dict):
            node[key] = _without_nones(value)  # an unset optional field is absent in the apiserver's default too
        elif key == "properties":
            node[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            node[key] = structural(value, defs)
        elif key == "exclusiveMinimum":
            node["minimum"], node["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            node["maximum"], node["exclusiveMaximum"] = value, True
        elif key == "const":
            node["enum"] = [value]
        else:
            node[key] = value
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    if node.get("format") == "date" and node.get("type") == "string":
        node["format"] = "date"
    return node


def openapi_schema(model: type[Any]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return structural(schema, schema.get("$defs", {}))


def printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Stage", "type": "string", "jsonPath": ".status.stage"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Live", "type": "string", "jsonPath": ".status.live", "description": "Symbols on the candidate"},
        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 0},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def custom_resource_definition() -> dict[str, Any]:
    status_schema = openapi_schema(ModelRolloutStatus)
    status_schema.pop("required", None)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL, "singular": KIND.lower(),
                      "shortNames": SHORT_NAMES, "categories": ["mlops"]},
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": printer_columns(),
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "One staged rollout of a model change, with its gates and its way back.",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": openapi_schema(ModelRolloutSpec),
                        "status": status_schema,
                    },
                }},
            }],
        },
    }


class _Dumper(yaml.SafeDumper):
    """Writes a default shared by two fields (one model used twice) out in full, not as a YAML alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render() -> str:
    header = "# Generated by `python -m modelrollout.crd` from operator/modelrollout/spec.py and status.py. Do not edit.\n"
    return header + str(yaml.dump(custom_resource_definition(), Dumper=_Dumper, sort_keys=False, width=120))


def _without_nones(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nones(v) for k, v in value.items() if v is not None}
    return value


if __name__ == "__main__":
    sys.stdout.write(render())
