"""The product on a real node: the chart's operator pods and the user's model server pods.

`helm install` puts the operator on the node as the two pods of its Deployment (one acts, the other
stands by), from the image its Dockerfile builds. The model servers run from the model-runtime image:
`watching` learns its flag from the API, `mounted` from a ConfigMap volume that the kubelet updates
at its next pod sync (docs/semantics.md, "The revert on a node"). Models are trained into an MLflow
of the test's own; the market's outcome series come from a SeriesFeed. A breach in the canary must
make the watching pod answer with the baseline's model version, read from the pod itself; and so must
losing trades written to a PostgreSQL journal, when the candidate's outcome comes from the chart's
journal exporter pod alone. The shadow stage's sweep runs as an Indexed Job of shard pods.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from devstack.nodestack import CHART, FlagSource, NodeStack, ServingOnNode, helm, pod_ip, serving_on_node, start_node_stack
from devstack.postgres import start_postgres
from devstack.prometheus import PrometheusServer
from devstack.registry import log_sweep
from devstack.scenario import BASELINE, FLAG_KEY, healthy_series, wait_until
from model_runtime.outcomes.journal import ClosedTrade, create_journal, record_trades

# The first test's timeout includes building the images on a fresh machine (cached afterwards).
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.node, pytest.mark.timeout(2400)]
SERVED = ["BTCUSDC", "ETHUSDC"]
BASELINE_VERSION, CANDIDATE_VERSION = "1", "2"
SYSTEM_NAMESPACE = "modelrollout-system"
OPERATOR_SELECTOR = "app.kubernetes.io/name=modelrollout,app.kubernetes.io/component=operator"
SERVERS: dict[str, FlagSource] = {"watching": "api", "mounted": "volume"}


@pytest.fixture(scope="module")
def node_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeStack]:
    stack = start_node_stack(tmp_path_factory.mktemp("node"))
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def on_node(node_stack: NodeStack, prometheus_server: PrometheusServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingOnNode]:
    with serving_on_node(node_stack, prometheus_server, tmp_path_factory.mktemp("serving"), symbols=SERVED,
                         servers=SERVERS, system_namespace=SYSTEM_NAMESPACE) as serving:
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
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0, "its liveness probe must pass"
    names = [pod["metadata"]["name"] for pod in pods]
    model_stack = on_node.stack.plane.kubectl("-n", SYSTEM_NAMESPACE, "exec", names[0], "--", "python", "-c", (
        "import importlib.util as u; print(' '.join(m for m in ('xgboost', 'sympy', 'sklearn', 'numba') if u.find_spec(m)))"))
    assert model_stack.stdout.strip() == "", f"the operator image carries the model stack: {model_stack.stdout}"

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


@dataclass
class JournalOnNode:
    engine: sa.Engine
    exporter: str  # the exporter pod's host:port

    def exported(self, name: str, symbol: str, variant: str = "candidate") -> float | None:
        with urllib.request.urlopen(f"http://{self.exporter}/metrics", timeout=10) as response:
            text = response.read().decode()
        return next((s.value for family in text_string_to_metric_families(text) for s in family.samples
                     if s.name == name and s.labels == {"symbol": symbol, "variant": variant}), None)


@pytest.fixture(scope="module")
def journal(on_node: ServingOnNode) -> Iterator[JournalOnNode]:
    """A PostgreSQL trade journal of the stack's (reached through the node's relay) and the chart's journal
    exporter pod reading it: its image, its URL from a Secret, read-only root filesystem, no API token."""
    stack, namespace = on_node.stack, SYSTEM_NAMESPACE
    postgres = start_postgres()
    try:
        engine = sa.create_engine(postgres.url)
        create_journal(engine)
        url = stack.node.in_cluster(postgres.url)
        stack.plane.kubectl("-n", namespace, "create", "secret", "generic", "journal-db", f"--from-literal=url={url}")
        repository, tag = stack.images["model-runtime"].ref.rsplit(":", 1)
        helm(stack, "upgrade", "modelrollout", str(CHART), f"--namespace={namespace}", "--reuse-values", "--wait",
             "--timeout=5m", values={"journalExporter": {
                 "enabled": True, "dbUrlSecret": {"name": "journal-db", "key": "url"}, "refreshInterval": "2s",
                 "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"}}})
        yield JournalOnNode(engine, f"{pod_ip(stack, namespace, 'app.kubernetes.io/component=journal-exporter')}:9103")
        engine.dispose()
    finally:
        postgres.stop()


def test_the_charts_journal_exporter_pod_exports_the_trades_of_a_postgresql_journal(journal: JournalOnNode) -> None:
    now = datetime.now(UTC)
    trades = [ClosedTrade(symbol="ETHUSDC", variant="candidate", opened_at=now - timedelta(minutes=30 + i),
                          closed_at=now - timedelta(minutes=i), side="long", pnl_net=0.01 * (i % 3 - 1))
              for i in range(7)]
    assert record_trades(journal.engine, trades) == 7
    wait_until(lambda: journal.exported("n_trades", "ETHUSDC") == 7.0,
               "the exporter pod exporting the journal's 7 trades", timeout=60)


def test_losing_trades_in_the_journal_roll_the_canary_back_through_the_exporter_pod(
        on_node: ServingOnNode, journal: JournalOnNode) -> None:
    """The canary's outcome as the user's trading writes it: trades in PostgreSQL, counted by the chart's
    exporter pod, scraped by Prometheus, judged by the chart's operator pod, which reverts the flag that the
    model server pod follows. Nothing in the path is the test's own series."""
    scenario, name = on_node.scenario, "journal-canary"
    now = datetime.now(UTC)
    wins = [ClosedTrade(symbol="BTCUSDC", variant="candidate", opened_at=now - timedelta(minutes=90 - i),
                        closed_at=now - timedelta(minutes=60 - i), side="long", pnl_net=0.02) for i in range(10)]
    record_trades(journal.engine, wins)
    outcome = ("expectancy_net_realized", "expectancy_net_stddev", "n_trades")
    for series in outcome:  # the candidate's BTCUSDC outcome comes from the exporter pod alone
        scenario.feed.remove(series, symbol="BTCUSDC", variant="candidate")
    prometheus = scenario.stack.prometheus
    prometheus.reload([scenario.feed.target, journal.exporter], scrape_interval="1s")
    try:
        expectancy = 'expectancy_net_realized{symbol="BTCUSDC",variant="candidate"}'
        scenario.feed.wait_for(f"count({expectancy})", lambda r: r.values.get("*") == 1.0, timeout=30)
        scenario.feed.wait_for(expectancy, lambda r: r.values.get("BTCUSDC") == pytest.approx(0.02), timeout=30)
        time.sleep(11)  # the trigger's 10 s window holds only the exporter's samples from here on

        def canary_on_btc(spec: dict[str, Any]) -> None:
            spec["symbols"] = SERVED
            spec["stages"] = spec["stages"][1:]
            spec["stages"][0]["minDuration"] = "600s"
            spec["models"]["trackingUri"] = on_node.in_cluster["mlflow"]
            spec["prometheus"]["url"] = on_node.in_cluster["prometheus"]

        scenario.apply(scenario.manifest(name, mutate=canary_on_btc))
        scenario.wait_for(lambda s: s.get("stage") == "canary" and any(
            a["state"] == "Done" for a in s.get("actions", [])), "the canary switched", timeout=120, name=name)
        wait_until(lambda: on_node.answer("watching", "BTCUSDC")["version"] == CANDIDATE_VERSION,
                   "the watching pod serving the candidate on BTCUSDC", timeout=30)
        assert scenario.status(name)["phase"] == "Progressing"  # healthy trades: no breach

        losses = [ClosedTrade(symbol="BTCUSDC", variant="candidate", opened_at=now - timedelta(minutes=20),
                              closed_at=datetime.now(UTC) - timedelta(seconds=i), side="long", pnl_net=-0.05)
                  for i in range(30)]
        written = time.monotonic()
        record_trades(journal.engine, losses)
        wait_until(lambda: scenario.configmap().get(f"{FLAG_KEY}__BTCUSDC", BASELINE) == BASELINE,
                   "the ConfigMap revert", timeout=90)
        reverted = time.monotonic()
        wait_until(lambda: on_node.answer("watching", "BTCUSDC")["version"] == BASELINE_VERSION,
                   "the watching pod answering with the baseline", timeout=30)
        print(f"losing trades written -> ConfigMap reverted {reverted - written:.1f}s -> watching pod serves the "
              f"baseline {time.monotonic() - reverted:.1f}s later")
        assert journal.exported("n_trades", "BTCUSDC") == 40.0
        status = scenario.wait_phase("RolledBack", timeout=120, name=name)
        assert "expectancy-negative" in status["rollback"]["reason"], status["rollback"]
        [breach] = [t for t in status["triggers"] if t["verdict"] == "Fail"]
        assert breach["value"] < 0 and breach["symbol"] == "BTCUSDC", breach
    finally:
        healthy_series(scenario.feed, SERVED)
        scenario.feed.scrape()


def test_the_shadow_stage_runs_its_sweep_as_an_indexed_job_whose_shard_pods_the_gate_judges(
        on_node: ServingOnNode) -> None:
    """The sweep as a user who outgrew one machine runs it: the operator creates an Indexed Job of the
    model-runtime image when the shadow stage begins, its shards run as pods (each every 3rd (symbol, fold)
    cell), the status shows their progress, and the gate judges that Job's runs alone: a sweep logged
    earlier into the same experiment does not mix in."""
    stack, scenario, name = on_node.stack, on_node.scenario, "sweep-on-node"
    experiment, shards, folds = "sweep-as-a-job", 3, 4
    helm(stack, "upgrade", "modelrollout", str(CHART), f"--namespace={SYSTEM_NAMESPACE}", "--reuse-values", "--wait",
         "--timeout=5m", values={"rbac": {"sweepJobs": True}})
    log_sweep(on_node.mlflow.url, experiment, SERVED, folds=folds)  # an earlier sweep, not this Job's

    def sweep_as_a_job(spec: dict[str, Any]) -> None:
        spec["symbols"] = SERVED
        spec["models"]["trackingUri"] = on_node.in_cluster["mlflow"]
        spec["prometheus"]["url"] = on_node.in_cluster["prometheus"]
        # A bar no real lift clears, so the judgment stays on show: the gate fails on complete evidence
        spec["stages"][0]["gates"][0]["sweep"].update(experiment=experiment, minRows=2 * folds * len(SERVED),
                                                      minCohensD=1000, job={
            "image": stack.images["model-runtime"].ref, "imagePullPolicy": "Never", "shards": shards,
            "parallelism": shards, "folds": folds, "args": ["--rows", "3000", "--rounds", "10"]})

    scenario.apply(scenario.manifest(name, mutate=sweep_as_a_job))
    progress: set[str] = set()

    def sweep_done(status: dict[str, Any]) -> bool:
        if "sweep Job" in status.get("message", ""):
            progress.add(status["message"])
        return status.get("phase") in ("NotPromoted", "Degraded", "Paused") or status.get("stage") not in (None, "shadow")

    status = scenario.wait_for(sweep_done, "the sweep Job done and judged", timeout=900, name=name)
    job_status = status["sweepJob"]
    assert (job_status["state"], job_status["succeeded"], job_status["shards"]) == ("Complete", shards, shards), status
    assert status["phase"] == "NotPromoted", status["message"]  # judged, on complete evidence
    assert any(f"/{shards} shard(s) done" in message for message in progress), progress

    job = json.loads(scenario.kubectl("get", "job", job_status["name"], "-o", "json").stdout)
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == (
        "Indexed", shards, shards)
    assert [o["uid"] for o in job["metadata"]["ownerReferences"]] == [scenario.get(name)["metadata"]["uid"]]
    pods = json.loads(scenario.kubectl("get", "pods", "-l", f"batch.kubernetes.io/job-name={job_status['name']}",
                                       "-o", "json").stdout)["items"]
    succeeded = [p for p in pods if p["status"]["phase"] == "Succeeded"]
    assert sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in succeeded) == [
        str(i) for i in range(shards)]
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {stack.images["model-runtime"].ref}

    client = MlflowClient(on_node.mlflow.url, on_node.mlflow.url)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    runs = client.search_runs([found.experiment_id], f"tags.sweep_id = '{job_status['name']}'", max_results=1000)
    assert len(runs) == 2 * folds * len(SERVED)
    assert {r.data.tags["shard"] for r in runs} == {f"{i}/{shards}" for i in range(shards)}
    [rows] = [g for g in status["gates"] if g["kind"] == "sweep/rows"]
    assert (rows["verdict"], rows["value"]) == ("Pass", len(runs)), rows  # this Job's runs, not the earlier sweep's
    assert {g["verdict"] for g in status["gates"] if g["kind"] == "sweep/cohensD"} == {"Fail"}
    events = [e["reason"] for e in scenario.events(name)]
    assert "SweepJobComplete" in events and "ActionDone" in events, events
