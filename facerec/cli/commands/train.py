"""Fine-tune an embedder with a contrastive loss (``configs/train/*.yaml`` + ``key=value`` overrides).

The result is a model directory (best-on-validation weights, config, fingerprint,
calibrated threshold) that ``--model PATH`` accepts everywhere; the run is logged
to MLflow. Runs under ``torchrun --nproc_per_node N`` as DistributedDataParallel.
"""

from __future__ import annotations

import argparse
import logging

from facerec.cli.commands import add_json_flag, emit

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="training config YAML (configs/train/quick.yaml, ...)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, dotted for nesting: epochs=3 strategy.kind=lora",
    )
    parser.add_argument("--data", help="data root (LFW root or identity folder) [data.root, $FACEREC_DATA]")
    parser.add_argument("--crops", help="crops folder mirroring the data root [data.crops]")
    parser.add_argument("--model", help="start model: registry name, model directory or MLflow URI [model.name]")
    parser.add_argument("--pretrained", help="weights tag for a registry name, or 'none' [model.pretrained]")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N [device]")
    parser.add_argument("--output", help="base output folder [output]")
    parser.add_argument("--run-name", help="run name: MLflow run and output/<run-name>/ [run_name]")
    parser.add_argument("--resume", action="store_true", help="continue from output/<run-name>/checkpoint.pt")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from facerec.config import load_config
    from facerec.training import TrainConfig, train

    flags = {
        "data.root": args.data,
        "data.crops": args.crops,
        "model.name": args.model,
        "model.pretrained": args.pretrained,
        "device": args.device,
        "output": args.output,
        "run_name": args.run_name,
        "resume": "true" if args.resume else None,
    }
    # Flags are written as overrides (after the KEY=VALUE ones, so they win).
    overrides = [*args.overrides, *(f"{k}={v}" for k, v in flags.items() if v is not None)]
    config = load_config(TrainConfig, args.config, overrides)
    result = train(config)
    if not result.metrics:  # a torchrun rank other than 0: rank 0 reports
        return 0
    payload = {
        "model_dir": str(result.model_dir),
        "threshold": result.threshold,
        "best_epoch": result.metrics.get("best_epoch"),
        "val_accuracy": result.metrics.get("best_val_accuracy"),
        "val_auc": result.metrics.get("best_val_auc"),
        "seconds": round(result.seconds, 1),
        "images_per_s": round(result.images_per_s, 1),
        "mlflow_run_id": result.run_id,
        "history": result.history,
    }
    text = (
        f"model: {result.model_dir}\nthreshold: {result.threshold:.4f}\n"
        f"validation: accuracy {payload['val_accuracy']:.4f}, AUC {payload['val_auc']:.4f} "
        f"(best epoch {payload['best_epoch']})\n"
        f"time: {result.seconds:.1f} s, {result.images_per_s:.1f} training images/s\n"
        f"MLflow run: {result.run_id}"
    )
    emit(args, payload, text)
    return 0
