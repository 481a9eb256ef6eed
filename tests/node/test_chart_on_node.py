"""The product on a real node: the chart's operator pods and the user's model server pods.

`helm install` puts the operator on the node as the two pods of its Deployment (one acts, the other
stands by), from the image its Dockerfile builds. The model servers run from the model-runtime image:
`watching` learns its flag from the API, `mounted` from a ConfigMap volume that the kubelet updates
at its next pod sync (docs/semantics.md, "The revert on a node"). Models are trained into an MLflow
of the test's own; the market's outcome series come from a SeriesFeed. A breach in the canary must
make the watching pod answer with the baseline's model version, read from the pod itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.nodestack import NodeStack, ServingOnNode, serving_on_node, start_node_stack
from devstack.prometheus import PrometheusServer
from devstack.scenario import BASELINE, FLAG_KEY, wait_until

# The first test's timeout includes building the images on a fresh machine (cached afterwards).
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.node, pytest.mark.timeout(2400)]
SERVED = ["BTCUSDC", "ETHUSDC"]
BASELINE_VERSION, CANDIDATE_VERSION = "1", "2"
SYSTEM_NAMESPACE = "modelrollout-system"
OPERATOR_SELECTOR = "app.kubernetes.io/name=modelrollout,app.kubernetes.io/component=operator"
SERVERS = {"watching": "api", "mounted": "volume"}


@pytest.fixture(scope="module")
def node_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeStack]:
    stack = start_node_stack(tmp_path_factory.mktemp("node"))
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def on_node(node_stack: NodeStack, prometheus_server: PrometheusServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingOnNode]:
    with serving_on_node(node_stack, prometheus_server, tmp_path_factory.mktemp("serving"), symbols=SERVED,
                         servers=SERVERS, system_namespace=SYSTEM_NAMESPACE) as serving:  # type: ignore[arg-type]
        yield serving


def operator_pods(on_node: ServingOnNode) -> list[dict[str, Any]]:
    out = on_node.stack.plane.kubectl("-n", SYSTEM_NAMESPACE, "get", "pods", "-l", OPERATOR_SELECTOR, "-o", "json").stdout
    return list(json.loads(out)["items"])


def test_the_chart_runs_two_operator_pods_of_which_one_acts(on_node: ServingOnNode) -> None:
    pods = operator_pods(on_node)
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
        assert pod["spec"]["containers"][0]["image"] == on_node.stack.images["operator"].ref
        assert pod["spec"]["serviceAccountName"].startswith("modelrollout")
    names = [pod["metadata"]["name"] for pod in pods]

    def acting() -> list[str]:
        """kopf starts paused; a replica acts once it resumed and has not paused since (peering.py)."""
        logs = {name: on_node.stack.plane.kubectl("-n", SYSTEM_NAMESPACE, "logs", name).stdout for name in names}
        return [name for name, log in logs.items()
                if log.rfind("Resuming operations after the pause") > log.rfind("Pausing operations in favour of")]

    wait_until(lambda: len(acting()) == 1, "exactly one replica acting", timeout=60)


def test_a_canary_breach_makes_the_watching_pod_answer_with_the_baseline_seconds_after_the_configmap_revert(
        on_node: ServingOnNode) -> None:
    scenario = on_node.scenario
    for server in SERVERS:
        assert {s: on_node.answer(server, s)["version"] for s in SERVED} == dict.fromkeys(SERVED, BASELINE_VERSION)

    def canary_on_btc(spec: dict[str, Any]) -> None:
        spec["symbols"] = SERVED
        spec["stages"] = spec["stages"][1:]  # the sweep gate is tested elsewhere; this is about the levers
        spec["stages"][0]["minDuration"] = "600s"
        spec["models"]["trackingUri"] = on_node.in_cluster["mlflow"]
        spec["prometheus"]["url"] = on_node.in_cluster["prometheus"]

    scenario.apply(scenario.manifest(mutate=canary_on_btc))
    scenario.wait_for(lambda s: s.get("stage") == "canary" and any(
        a["state"] == "Done" for a in s.get("actions", [])), "the canary switched", timeout=120)
    wait_until(lambda: on_node.answer("watching", "BTCUSDC")["version"] == CANDIDATE_VERSION,
               "the watching pod serving the candidate on BTCUSDC", timeout=30)
    assert on_node.answer("watching", "ETHUSDC")["version"] == BASELINE_VERSION

    breached = time.monotonic()
    scenario.feed.set("expectancy_net_realized", -0.05, symbol="BTCUSDC", variant="candidate")
    wait_until(lambda: scenario.configmap().get(f"{FLAG_KEY}__BTCUSDC", BASELINE) == BASELINE,
               "the ConfigMap revert", timeout=90)
    reverted = time.monotonic()
    wait_until(lambda: on_node.answer("watching", "BTCUSDC")["version"] == BASELINE_VERSION,
               "the watching pod answering with the baseline", timeout=30)
    served = time.monotonic()
    print(f"breach written -> ConfigMap reverted {reverted - breached:.1f}s -> watching pod serves the baseline "
          f"{served - reverted:.1f}s later")
    answer = on_node.answer("watching", "BTCUSDC")
    assert (answer["version"], answer["variant"]) == (BASELINE_VERSION, "baseline")
    status = scenario.wait_phase("RolledBack", timeout=120)
    assert "expectancy" in status["rollback"]["reason"]
    # The mounted pod learns of it only at the kubelet's next sync of the pod (not asserted: it is
    # the kubelet's timing, measured by benchmarks/node_revert_latency.py), but it does learn.
    wait_until(lambda: on_node.answer("mounted", "BTCUSDC")["version"] == BASELINE_VERSION,
               "the mounted pod answering with the baseline", timeout=240)
