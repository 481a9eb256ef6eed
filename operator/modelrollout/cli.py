"""`kubectl modelrollout`: see a rollout's whole story and give it a human's decision.

promote / abort / retry never touch status (the operator owns it): they write a request
annotation carrying who asks (the user and groups the apiserver's SelfSubjectReview returns),
when, the ticket, the stage and spec revision it is meant for, and an id the operator records
once handled. The apiserver's admission policy refuses the write unless that is who wrote it
and the rollout names them (docs/authority.md); its refusal is printed as it comes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import kubernetes
import yaml
from kubernetes.client import ApiClient, AuthenticationV1Api, CustomObjectsApi, V1SelfSubjectReview
from kubernetes.client.exceptions import ApiException
from urllib3 import HTTPHeaderDict

from modelrollout.crd import GROUP, PLURAL, VERSION
from modelrollout.gates import human_duration
from modelrollout.kube import REQUEST_ANNOTATION_PREFIX, format_request
from modelrollout.observation import Request
from modelrollout.prometheus_provider import PrometheusProvider
from modelrollout.replay import describe, replay_plan
from modelrollout.spec import AUTHORITY_FIELD, ModelRolloutSpec, parse_duration, stage_duration
from modelrollout.status import TERMINAL_PHASES, Evidence, ModelRolloutStatus

VERDICT_MARK = {"Pass": "✔", "Fail": "✖", "Inconclusive": "?", "Error": "!"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kubectl modelrollout", description=__doc__)
    parser.add_argument("-n", "--namespace", default=None)
    parser.add_argument("--kubeconfig", default=None)
    parser.add_argument("--context", default=None)
    parser.add_argument("--as", dest="as_user", default=None, help="impersonate this user, like kubectl --as")
    parser.add_argument("--as-group", dest="as_groups", action="append", default=[],
                        help="impersonate this group (repeatable), like kubectl --as-group")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="stages, gates (value, threshold, verdict), actions, events")
    status.add_argument("name")
    status.add_argument("-w", "--watch", action="store_true", help="refresh until the rollout ends")
    status.add_argument("--interval", type=float, default=2.0)
    promote = commands.add_parser("promote", help="approve the stage the rollout awaits")
    promote.add_argument("name")
    promote.add_argument("--ticket", default="", help="change ticket reference recorded with the approval")
    abort = commands.add_parser("abort", help="roll back now")
    abort.add_argument("name")
    abort.add_argument("--ticket", default="")
    retry = commands.add_parser("retry", help="re-run a failed stage, or resume a paused one")
    retry.add_argument("name")
    retry.add_argument("--ticket", default="")
    replay = commands.add_parser("replay", help="how often a plan's rules would have fired against the baseline itself")
    replay.add_argument("plan", help="a ModelRollout manifest file, or the name of one in the cluster")
    replay.add_argument("--since", default="30d", help="history to replay (default 30d)")
    replay.add_argument("--every", default="1d", help="a stage-long window starts this often (default 1d)")
    replay.add_argument("--step", default="10m", help="how often a rule is looked at (default 10m)")
    replay.add_argument("--prometheus", default=None, help="Prometheus URL (default: the plan's spec.prometheus.url)")
    for sub in (status, promote, abort, retry, replay):
        sub.add_argument("-n", "--namespace", default=argparse.SUPPRESS)
        sub.add_argument("--as", dest="as_user", default=argparse.SUPPRESS)
        sub.add_argument("--as-group", dest="as_groups", action="append", default=argparse.SUPPRESS)
    return parser.parse_args(argv)


class Plugin:
    def __init__(self, args: argparse.Namespace) -> None:
        kubernetes.config.load_kube_config(config_file=args.kubeconfig, context=args.context)
        contexts, active = kubernetes.config.list_kube_config_contexts(config_file=args.kubeconfig)
        chosen = next((c for c in contexts if c["name"] == args.context), active)
        self.namespace = args.namespace or chosen["context"].get("namespace", "default")
        self.client = ApiClient()
        if args.as_user or args.as_groups:
            impersonate(self.client, args.as_user, args.as_groups)
        self.custom = CustomObjectsApi(self.client)

    def get(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                                             name))

    def whoami(self) -> tuple[str, list[str]]:
        """The user and groups the apiserver authenticates this client as."""
        review = AuthenticationV1Api(self.client).create_self_subject_review(
            V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview"))
        user = review.status.user_info if review.status else None
        if user is None or not user.username:
            raise SystemExit("the API server did not say who you are (SelfSubjectReview without a username)")
        return str(user.username), [str(g) for g in user.groups or []]

    def request(self, name: str, kind: str, ticket: str = "") -> str:
        obj = self.get(name)
        status = ModelRolloutStatus.model_validate(obj.get("status") or {})
        if kind == "promote" and status.phase != "AwaitingApproval":
            raise SystemExit(f"{name} is {status.phase or 'Pending'}, not awaiting approval: nothing to promote")
        user, groups = self.whoami()
        named = (obj.get("spec", {}).get("accountability", {}).get(AUTHORITY_FIELD[kind]) or {}).get("groups") or []
        request = Request(kind=kind, id=uuid.uuid4().hex[:12], by=user, at=datetime.now(UTC),  # type: ignore[arg-type]
                          groups=tuple(g for g in groups if g in named), ticket=ticket, stage=status.stage,
                          revision=status.revision)
        try:
            value = format_request(request)
        except ValueError as error:
            raise SystemExit(f"error: {error}") from None
        patch = {"metadata": {"annotations": {f"{REQUEST_ANNOTATION_PREFIX}{kind}": value}}}
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, patch)
        return (f"{kind} requested for {self.namespace}/{name} (stage {status.stage}) by {user}"
                + (f" as {', '.join(request.groups)}" if request.groups else "")
                + (f", ticket {ticket}" if ticket else "") + f" [request {request.id}]")


def impersonate(client: ApiClient, user: str | None, groups: list[str]) -> None:
    """kubectl's --as/--as-group: Impersonate-* headers, one Impersonate-Group header per group as the
    apiserver reads them (the generated client keeps headers in a plain dict, which holds one per name)."""
    send: Callable[..., Any] = client.rest_client.request

    def request(method: str, url: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        merged = HTTPHeaderDict(headers or {})
        if user:
            merged["Impersonate-User"] = user
        for group in groups:
            merged.add("Impersonate-Group", group)
        return send(method, url, headers=merged, **kwargs)

    client.rest_client.request = request  # type: ignore[method-assign,assignment]


def render(obj: dict[str, Any]) -> str:
    """The rollout as `kubectl argo rollouts get` shows one: stages, gates, triggers, actions, history."""
    meta, spec = obj["metadata"], obj.get("spec", {})
    status = ModelRolloutStatus.model_validate(obj.get("status") or {})
    lines = [f"Name:      {meta['namespace']}/{meta['name']}",
             f"Phase:     {status.phase}    Stage: {status.stage or '-'}    Live on candidate: {status.live}",
             f"Message:   {status.message}",
             f"Change:    {spec.get('change', {}).get('key')}: {spec.get('change', {}).get('baseline')} -> "
             f"{spec.get('change', {}).get('candidate')}    Revision: {status.revision}"]
    if status.approval:
        a = status.approval
        lines.append(f"Approved:  {a.stage} by {a.by}" + (f" as {', '.join(a.groups)}" if a.groups else "")
                     + f" at {a.at:%Y-%m-%d %H:%M:%S}" + (f" ({a.ticket})" if a.ticket else "")
                     + "    verified by the apiserver")
    if status.rollback:
        r = status.rollback
        lines.append(f"Rollback:  {r.reason} (stage {r.stage}, started {r.started_at:%H:%M:%S}"
                     + (f", completed {r.completed_at:%H:%M:%S})" if r.completed_at else ", in progress)"))
    if status.sweep_job:
        j = status.sweep_job
        lines.append(f"Sweep Job: {j.name or '(key ' + j.key + ', not read yet)'} {j.state}: {j.succeeded}/{j.shards} "
                     f"shard(s) done, {j.active} running, {j.failed} failed pod(s)" + (f"; {j.message}" if j.message else ""))
    replayed = next((c for c in status.conditions if c.type == "BaselineReplay"), None)
    if replayed is not None:
        mark = {"True": "✔", "False": "⚠", "Unknown": "?"}[replayed.status]
        lines.append(f"Replay:    {mark} {replayed.reason}: {replayed.message}")
    lines += ["", "Stages:"]
    for index, stage in enumerate(spec.get("stages", [])):
        mark = "▶" if index == status.stage_index and status.stage == stage["name"] else (
            "✔" if index < status.stage_index else "·")
        symbols = ",".join(stage.get("symbols") or spec.get("symbols", []))
        approval = " [approval]" if stage.get("approval", {}).get("required") else ""
        lines.append(f"  {mark} {stage['name']:<10} {stage['type']:<7} min {stage.get('minDuration', '0s'):<6} "
                     f"{symbols}{approval}")
    measured = {"Gates": status.last_evaluated_at, "Rollback triggers": status.last_triggers_evaluated_at}
    for title, rows in (("Gates", status.gates), ("Rollback triggers", status.triggers)):
        if rows:
            at = measured[title]
            header = f"  {'NAME':<24} {'SYMBOL':<9} {'VALUE':>10} {'BASELINE':>10}  {'THRESHOLD':<36} VERDICT"
            lines += ["", f"{title}:" + (f" (measured {at:%H:%M:%S})" if at else ""), header]
            for m in rows:
                name = f"{m.name} (dry run)" if m.dry_run else m.name
                lines.append(f"  {name:<24} {m.symbol:<9} {_num(m.value):>10} {_num(m.baseline):>10}  "
                             f"{m.threshold[:36]:<36} {VERDICT_MARK[m.verdict]} {m.verdict}"
                             + (f"  {m.message[:60]}" if m.verdict != "Pass" and m.message and not m.evidence else ""))
                if m.evidence is not None:
                    lines.append(f"    {_evidence(m.evidence)}")
    evidenced = {m.name: m.evidence for m in [*status.gates, *status.triggers] if m.evidence and m.evidence.queries}
    if evidenced:
        lines += ["", "Evidence queries (resolved PromQL):"]
        for name, evidence in evidenced.items():
            lines += [f"  {name} {role}: {query}" for role, query in evidence.queries.items()]
    if status.actions:
        lines += ["", "Actions:"]
        for action in status.actions:
            what = (", ".join(f"{k}={v}" for k, v in sorted(action.flags.items())) if action.type == "setFlag"
                    else "Indexed Job" if action.type == "runSweep" else f"{action.alias} -> {action.value}")
            when = f"{action.done_at:%H:%M:%S}" if action.done_at else f"pending ({action.attempts} tries)"
            lines.append(f"  {action.id} {action.reason:<16} {action.type:<11} {action.target}: {what[:70]}  {when}"
                         + (f"  last error: {action.last_error[:80]}" if action.last_error else ""))
    decisions = [h for h in status.history if h.decision]
    if decisions:
        lines += ["", "Decisions:", f"  {'TIME':<8} {'REQUEST':<22} {'BY':<40} {'TICKET':<12} OUTCOME"]
        for h in decisions[-10:]:
            d = h.decision
            assert d is not None
            who = d.by + (f" as {','.join(d.groups)}" if d.groups else "")
            lines.append(f"  {h.at:%H:%M:%S} {d.request[:22]:<22} {who[:40]:<40} {d.ticket[:12]:<12} {d.outcome}"
                         + (f"  {h.message.split(': ', 1)[-1][:70]}" if d.outcome == "Refused" else ""))
    if status.history:
        lines += ["", "History:"]
        lines += [f"  {h.at:%H:%M:%S} {h.stage:<10} {h.phase:<16} {h.message[:90]}" for h in status.history[-10:]]
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _evidence(evidence: Evidence) -> str:
    """One line: the confidence sequence against its bar, the trades, and when it can decide."""
    trades = f"n={_num(evidence.trades)}" + (f" (baseline {_num(evidence.baseline_trades)})"
                                             if evidence.baseline_trades is not None else "")
    text = (f"CS{(1 - evidence.alpha) * 100:g} [{_num(evidence.lower)}, {_num(evidence.upper)}] estimate "
            f"{_num(evidence.estimate)} vs bar {evidence.bar:g}; {trades}")
    if evidence.more_trades is not None:
        text += f"; ≈ {evidence.more_trades:g} more trades"
        if evidence.more_seconds is not None:
            text += f" (≈ {human_duration(evidence.more_seconds)} at the current rate)"
        text += " until this can decide"
    return text



def replay_report(spec: ModelRolloutSpec, prometheus: PrometheusProvider, since: str, every: str, step: str,
                  now: datetime) -> str:
    """Every lever stage's rules replayed over the baseline's history (`modelrollout.replay`)."""
    findings = replay_plan(spec, prometheus.query_range, now, parse_duration(since), parse_duration(every),
                           parse_duration(step))
    lines = []
    for stage in spec.stages:
        if stage.type == "shadow":
            continue
        length = stage_duration(stage)
        lines.append(f"stage {stage.name}: {human_duration(length.total_seconds())} windows starting every {every} "
                     f"over the last {since}, looked at every {step}, the baseline standing in for the candidate:")
        lines += [f"  {describe(f, length)}" for f in findings if f.stage == stage.name]
    return "\n".join(lines)


def _replay(args: argparse.Namespace) -> int:
    path = Path(args.plan)
    if path.exists():
        manifest = yaml.safe_load(path.read_text())
    else:
        manifest = Plugin(args).get(args.plan)
    spec = ModelRolloutSpec.model_validate(manifest["spec"])
    url = args.prometheus or spec.prometheus.url
    print(replay_report(spec, PrometheusProvider(url, parse_duration(spec.prometheus.timeout).total_seconds()),
                        args.since, args.every, args.step, datetime.now(UTC)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "replay":
        return _replay(args)
    plugin = Plugin(args)
    try:
        if args.command == "status":
            while True:
                obj = plugin.get(args.name)
                text = render(obj)
                if args.watch:
                    sys.stdout.write("\033[2J\033[H" if sys.stdout.isatty() else "\n")
                print(text, flush=True)
                phase = (obj.get("status") or {}).get("phase", "")
                if not args.watch or phase in TERMINAL_PHASES:
                    return 0
                time.sleep(args.interval)
        print(plugin.request(args.name, args.command, getattr(args, "ticket", "")))
        return 0
    except ApiException as error:
        reason = json.loads(error.body).get("message", error.reason) if error.body else error.reason
        print(f"error: {reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
