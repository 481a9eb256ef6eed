"""The CVN_LOSS_FUNCTION flag: parsing, per-symbol overrides, and ConfigMap-volume reading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from model_runtime.loss_flag import LossFlags, LossSpec, current_flag_values, read_config_dir, served_role


@pytest.mark.parametrize(("text", "kind", "gamma", "alpha"), [
    ("binary:logistic", "binary:logistic", 2.0, 0.25),
    ("focal", "focal", 2.0, 0.25),
    ("focal:gamma=1.5", "focal", 1.5, 0.25),
    (" focal:gamma=0,alpha=0.5 ", "focal", 0.0, 0.5),
    ("focal:alpha=0.3, gamma=3", "focal", 3.0, 0.3),
])
def test_valid_values_parse(text, kind, gamma, alpha):
    spec = LossSpec.parse(text)
    assert (spec.kind, spec.gamma, spec.alpha) == (kind, gamma, alpha)
    assert LossSpec.parse(str(spec)) == spec  # the canonical form round-trips


@pytest.mark.parametrize(("text", "message"), [
    ("binary:hinge", "expected 'binary:logistic' or 'focal"),
    ("focal:gamma=two", "gamma must be a number"),
    ("focal:beta=1", "unknown parameter 'beta=1'"),
    ("focal:alpha=1.5", "alpha Input should be less than 1"),
    ("focal:gamma=-1", "gamma Input should be greater than or equal to 0"),
])
def test_bad_values_are_clear_errors(text, message):
    with pytest.raises(ValueError, match=message):
        LossSpec.parse(text)


def test_symbol_override_wins_over_the_global_flag():
    flags = LossFlags.from_mapping({"CVN_LOSS_FUNCTION": "binary:logistic",
                                    "CVN_LOSS_FUNCTION__BTCUSDC": "focal:gamma=2,alpha=0.25"})
    assert flags.for_symbol("BTCUSDC").is_focal
    assert flags.for_symbol("btcusdc").is_focal
    assert not flags.for_symbol("ETHUSDC").is_focal


def test_bad_value_names_the_key():
    with pytest.raises(ValueError, match="CVN_LOSS_FUNCTION__ETHUSDC"):
        LossFlags.from_mapping({"CVN_LOSS_FUNCTION__ETHUSDC": "focal:gamma=x"})


def test_candidate_is_served_only_where_the_flag_selects_its_loss_and_not_the_champions():
    focal, logistic = LossSpec.parse("focal"), LossSpec.parse("binary:logistic")
    assert served_role(focal, logistic, focal) == "candidate"  # a canary or the full stage
    assert served_role(logistic, logistic, focal) == "champion"  # before, and after a flag revert
    assert served_role(LossSpec.parse("focal:gamma=1"), logistic, focal) == "champion"  # not the candidate's loss
    assert served_role(focal, None, focal) == "candidate"  # the champion not loaded (yet)
    # Accepted: the champion has the flag's loss, so a retrain that sets `candidate` is not served by itself.
    assert served_role(focal, focal, focal) == "champion"
    assert served_role(focal, focal, None) == "champion"


def _configmap_volume(root: Path, version: str, values: dict[str, str]) -> None:
    """Lay out a directory the way the kubelet does: KEY -> ..data/KEY, ..data -> ..<version>."""
    target = root / f"..{version}"
    target.mkdir()
    for key, value in values.items():
        (target / key).write_text(value)
    tmp = root / "..data_tmp"
    tmp.symlink_to(target.name)
    os.replace(tmp, root / "..data")  # atomic swap, as the kubelet does
    for key in values:
        if not (root / key).is_symlink():
            (root / key).symlink_to(f"..data/{key}")


def test_configmap_directory_follows_the_data_symlink_swap(tmp_path):
    _configmap_volume(tmp_path, "v1", {"CVN_LOSS_FUNCTION": "binary:logistic", "OTHER_KEY": "x"})
    assert read_config_dir(tmp_path) == {"CVN_LOSS_FUNCTION": "binary:logistic"}
    _configmap_volume(tmp_path, "v2", {"CVN_LOSS_FUNCTION": "focal:gamma=2,alpha=0.25"})
    assert read_config_dir(tmp_path) == {"CVN_LOSS_FUNCTION": "focal:gamma=2,alpha=0.25"}


def test_configmap_overlays_the_environment(tmp_path):
    (tmp_path / "CVN_LOSS_FUNCTION").write_text("focal\n")
    environ = {"CVN_LOSS_FUNCTION": "binary:logistic", "CVN_LOSS_FUNCTION__SOLUSDC": "focal", "HOME": "/root"}
    assert current_flag_values(tmp_path, environ) == {"CVN_LOSS_FUNCTION": "focal",
                                                      "CVN_LOSS_FUNCTION__SOLUSDC": "focal"}
    assert current_flag_values(None, environ) == {"CVN_LOSS_FUNCTION": "binary:logistic",
                                                  "CVN_LOSS_FUNCTION__SOLUSDC": "focal"}
