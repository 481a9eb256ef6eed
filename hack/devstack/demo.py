"""`make demo`: three desks roll out the focal-loss flag on one local stack and show the three endings.

- evidence desk: the full plan against the real sweep; focal loss shows no F1 lift on this synthetic
  market, so the shadow gate ends it NotPromoted and nothing live is touched.
- live desk A: the plan without its shadow stage (the owner overrides the shadow verdict to exercise
  the live stages; in production you would not), for a no-harm candidate (focal with gamma=0,
  alpha=0.5: half the logistic loss, for which the trainer builds the logistic booster itself); live
  trading finds it no worse than the baseline, a human approves full and it Completes.
- live desk B: the same no-shadow plan on the same market; mid-canary the simulator's fault turns
  the candidate's expectancy negative and the operator rolls back.

Everything is a real process on loopback: kube-apiserver + etcd (with the CRDs), MLflow, one
Prometheus per desk (loaded with the chart's alert rules), the operator, and per desk two
`model-runtime serve` (live, following the ConfigMap; paper, pinned to the champion), the trade
journal exporter and a trading simulator. Models are trained and swept with the real
`model-runtime` CLIs. There is no kubelet: a sync loop here mirrors each desk's ConfigMap into the
live server's config directory every second, with the kubelet's `..data` symlink swap.

Each desk has its own Prometheus because the outcome series carry only symbol and variant labels,
as in production where each desk's rollout reads its own Prometheus.

Time is compressed: the market's one-minute bars play at 150 a second, so 6 h of market (a batch-means
block) is about 2.4 s of demo. The live desks run the production plan's outcome rules, sequential
and in the counter form: the gate "expectancy not worse than the baseline by more than 5 USDC per
trade" and the trigger "expectancy worse than the baseline", both anytime-valid confidence sequences
over the journal exporter's counters since the stage started (docs/decisions.md). They need no
initialDelay and no minimum window: the baseline's own losing stretches, which the candidate shares,
are not read as the candidate's fault, and looking every 2 s does not raise the false alarm rate.

    python -m devstack.demo [--quick] [--output demo-output]    (DEMO_QUICK=1 also means --quick)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import pandas as pd
import sqlalchemy as sa
from prometheus_api_client import PrometheusConnect
from pydantic import BaseModel, ConfigDict

from devstack.configsync import ConfigMapMirror, configmap_reader, write_volume
from devstack.controlplane import REPO_ROOT, start_control_plane
from devstack.mlflow import start_mlflow
from devstack.operator import start_operator
from devstack.process import Server, free_port, http_ok
from devstack.prometheus import CHART_RULE_FILES, PrometheusServer, start_prometheus
from devstack.scenario import (
    BASELINE,
    CONFIGMAP,
    FLAG_KEY,
    SYMBOLS,
    Scenario,
    Stack,
    canary_flag_done,
    install_crds,
    prepare_namespace,
    rollout_manifest,
    wait_until,
)
from devstack.simulator import DeskConfig, Replay, TradingDesk, market
from devstack.timeline import RolloutRecord, draw, verdicts_by_name
from modelrollout.cli import VERDICT_MARK
from modelrollout.outcome_queries import per_trade_queries, sequential_sums
from modelrollout.prometheus_provider import PrometheusProvider
from modelrollout.status import TERMINAL_PHASES

CANDIDATE = "focal:gamma=2,alpha=0.25"
# Focal loss with gamma=0, alpha=0.5 is half the logistic loss and trains the logistic booster: a change
# that does no harm, so the approval path is shown on a candidate live trading can honestly pass.
NO_HARM_CANDIDATE = "focal:gamma=0,alpha=0.5"
BARS_PER_SECOND = 150.0  # one-minute bars: 48 h of market in about 20 s
STAGE_SECONDS = 30  # canary minDuration and full watchDuration on the live desks
# Gate windows leave out the stage's first seconds, while the ConfigMap reaches the live server.
GATE_WINDOW = f"{STAGE_SECONDS - 5}s"
# The production plan's sequential test in demo units. Measured on this market (BTCUSDC): about 7 trades a
# second per variant, net PnL per trade on a 1000 USDC notional with a spread of about 9 USDC; 6 h of bars
# is 2.4 s, so a 30 s stage holds about 200 trades per variant and 10 blocks of 3 s.
SEQUENTIAL = {"against": "baseline", "alpha": 0.05, "plannedTrades": 200, "block": "3s", "minTrades": 20}
NO_HARM_MARGIN = 5.0  # USDC per trade: about half the per-trade spread


BIN = Path(sys.executable).parent
FAULT_SYMBOL = "BTCUSDC"


class Sizes(BaseModel):
    """How much training the demo does; --quick trades statistical margin for time."""

    model_config = ConfigDict(frozen=True)

    rows: int  # synthetic bars per symbol
    rounds: int
    folds: int = 13  # 5 symbols x 13 folds x 2 variants = 130 runs, the example's minRows is 125
    rollout_timeout: float
    fault_after: float = 8.0  # seconds of canary trading before the fault


FULL = Sizes(rows=20000, rounds=30, rollout_timeout=420)
QUICK = Sizes(rows=12000, rounds=20, rollout_timeout=300)


@dataclass(frozen=True)
class DeskPlan:
    rollout: str
    namespace: str
    strategy: str
    seed: int
    ending: str  # "evidence": the shadow gate judges the sweep; "promote": a human approves full;
    #              "fault": the simulator breaks the canary
    candidate: str = CANDIDATE

    @property
    def live_only(self) -> bool:
        """The plan without its shadow stage (no sweep needed)."""
        return self.ending != "evidence"


# Desk B trades the same market (seed) with the same models as desk A, under its own registered names.
DESKS = (DeskPlan("focal-loss-evidence", "desk-evidence", "momentum", seed=0, ending="evidence"),
         DeskPlan("focal-loss-approve", "desk-approve", "meanrev", seed=1, ending="promote",
                  candidate=NO_HARM_CANDIDATE),
         DeskPlan("focal-loss-rollback", "desk-rollback", "meanrev-b", seed=1, ending="fault"))
WANTED_PHASE = {"evidence": "NotPromoted", "promote": "Completed", "fault": "RolledBack"}


class Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        minutes, seconds = divmod(int(self.elapsed()), 60)
        print(f"[{minutes:2d}:{seconds:02d}] {text}", flush=True)


def run_cli(clock: Clock, argv: list[str], log_path: Path) -> None:
    """Run one `model-runtime` command to completion; its output goes to `log_path`."""
    shown = " ".join(a if "/" not in a or a.startswith("http") else Path(a).name for a in argv)
    started = time.monotonic()
    with log_path.open("w") as log:
        result = subprocess.run([str(BIN / argv[0]), *argv[1:]], stdout=log, stderr=subprocess.STDOUT,
                                timeout=900, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{shown} exited {result.returncode}; see {log_path}")
    clock.say(f"  $ {shown}   ({time.monotonic() - started:.0f}s)")


@dataclass
class Desk:
    """One desk's running pieces on top of the shared stack."""

    plan: DeskPlan
    scenario: Scenario
    market: dict[str, pd.DataFrame]
    trading: TradingDesk | None = None
    record: RolloutRecord | None = None
    fault_at: float | None = None
    promoted: bool = False

    @property
    def prometheus(self) -> PrometheusServer:
        return self.scenario.stack.prometheus


def train_desk(clock: Clock, desk: Desk, mlflow_url: str, sizes: Sizes, out: Path) -> None:
    """Baseline (champion) and focal (candidate) models, then (evidence desk) the sweep the shadow gate judges."""
    plan = desk.plan
    common = ["--tracking-uri", mlflow_url, "--symbols", ",".join(SYMBOLS), "--strategy", plan.strategy,
              "--rows", str(sizes.rows), "--rounds", str(sizes.rounds), "--seed", str(plan.seed), "--nthread", "1"]
    logs = out / "logs"
    run_cli(clock, ["model-runtime", "train", *common, "--experiment", f"training-{plan.strategy}",
                    "--loss", BASELINE], logs / f"train-{plan.strategy}-baseline.log")
    run_cli(clock, ["model-runtime", "train", *common, "--experiment", f"training-{plan.strategy}",
                    "--loss", plan.candidate], logs / f"train-{plan.strategy}-focal.log")
    if plan.live_only:
        return
    run_cli(clock, ["model-runtime", "sweep", *common, "--experiment", desk.scenario.stack.sweep_experiment,
                    "--loss", plan.candidate, "--folds", str(sizes.folds)], logs / f"sweep-{plan.strategy}.log")


def start_model_server(stack: ExitStack, name: str, plan: DeskPlan, mlflow_url: str, config_dir: Path,
                       out: Path) -> str:
    port = free_port()
    server = Server(name=name, log_path=out / "logs" / f"{name}.log", argv=[
        str(BIN / "model-runtime"), "serve", "--tracking-uri", mlflow_url, "--symbols", ",".join(SYMBOLS),
        "--strategy", plan.strategy, "--host", "127.0.0.1", "--port", str(port), "--config-dir", str(config_dir),
        "--poll-seconds", "2"]).start()
    stack.callback(server.stop)
    url = f"http://127.0.0.1:{port}"
    server.wait_ready(lambda: http_ok(f"{url}/readyz"), timeout=180)
    return url


def start_exporter(stack: ExitStack, plan: DeskPlan, journal: Path, out: Path) -> str:
    """The real journal exporter; a short window so the gates see the canary within seconds."""
    port = free_port()
    server = Server(name=f"exporter-{plan.strategy}", log_path=out / "logs" / f"exporter-{plan.strategy}.log", argv=[
        str(BIN / "model-runtime"), "journal-exporter", "--db-url", f"sqlite:///{journal}", "--window", "10s",
        "--max-staleness", "10s", "--refresh-interval", "1s", "--host", "127.0.0.1", "--port", str(port)]).start()
    stack.callback(server.stop)
    server.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/metrics"), timeout=60)
    return f"127.0.0.1:{port}"


def start_desk_runtime(stack: ExitStack, clock: Clock, desk: Desk, mlflow_url: str, kubeconfig: Path,
                       out: Path) -> list[str]:
    """ConfigMap mirror, live and paper servers, exporter and trading; returns the scrape targets."""
    plan = desk.plan
    live_dir, paper_dir = out / "volumes" / f"{plan.strategy}-live", out / "volumes" / f"{plan.strategy}-paper"
    mirror = ConfigMapMirror(configmap_reader(kubeconfig, plan.namespace, CONFIGMAP), live_dir).start()
    stack.callback(mirror.stop)
    write_volume(paper_dir, {FLAG_KEY: BASELINE})  # the paper desk always runs the champion
    live = start_model_server(stack, f"serve-{plan.strategy}-live", plan, mlflow_url, live_dir, out)
    paper = start_model_server(stack, f"serve-{plan.strategy}-paper", plan, mlflow_url, paper_dir, out)
    journal = out / f"journal-{plan.strategy}.db"
    exporter = start_exporter(stack, plan, journal, out)
    engine = sa.create_engine(f"sqlite:///{journal}")
    stack.callback(engine.dispose)
    desk.trading = TradingDesk({s: Replay.after_training(f) for s, f in desk.market.items()}, live, paper, engine,
                               DeskConfig(bars_per_second=BARS_PER_SECOND)).start()
    stack.callback(desk.trading.stop)
    clock.say(f"  {plan.namespace}: live server {live} (config {live_dir.relative_to(out)} mirrored from "
              f"ConfigMap {CONFIGMAP}), paper server {paper} (champion), exporter {exporter}, trading started")
    return [live.removeprefix("http://"), paper.removeprefix("http://"), exporter]


def demo_changes(plan: DeskPlan, spec: dict[str, Any], changes: list[str]) -> None:
    """The demo's edits to the fast example for `plan`, each described in `changes`."""
    if not plan.live_only:
        return
    spec["stages"] = spec["stages"][1:]
    changes.append("shadow stage dropped")
    if plan.candidate != spec["change"]["candidate"]:
        spec["change"]["candidate"] = plan.candidate
        changes.append(f"candidate {plan.candidate} (half the logistic loss: a no-harm change)")
    candidate = per_trade_queries("candidate")
    sequential = sequential_sums("{variant}") | SEQUENTIAL
    for stage in spec["stages"]:
        stage["rollbackTriggers"] = [{"name": "expectancy-worse-than-baseline", "kind": "sequential",
                                      "sequential": sequential | {"margin": 0}}]
        # As in examples/focal-loss-rollout.yaml: no fixed-sample Sortino comparison (looked at every cycle, it
        # fails a no-harm candidate whose ratio comes out a hair lower), the trade count shown, not counted.
        stage["gates"] = [gate for gate in stage["gates"] if gate["name"] != "sortino-vs-baseline"]
        for gate in stage["gates"]:
            if "window" in gate:
                gate["window"] = GATE_WINDOW
            if gate["name"] == "expectancy-vs-baseline":
                gate.clear()
                gate.update(name="expectancy-not-worse", kind="sequential",
                            sequential=sequential | {"margin": NO_HARM_MARGIN})
            elif gate["name"] == "trades":
                gate.update(dryRun=True)
                gate["sampleSize"]["query"] = candidate["count"]
    changes.append("the production plan's sequential rules on the recorded exporter counters "
                   "(modelrollout.outcome_queries): gate expectancy-not-worse "
                   f"(margin {NO_HARM_MARGIN:g} USDC per trade), trigger expectancy-worse-than-baseline; "
                   "no Sortino gate; the trades gate a dry run")
    changes.append(f"other gate windows {GATE_WINDOW}")
    canary, full = spec["stages"][0], spec["stages"][1]
    canary["minDuration"] = "60s" if plan.ending == "fault" else f"{STAGE_SECONDS}s"  # fault: room to land mid-canary
    full["watchDuration"] = f"{STAGE_SECONDS}s"
    # An undecided sequence waits for more trades, then goes to a human. Measured on a loaded machine, the
    # slowest symbol (ETHUSDC, about 5 trades a second) needed about 150 s of the full stage to show no harm.
    for stage in (canary, full):
        stage["maxDuration"] = f"{6 * STAGE_SECONDS}s"
    changes.append(f"canary minDuration {canary['minDuration']}, full watchDuration {full['watchDuration']}, "
                   f"maxDuration {canary['maxDuration']}")


def progress_line(desk: Desk, status: dict[str, Any], applied_at: float) -> str:
    gates = verdicts_by_name(status.get("gates") or [])
    triggers = verdicts_by_name(status.get("triggers") or [])
    stage_started = status.get("stageStartedAt")
    in_stage = (datetime.now(UTC) - datetime.fromisoformat(stage_started)).total_seconds() if stage_started else 0
    verdicts = " ".join(f"{VERDICT_MARK.get(v, v)}{n}" for n, v in gates.items()) or "-"
    trig = " ".join(f"{VERDICT_MARK.get(v, v)}{n}" for n, v in triggers.items()) or "-"
    return (f"  {desk.plan.rollout:<20} {status.get('stage', '-'):<7} {status.get('phase', 'Pending'):<16} "
            f"live {status.get('live', '0/5'):<4} elapsed {time.monotonic() - applied_at:4.0f}s "
            f"(stage {in_stage:3.0f}s) gates: {verdicts} | triggers: {trig}")


def watch_rollouts(clock: Clock, desks: list[Desk], kubectl_all: Callable[..., str], sizes: Sizes) -> None:
    """`kubectl get mro -A -w`-style rows on change, a progress line every few seconds, and the two
    interventions: the human's promote and the simulator's fault."""
    applied_at = time.monotonic()
    deadline = applied_at + sizes.rollout_timeout
    header, rows, last_progress = False, {}, 0.0
    while True:
        table = kubectl_all("get", "mro", "-A").splitlines()
        if not header and table:
            print(f"         {table[0]}", flush=True)
            header = True
        for row in table[1:]:
            _namespace, name, *columns = row.split()
            if rows.get(name) != columns[:3]:  # like -w, but only when stage, phase or live change
                rows[name] = columns[:3]
                clock.say(row)
        statuses = {d.plan.rollout: d.scenario.status(d.plan.rollout) for d in desks}
        now = datetime.now(UTC)
        for desk in desks:
            status = statuses[desk.plan.rollout]
            assert desk.record is not None and desk.trading is not None
            desk.record.observe(now, status)
            if desk.plan.ending == "promote" and status.get("phase") == "AwaitingApproval" and not desk.promoted:
                clock.say(f">> HUMAN STEP: {desk.plan.rollout} awaits approval for stage {status.get('stage')}; "
                          f"the canary passed. Approving with change ticket DEMO-1:")
                clock.say(f"   $ kubectl modelrollout promote {desk.plan.rollout} --ticket DEMO-1 "
                          f"-n {desk.plan.namespace}")
                answer = desk.scenario.kubectl("modelrollout", "promote", desk.plan.rollout, "--ticket", "DEMO-1")
                clock.say(f"   {answer.stdout.strip()}")
                desk.record.mark(datetime.now(UTC), "promote DEMO-1")
                desk.promoted = True
            if desk.plan.ending == "fault" and desk.fault_at is None and canary_flag_done({"status": status}):
                desk.fault_at = time.monotonic() + sizes.fault_after
            if desk.fault_at is not None and time.monotonic() >= desk.fault_at and not desk.trading.wrong_side:
                desk.trading.inject_wrong_side(FAULT_SYMBOL)
                desk.record.mark(datetime.now(UTC), f"fault: {FAULT_SYMBOL} candidate orders short")
                clock.say(f">> SIMULATOR FAULT: {desk.plan.rollout}: the candidate's {FAULT_SYMBOL} orders now go out "
                          f"short where the model says buy (the sign of its PnL flips); expectancy will turn negative")
        if time.monotonic() - last_progress >= 4:
            last_progress = time.monotonic()
            for desk in desks:
                print(progress_line(desk, statuses[desk.plan.rollout], applied_at), flush=True)
        if all(s.get("phase") in TERMINAL_PHASES for s in statuses.values()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"rollouts not finished after {sizes.rollout_timeout:.0f}s: "
                               + ", ".join(f"{n}={s.get('phase')}" for n, s in statuses.items()))
        time.sleep(1.0)


def expectancy_series(prometheus: PrometheusServer, start: datetime, end: datetime) -> dict[str, list]:
    """`expectancy_net_realized` of every symbol and variant over the demo, read back from Prometheus."""
    result = PrometheusConnect(url=prometheus.url).custom_query_range("expectancy_net_realized", start_time=start,
                                                                      end_time=end, step="1s")
    series: dict[str, list] = {}
    for item in sorted(result, key=lambda r: (r["metric"].get("symbol") != FAULT_SYMBOL, r["metric"].get("symbol"),
                                              r["metric"].get("variant"))):
        label = f"{item['metric'].get('symbol')} {item['metric'].get('variant')}"
        series[label] = [(datetime.fromtimestamp(float(t), UTC), float(v)) for t, v in item["values"]]
    return series


def summarize(desk: Desk, started_wall: datetime) -> dict[str, Any]:
    """What the user would check afterwards: the story, the verdicts, the levers and where they ended."""
    rollout = desk.scenario.get(desk.plan.rollout)
    status = rollout.get("status") or {}
    return {
        "rollout": f"{desk.plan.namespace}/{desk.plan.rollout}",
        "phase": status.get("phase"),
        "stage": status.get("stage"),
        "history": [f"{h['at']}  {h['stage']:<7} {h['phase']:<16} {h['message']}" for h in status.get("history", [])],
        "gates": [f"{VERDICT_MARK.get(m['verdict'], '')} {m['verdict']:<12} {m['name']:<24} {m['symbol']:<8} "
                  f"{m.get('message', '')}" for m in [*status.get("gates", []), *status.get("triggers", [])]],
        "lift": [f"{m['symbol']:<8} {m['message']}" for m in status.get("gates", []) if "lift" in m.get("message", "")],
        "actions": [f"{a.get('doneAt') or a.get('plannedAt')}  {a['state']:<5} {a['type']:<11} {a['reason']:<16} "
                    f"{a['target']} "
                    + (json.dumps(a["flags"]) if a.get("flags") else f"{a.get('alias', '')}={a.get('value', '')}")
                    for a in status.get("actions", [])],
        "rollback": (status.get("rollback") or {}).get("reason"),
        "approval": status.get("approval"),
        "configmap": desk.scenario.configmap(),
        "effective_flags": desk.scenario.effective_flags(),
        "champion_versions": desk.scenario.aliases(),
        "fills": {f"{s}/{v}": n for (s, v), n in sorted(desk.trading.fills.items())} if desk.trading else {},
        "seconds": (datetime.fromisoformat(status["history"][-1]["at"]) - started_wall).total_seconds()
        if status.get("history") else None,
    }


def print_summary(summary: dict[str, Any]) -> None:
    print(f"\n── {summary['rollout']}: {summary['phase']} (stage {summary['stage']}, "
          f"{summary['seconds']:.0f}s after it was applied)", flush=True)
    if summary["rollback"]:
        print(f"   rollback reason: {summary['rollback']}")
    if summary["approval"]:
        approval = summary["approval"]
        print(f"   approval: stage {approval['stage']} by {approval['by']} ticket {approval.get('ticket')} at "
              f"{approval['at']}")
    if summary["lift"]:
        print("   the honest verdict on this market, per symbol (focal minus baseline f1_buy, 95% CI):")
        for line in summary["lift"]:
            print(f"     {line}")
    for title in ("history", "gates", "actions"):
        print(f"   {title}:")
        for line in summary[title]:
            print(f"     {line}")
    print(f"   ConfigMap {CONFIGMAP}: {json.dumps(summary['configmap'], sort_keys=True)}")
    print(f"   champion alias -> version: {summary['champion_versions']}")
    print(f"   fills journaled (symbol/variant): {summary['fills']}", flush=True)


@contextmanager
def interrupts_unwind() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so every started process is stopped on either."""
    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(out: Path, sizes: Sizes) -> dict[str, Any]:
    clock = Clock()
    started_wall = datetime.now(UTC)
    if out.exists():
        shutil.rmtree(out)
    (out / "logs").mkdir(parents=True)
    with ExitStack() as stack:
        clock.say("starting the local stack: kube-apiserver + etcd, MLflow, one Prometheus per desk (all on 127.0.0.1)")
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = {
                "plane": pool.submit(start_control_plane, out / "controlplane"),
                "mlflow": pool.submit(start_mlflow, out / "mlflow"),
                **{d.strategy: pool.submit(start_prometheus, out / f"prometheus-{d.strategy}",
                                           rule_files=CHART_RULE_FILES) for d in DESKS},
            }
            for future in futures.values():  # every server that did start is stopped, even if another failed
                if future.exception() is None:
                    stack.callback(future.result().stop)
            servers = {name: future.result() for name, future in futures.items()}
        plane, mlflow = servers["plane"], servers["mlflow"]
        install_crds(plane)
        clock.say(f"  kube-apiserver {plane.url}, MLflow {mlflow.url}, "
                  + ", ".join(f"Prometheus[{d.strategy}] {servers[d.strategy].url}" for d in DESKS))
        clock.say(f"  CRDs applied; KUBECONFIG={plane.kubeconfig}")

        desks = []
        for plan in DESKS:
            view = Stack(plane=plane, prometheus=servers[plan.strategy], mlflow=mlflow, workdir=out,
                         sweep_experiment=f"focal-loss-sweep-{plan.strategy}")
            prepare_namespace(view, plan.namespace)
            desks.append(Desk(plan=plan, scenario=Scenario(stack=view, namespace=plan.namespace,
                                                           strategy=plan.strategy, workdir=out),
                              market={s: market(s, sizes.rows, plan.seed) for s in SYMBOLS}))
            clock.say(f"  namespace {plan.namespace}: ConfigMap {CONFIGMAP} {FLAG_KEY}={BASELINE}")

        clock.say(f"training with the real model-runtime CLI (synthetic market, {sizes.rows} bars per symbol, "
                  f"{sizes.rounds} rounds, {sizes.folds}-fold sweep); logs in {out / 'logs'}")
        with ThreadPoolExecutor(max_workers=len(desks)) as pool:
            for future in [pool.submit(train_desk, clock, d, mlflow.url, sizes, out) for d in desks]:
                future.result()

        clock.say("starting the operator and each desk's runtime")
        operator = start_operator(out, plane.kubeconfig, [d.plan.namespace for d in desks])
        stack.callback(operator.stop)
        operator_target = operator.metrics_url.removeprefix("http://").removesuffix("/metrics")  # type: ignore[attr-defined]
        clock.say("  NOTE: there is no kubelet here; a sync loop in the demo copies each ConfigMap into its live "
                  "server's config dir every second, swapping the `..data` symlink the way the kubelet does")
        for desk in desks:
            targets = start_desk_runtime(stack, clock, desk, mlflow.url, plane.kubeconfig, out)
            desk.prometheus.reload([*targets, operator_target], rule_files=CHART_RULE_FILES)
        for desk in desks:
            provider = PrometheusProvider(desk.prometheus.url, timeout_s=5)
            wait_until(lambda p=provider: len(p.query('n_trades{variant="baseline"}').values) >= len(SYMBOLS),
                       f"baseline trades of every symbol in {desk.plan.namespace}'s Prometheus", timeout=90)
        clock.say("  Prometheus sees the baseline's n_trades, expectancy_net_realized, sortino_ratio for every symbol")

        def kubectl_all(*args: str) -> str:
            return plane.kubectl(*args).stdout

        for desk in desks:
            changes: list[str] = []
            manifest = rollout_manifest(desk.scenario.stack, desk.plan.rollout, desk.plan.namespace,
                                        desk.plan.strategy, lambda spec, d=desk, c=changes: demo_changes(d.plan, spec, c))
            (out / f"{desk.plan.rollout}.yaml").write_text(json.dumps(manifest, indent=1))
            clock.say(f"$ kubectl apply -n {desk.plan.namespace} -f {desk.plan.rollout}.yaml   (the fast example, "
                      f"URLs patched{''.join(f'; {c}' for c in changes)})")
            if desk.plan.live_only:
                clock.say(f"  NOTE {desk.plan.namespace}: the owner overrides the shadow verdict to exercise the live "
                          "stages (canary, full) on this desk; in production you would not")
            desk.scenario.apply(manifest)
            desk.record = RolloutRecord(desk.plan.rollout, desk.plan.namespace, datetime.now(UTC))
        watch_rollouts(clock, desks, kubectl_all, sizes)

        time.sleep(2)  # the last scrape of the final state
        ended = datetime.now(UTC)
        summaries = [summarize(d, d.record.started) for d in desks if d.record]
        print("\n════ summary ════", flush=True)
        for summary in summaries:
            print_summary(summary)
        for desk in desks:
            (out / f"{desk.plan.rollout}-status.txt").write_text(
                desk.scenario.kubectl("modelrollout", "status", desk.plan.rollout, check=False).stdout)
        series = [expectancy_series(d.prometheus, started_wall, ended) for d in desks]
        png = draw(out / "timeline.png", [d.record for d in desks if d.record], series, ended)
        result = {"rollouts": summaries, "timeline": str(png), "seconds": clock.elapsed()}
        (out / "summary.json").write_text(json.dumps(result, indent=1, default=str))
        clock.say(f"timeline: {png}; summary: {out / 'summary.json'}; `kubectl modelrollout status` of each rollout "
                  f"in {out}/*-status.txt")
        clock.say("tearing down")
    minutes, seconds = divmod(int(clock.elapsed()), 60)
    print(f"\nmake demo took {minutes}m{seconds:02d}s wall clock.", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("DEMO_QUICK") == "1",
                        help="smaller training (also DEMO_QUICK=1)")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "demo-output", help="scratch dir (wiped first)")
    args = parser.parse_args(argv)
    with interrupts_unwind():
        try:
            result = run(args.output.resolve(), QUICK if args.quick else FULL)
        except KeyboardInterrupt:
            print("\ninterrupted: everything started was stopped", file=sys.stderr)
            return 130
    endings = [(d.rollout, s["phase"], WANTED_PHASE[d.ending]) for s, d in zip(result["rollouts"], DESKS, strict=True)]
    for name, phase, wanted in endings:
        print(f"{'ok' if phase == wanted else 'UNEXPECTED'}: {name} ended {phase} (expected {wanted})")
    return 0 if all(phase == wanted for _, phase, wanted in endings) else 1


if __name__ == "__main__":
    sys.exit(main())
