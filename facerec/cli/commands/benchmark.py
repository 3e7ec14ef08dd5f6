"""Train and evaluate several backbones the same way, tracked in MLflow (one parent run, a child per model).

The experiment file (experiments/<name>.yaml) names the models, the shared training
config, the evaluation protocol and the registry alias of the winner. Prints the
results table (also written as CSV and Markdown to the output folder and MLflow).
Finished models of an earlier run with the same configuration are reused, not retrained.
"""

from __future__ import annotations

import argparse

from facerec.cli.commands import add_json_flag, add_set_argument, emit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, help="experiment YAML, or its name under experiments/ (quick, lfw-view1, ...)"
    )
    add_set_argument(
        parser,
        "override a key, e.g. --set only=[resnet18] --set train.epochs=1 (repeatable)",
    )
    parser.add_argument("--fresh", action="store_true", help="retrain every model even if a finished run matches")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from facerec.model_benchmark import load_benchmark_config, run_benchmark, summary

    overrides = [*args.overrides, *(["resume=false"] if args.fresh else [])]
    result = run_benchmark(load_benchmark_config(args.config, overrides), progress=not args.json)
    payload = summary(result)
    emit(args, payload, payload["text"])
    return 0
