"""The operator, as a real process, against the real apiserver with the policy: only verified, named
people's decisions count; a request the policy did not check (its binding removed) is refused and
recorded, never approved; `kubectl modelrollout status` shows who approved and every decision."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from authority_helpers import ALICE, CAROL, DAVE, ONCALL, POLICY, REFUSED_BY_POLICY, grant_rollout_editing, plugin
from authority_helpers import request_annotation as annotation

from devstack.controlplane import ControlPlane
from devstack.mlflow import MlflowServer
from devstack.operator import start_operator
from devstack.process import Server
from devstack.prometheus import PrometheusServer
from devstack.scenario import Scenario, open_scenario

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

POLICY_FILE = Path(__file__).resolve().parents[2] / "crds" / "modelrollout-requests.yaml"


@pytest.fixture
def scenario(crd_installed: ControlPlane, prometheus_server: PrometheusServer, mlflow_server: MlflowServer,
             sweep: str, tmp_path: Path) -> Iterator[Scenario]:
    with open_scenario(crd_installed, prometheus_server, mlflow_server, tmp_path, sweep_experiment=sweep) as scenario:
        grant_rollout_editing(crd_installed, scenario.namespace, [ALICE, CAROL, DAVE])
        yield scenario


@pytest.fixture
def operator(scenario: Scenario) -> Iterator[Server]:
    server = start_operator(scenario.workdir, scenario.plane.kubeconfig, [scenario.namespace])
    yield server
    server.stop()


def decisions(status: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [(h["decision"]["request"].split("/")[0], h["decision"]["by"], ",".join(h["decision"].get("groups", [])),
             h["decision"]["outcome"]) for h in status.get("history", []) if h.get("decision")]


def without_binding_until(plane: ControlPlane, write: Any, done: Any) -> Any:
    """Remove the policy's binding, make `write(request_id)` (retried until the apiserver stops enforcing), wait
    for `done`, and put the binding back whatever happens, until the apiserver enforces it again: a dry run of
    `write` with a new id is refused. (The apiserver loads bindings asynchronously; a request checked before it
    has would rightly be refused by the operator as unverifiable.)"""
    plane.kubectl("delete", "validatingadmissionpolicybinding", POLICY)
    try:
        deadline = time.monotonic() + 30
        while (result := write("forged")).returncode != 0:
            assert REFUSED_BY_POLICY in result.stderr and time.monotonic() < deadline, result.stderr
            time.sleep(0.5)
        return done()
    finally:
        plane.kubectl("apply", "--server-side", "-f", str(POLICY_FILE))
        deadline = time.monotonic() + 30
        while REFUSED_BY_POLICY not in write("probe", "--dry-run=server").stderr and time.monotonic() < deadline:
            time.sleep(0.25)


def test_only_verified_named_decisions_count(scenario: Scenario, operator: Server) -> None:
    namespace, plane = scenario.namespace, scenario.plane
    scenario.apply(scenario.manifest(mutate=lambda spec: spec["stages"][2].update(watchDuration="10m")))
    status = scenario.wait_phase("AwaitingApproval", stage="full", timeout=120)
    revision = status["revision"]

    refused = plugin(plane, namespace, CAROL, (), "promote", "focal-loss", "--ticket", "CHG-C")
    assert refused.returncode == 1 and f"{CAROL} may not promote" in refused.stderr, refused.stderr

    # A forged promote the policy never saw: the operator's probe finds requests unverifiable and refuses it.
    status = without_binding_until(
        plane, lambda request_id, *dry_run: plane.kubectl(
            f"--as={CAROL}", "-n", namespace, "annotate", "--overwrite", *dry_run, "mro", "focal-loss",
            annotation("promote", by=ALICE, revision=revision, request_id=request_id), check=False),
        lambda: scenario.wait_for(lambda s: "promote/forged" in s.get("handledRequests", []), "forged handled"))
    assert status["phase"] == "AwaitingApproval" and not status.get("approval")
    entry = status["history"][-1]
    assert entry["decision"] == {"request": "promote/forged", "by": ALICE, "groups": [], "ticket": "",
                                 "requestedAt": entry["decision"]["requestedAt"], "outcome": "Refused"}
    assert entry["message"].startswith(f"promote by {ALICE}: refused, the requester cannot be verified: the apiserver "
                                       "accepted a request in someone else's name")

    approved = plugin(plane, namespace, ALICE, (), "promote", "focal-loss", "--ticket", "CHG-A")
    assert approved.returncode == 0, approved.stderr
    status = scenario.wait_phase("Watching", stage="full", timeout=60)
    assert (status["approval"]["by"], status["approval"]["ticket"], status["approval"]["groups"]) == (ALICE, "CHG-A", [])

    aborted = plugin(plane, namespace, DAVE, (ONCALL,), "abort", "focal-loss", "--ticket", "INC-D")
    assert aborted.returncode == 0, aborted.stderr
    status = scenario.wait_phase("RolledBack", timeout=60)
    assert status["rollback"]["reason"] == f"aborted by {DAVE} as {ONCALL} (INC-D)"

    # Nothing refused ever shows up as an approval.
    assert status["approval"]["by"] == ALICE and status["approval"]["request"].startswith("promote/")
    assert [d for d in decisions(status) if d[3] == "Accepted"] == [("promote", ALICE, "", "Accepted"),
                                                                   ("abort", DAVE, ONCALL, "Accepted")]
    assert ("promote", ALICE, "", "Refused") in decisions(status)  # the forged one, under the name it forged
    assert not any(d[1] == CAROL for d in decisions(status))  # refused at admission: never written

    events = [(e["reason"], e["message"]) for e in scenario.events()]
    assert ("Approved", f"stage full approved by {ALICE} (CHG-A)") in events
    assert any(r == "RequestRefused" and "promote by alice" in m and "cannot be verified" in m for r, m in events)

    shown = scenario.kubectl("modelrollout", "status", "focal-loss").stdout
    assert f"Approved:  full by {ALICE} at " in shown and "(CHG-A)    verified by the apiserver" in shown
    rows = shown.split("Decisions:", 1)[1].split("History:", 1)[0]
    assert "Refused" in rows and f"{DAVE} as {ONCALL}" in rows and "INC-D" in rows
    print(shown)  # the report quotes it
    print(json.dumps(decisions(status)))
