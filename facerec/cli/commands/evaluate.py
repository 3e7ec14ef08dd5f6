"""Evaluate a model on an LFW or identity-folder protocol; print the metrics, log them and the plots to MLflow.

Protocols: lfw-view1 (pairsDevTest + peopleDevTest identities), lfw-view2 (the 10-fold
pairs.txt benchmark, for models not trained on LFW), folder (any identity-folder data
set, pairs drawn with a fixed seed). Raw photos are cropped first (MTCNN, cached in --crops).
"""

from __future__ import annotations

import argparse

from facerec.cli.commands import add_json_flag, add_model_arguments, add_set_argument, emit, model_choice
from facerec.evaluation.config import PROTOCOLS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--config", help="evaluation settings YAML (EvalConfig keys, e.g. configs/evaluate.yaml)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default=None, help="evaluation protocol [folder]")
    parser.add_argument(
        "--data", default=None, help="LFW root or identity folder [$FACEREC_DATA; folder: embedded sample]"
    )
    parser.add_argument("--crops", default=None, help="crop cache folder [.cache/crops/<data-name>-<size>]")
    parser.add_argument(
        "--no-crop", dest="crop", action="store_false", default=None, help="the data already holds face crops"
    )
    parser.add_argument(
        "--flip", action="store_true", default=None, help="average embeddings of each image and its mirror"
    )
    add_set_argument(
        parser,
        "any other evaluation option (the keys of configs/evaluate.yaml), "
        "e.g. --set n_pairs=1000 --set holdout=0.4 (repeatable)",
    )
    parser.add_argument("--experiment", default="facerec-evaluate", help="MLflow experiment [facerec-evaluate]")
    parser.add_argument("--no-track", dest="track", action="store_false", help="do not log to MLflow")
    add_json_flag(parser)


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """Explicit flags as ``key=value`` overrides (they win over --set)."""
    flags = {"protocol": args.protocol, "data": args.data, "crops": args.crops, "crop": args.crop, "flip": args.flip}
    return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in flags.items() if v is not None]


def run(args: argparse.Namespace) -> int:
    from facerec.config import load_config
    from facerec.evaluation.protocols import EvalConfig, evaluate, format_metrics

    config = load_config(EvalConfig, args.config, [*args.overrides, *flag_overrides(args)])
    model = model_choice(args)
    result = evaluate(
        model.model,
        config,
        pretrained=model.pretrained,
        device=args.device,
        input_size=model.input_size,
        experiment=args.experiment,
        track=args.track,
        progress=not args.json,
    )
    emit(args, result.summary(), format_metrics(result))
    return 0
