"""The CRD on a real kube-apiserver: generated from the models, applied with the real kubectl,
and refusing every manifest of the invalid corpus with a message that names the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml
from pydantic import ValidationError

from devstack.controlplane import ControlPlane
from modelrollout.crd import render
from modelrollout.spec import ModelRolloutSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "focal-loss-rollout.yaml"
FAST_EXAMPLE = REPO_ROOT / "examples" / "focal-loss-rollout-fast.yaml"
CORPUS: list[dict[str, Any]] = yaml.safe_load((Path(__file__).parent / "invalid_manifests.yaml").read_text())


def invalid_manifest(case: dict[str, Any]) -> dict[str, Any]:
    manifest = yaml.safe_load(FAST_EXAMPLE.read_text())
    manifest["metadata"]["name"] = f"invalid-{case['name']}"
    return jsonpatch.apply_patch(manifest, case["patch"])


def test_committed_crd_is_generated_from_the_models() -> None:
    committed = (REPO_ROOT / "crds" / "modelrollout.yaml").read_text()
    assert committed == render(), "crds/modelrollout.yaml is stale: run `make crd`"


@pytest.mark.parametrize("path", [EXAMPLE, FAST_EXAMPLE], ids=lambda p: p.name)
def test_examples_are_valid_for_the_models(path: Path) -> None:
    spec = ModelRolloutSpec.model_validate(yaml.safe_load(path.read_text())["spec"])
    assert [s.type for s in spec.stages] == ["shadow", "canary", "full"]
    assert spec.stages[1].symbols == ["BTCUSDC"]
    assert spec.stages[2].approval.required


def test_corpus_is_large_enough_and_every_case_changes_the_manifest() -> None:
    assert len(CORPUS) >= 20
    valid = yaml.safe_load(FAST_EXAMPLE.read_text())
    for case in CORPUS:
        changed = invalid_manifest(case)
        changed["metadata"]["name"] = valid["metadata"]["name"]
        assert changed != valid, case["name"]


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c["name"])
def test_models_refuse_each_invalid_manifest_naming_the_field(case: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as refused:
        ModelRolloutSpec.model_validate(invalid_manifest(case)["spec"])
    assert case["field"].split(".")[-1] in str(refused.value)


@pytest.mark.e2e
def test_kubectl_apply_and_get_show_the_printer_columns(crd_installed: ControlPlane) -> None:
    applied = crd_installed.kubectl("apply", "-f", str(EXAMPLE))
    assert "modelrollout.mlops.cvntrade.io/focal-loss created" in applied.stdout
    table = crd_installed.kubectl("get", "mro").stdout
    assert table.split("\n")[0].split() == ["NAME", "STAGE", "PHASE", "LIVE", "MESSAGE", "AGE"]
    assert table.split("\n")[1].startswith("focal-loss")
    crd_installed.kubectl("delete", "-f", str(EXAMPLE), "--wait=false")


@pytest.mark.e2e
def test_apiserver_defaults_agree_with_the_models(crd_installed: ControlPlane) -> None:
    """Server-side defaulting and pydantic defaulting give the same spec, so they cannot drift."""
    manifest = yaml.safe_load(FAST_EXAMPLE.read_text())
    minimal = copy.deepcopy(manifest)
    del minimal["spec"]["rollback"], minimal["spec"]["analysis"], minimal["spec"]["models"]["aliases"]
    out = crd_installed.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", input_text=json.dumps(minimal))
    server_spec = json.loads(out.stdout)["spec"]
    model_spec = ModelRolloutSpec.model_validate(minimal["spec"]).model_dump(mode="json", by_alias=True,
                                                                             exclude_none=True)
    assert server_spec == model_spec


@pytest.mark.e2e
@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c["name"])
def test_apiserver_refuses_each_invalid_manifest_naming_the_field(crd_installed: ControlPlane,
                                                                  case: dict[str, Any]) -> None:
    result = crd_installed.kubectl("apply", "--dry-run=server", "-f", "-", check=False,
                                   input_text=json.dumps(invalid_manifest(case)))
    assert result.returncode != 0, f"{case['name']} was accepted"
    assert case["field"] in result.stderr, result.stderr


@pytest.mark.e2e
def test_what_the_schema_cannot_judge_the_models_refuse_naming_the_field(crd_installed: ControlPlane) -> None:
    """The apiserver's URL parser takes a port of any digits; no client can use port 99999. The
    schema lets it through and the models refuse it, so the operator makes the rollout Invalid."""
    manifest = yaml.safe_load(FAST_EXAMPLE.read_text())
    manifest["spec"]["prometheus"]["url"] = "http://prometheus-operated.monitoring.svc:99999"
    crd_installed.kubectl("apply", "--dry-run=server", "-f", "-", input_text=json.dumps(manifest))
    with pytest.raises(ValidationError, match=r"prometheus\.url"):
        ModelRolloutSpec.model_validate(manifest["spec"])
