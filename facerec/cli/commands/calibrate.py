"""Calibrate a model's verification threshold on LFW View 1 train pairs and write a model directory.

  facerec calibrate --model dlib-resnet --data LFW_ROOT --crops CROPS --out models/dlib-calibrated

Only ``pairsDevTrain.txt`` is used (never DevTest or View 2). The directory's
``model.json`` holds the threshold and the data it was calibrated on; ``--model DIR``
then works everywhere (verify and identify use its threshold).
"""

from __future__ import annotations

import argparse

from facerec.cli.commands import add_json_flag, add_model_arguments, emit, model_choice


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_model_arguments(parser)
    parser.add_argument("--data", default=None, help="LFW root (its pairsDevTrain.txt is used) [$FACEREC_DATA]")
    parser.add_argument("--crops", default=None, help="crop cache folder [.cache/crops/<data-name>-224]")
    parser.add_argument("--no-crop", dest="crop", action="store_false", help="the LFW images are face crops already")
    parser.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    parser.add_argument(
        "--threshold-file",
        default=None,
        metavar="FILE.json",
        help="also write the small threshold JSON a frozen model ships (facerec/models/thresholds/NAME.json)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per embedding batch")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from facerec.errors import ConfigError
    from facerec.models import is_model_dir, save_model_dir
    from facerec.models.calibration import calibrate, write_threshold_file

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_model_dir(out))):
        raise ConfigError(f"--out {out}: exists and is not an empty folder or a model directory")
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    choice = model_choice(args)
    embedder = choice.load(args.device)
    result = calibrate(embedder, args.data, args.crops, args.crop, args.batch_size, progress=not args.json)
    save_model_dir(
        embedder,
        out,
        threshold=result.threshold,
        config={"calibration": result.to_dict(), "model": choice.record()},
        info={"calibration": result.to_dict()},
    )
    if args.threshold_file:
        write_threshold_file(result, args.threshold_file)
    payload = {"out": str(out), **result.to_dict()}
    emit(
        args,
        payload,
        f"{result.model}: threshold {result.threshold:.4f} (accuracy {result.train_accuracy:.4f} on "
        f"{result.n_pairs} {result.pairs} pairs, 10-fold {result.kfold_accuracy:.4f}, AUC {result.auc:.4f}) -> {out}",
    )
    return 0
