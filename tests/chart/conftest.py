"""Chart fixtures: the pinned helm, built (or reused from the cache) by hack/build-controlplane.sh."""

from __future__ import annotations

import pytest
from chart_helpers import Helm

from devstack.controlplane import toolchain_bin


@pytest.fixture(scope="session")
def helm() -> Helm:
    """The project's pinned helm; building it is part of `make deps`, so a missing one fails, never skips."""
    binary = toolchain_bin() / "helm"
    assert binary.is_file(), f"hack/build-controlplane.sh did not produce {binary}"
    return Helm(binary)
