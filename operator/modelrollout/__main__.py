"""`modelrollout-operator`: run the operator (kopf) with peering, metrics and a liveness probe."""

from __future__ import annotations

import argparse
import logging
import os
import zlib

import kopf

from modelrollout.metrics import OperatorMetrics


def peering_priority(pod_name: str) -> int:
    """Distinct per replica (kopf freezes all peers that share a priority), stable per pod name."""
    return 1 + zlib.crc32(pod_name.encode()) % 1_000_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="modelrollout-operator", description=__doc__)
    parser.add_argument("--namespace", action="append", default=[], help="watch this namespace (repeatable)")
    parser.add_argument("--peering", default="modelrollout", help="KopfPeering object shared by the replicas")
    parser.add_argument("--priority", type=int, default=None,
                        help="peering priority (default: derived from $POD_NAME, else from the host and pid)")
    parser.add_argument("--standalone", action="store_true", help="no peering (a single development replica)")
    parser.add_argument("--metrics-port", type=int, default=9102)
    parser.add_argument("--health-port", type=int, default=8080)
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.namespace:
        raise SystemExit("modelrollout-operator: name at least one --namespace to watch")
    import modelrollout.handlers  # noqa: F401  (registers the handlers)

    metrics = OperatorMetrics()
    metrics.serve(args.metrics_port)
    pod = os.environ.get("POD_NAME") or f"{os.uname().nodename}-{os.getpid()}"
    priority = args.priority if args.priority is not None else peering_priority(pod)
    # Only the namespaces named (no patterns) and the CRDs present at startup are served, so kopf
    # need not list namespaces or CRDs cluster-wide: the chart grants neither, and without this
    # kopf retries those refused requests for about a minute before it serves anything.
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    kopf.run(
        settings=settings,
        clusterwide=False,
        namespaces=args.namespace,
        standalone=args.standalone,
        priority=priority,
        peering_name=args.peering,
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz",
        memo=kopf.Memo(metrics=metrics, peering_mandatory=not args.standalone),
    )


if __name__ == "__main__":
    main()
