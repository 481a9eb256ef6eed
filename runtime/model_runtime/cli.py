"""`model-runtime`: train | sweep | serve | journal-exporter.

Flags left out fall back to MODEL_RUNTIME_* environment variables (pydantic-settings), and the loss to
CVN_LOSS_FUNCTION, so the same image runs from a Kubernetes Job or Deployment without a wrapper script.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("model_runtime")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (env MODEL_RUNTIME_TRACKING_URI or MLFLOW_TRACKING_URI)")
    parser.add_argument("--symbols", help="comma-separated, e.g. BTCUSDC,ETHUSDC")
    parser.add_argument("--strategy", help="strategy part of the registered-model name")


def _data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", help="MLflow experiment name")
    parser.add_argument("--data", type=Path, help="Parquet/CSV bars; default: the synthetic market")
    parser.add_argument("--rows", type=int, help="synthetic rows per symbol (default 20000)")
    parser.add_argument("--seed", type=int, help="synthetic market and booster seed")
    parser.add_argument("--rounds", type=int, help="boosting rounds (default 100)")
    parser.add_argument("--nthread", type=int, help="XGBoost and focal-kernel threads (default 2)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="model-runtime", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train, log, register and alias one model per symbol")
    _common(train)
    _data(train)
    train.add_argument("--loss", help="binary:logistic | focal:gamma=<g>,alpha=<a> (else CVN_LOSS_FUNCTION)")
    train.add_argument("--alias", help="alias to set (default: candidate for focal, champion for logistic)")
    train.add_argument("--pushgateway", help="push job metrics to this Pushgateway URL")
    train.add_argument("--metrics-textfile", type=Path, help="write job metrics for the textfile collector")

    sweep = commands.add_parser("sweep", help="baseline vs candidate over walk-forward folds into MLflow")
    _common(sweep)
    _data(sweep)
    sweep.add_argument("--loss", help="candidate loss (default focal:gamma=2,alpha=0.25)")
    sweep.add_argument("--baseline-loss", help="baseline loss (default binary:logistic)")
    sweep.add_argument("--folds", type=int, help="walk-forward folds per symbol and variant (default 13)")
    sweep.add_argument("--shard", metavar="INDEX/COUNT",
                       help="run every COUNT-th (symbol, fold) cell from INDEX: one completion index of an Indexed Job, "
                            "e.g. --shard $(JOB_COMPLETION_INDEX)/8")
    sweep.add_argument("--sweep-id", help="tag the runs with this id (every shard of one sweep gives the same)")

    serve = commands.add_parser("serve", help="inference server with Prometheus metrics")
    _common(serve)
    serve.add_argument("--host", help="bind address (default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (default 8080)")
    serve.add_argument("--config-dir", type=Path, help="mounted ConfigMap with CVN_LOSS_FUNCTION[__SYMBOL] files")
    serve.add_argument("--config-map", metavar="NAMESPACE/NAME",
                       help="watch this ConfigMap through the Kubernetes API instead (seconds, not the kubelet's minute)")
    serve.add_argument("--kubeconfig", type=Path,
                       help="for --config-map (default: the pod's service account in a pod, else $KUBECONFIG)")
    serve.add_argument("--poll-seconds", type=float, help="MLflow alias/tag poll interval (default 5)")
    serve.add_argument("--config-poll-seconds", type=float, help="config re-read interval (default 0.5)")
    serve.add_argument("--window", type=int, help="rows in the rolling PSI/sharpness window (default 1000)")

    commands.add_parser("journal-exporter", help="see model_runtime.outcomes.exporter", add_help=False)
    return parser


def _settings_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Only the flags given on the command line, nested where the settings models nest them."""
    given = {k: v for k, v in vars(args).items() if v is not None and k not in ("command", "log_level")}
    booster = {k: given.pop(k) for k in ("rounds", "nthread") if k in given}
    if "seed" in given:
        booster["seed"] = given["seed"]
    if booster:
        given["booster"] = booster
    return given


def _run(args: argparse.Namespace) -> int:
    if args.command == "train":
        from model_runtime.training.train_job import TrainSettings, run_train
        return run_train(TrainSettings(**_settings_kwargs(args)))
    if args.command == "sweep":
        from model_runtime.training.sweep_job import SweepSettings, run_sweep
        return run_sweep(SweepSettings(**_settings_kwargs(args)))
    from model_runtime.serving.server import ServeSettings, run_server
    return run_server(ServeSettings(**_settings_kwargs(args)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["journal-exporter"]:
        from model_runtime.outcomes.exporter import main as journal_main
        return journal_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return _run(args)
    except ValueError as error:  # bad flags, flag values or data (pydantic's ValidationError included)
        print(f"model-runtime {args.command}: {error}", file=sys.stderr)
        return 2
