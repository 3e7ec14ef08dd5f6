"""Detect faces with MTCNN and write aligned, square crops.

SRC is a folder of photos (LFW layout: SRC/<identity>/<file>; any depth works; an empty
SRC, '', means the image folder of $FACEREC_DATA); OUT mirrors its tree and holds
manifest.jsonl (one record per input: status ok/no_face/unreadable, chosen box,
probability, number of faces). Settings come from --config (a CropConfig YAML such as
configs/crop.yaml), then --set KEY=VALUE, then the flags. Re-running with the same
parameters skips finished images, so an interrupted run resumes. Exit 0 when the run
completes, even if some photos had no face; a missing SRC, a SRC that is not a folder or
an unwritable OUT exit 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from facerec.cli.commands import add_json_flag, add_set_argument, emit
from facerec.faces.config import FALLBACKS, POLICIES, CropConfig, DetectorConfig

_DETECTOR = DetectorConfig()
_CROP = CropConfig()
#: flag dest -> config key; a flag left unset keeps the config's value.
FLAG_KEYS = {
    "size": "detector.image_size",
    "margin": "detector.margin",
    "policy": "detector.policy",
    "fallback": "fallback",
    "align": "detector.align",
    "min_face_size": "detector.min_face_size",
    "device": "detector.device",
    "batch_size": "detector.batch_size",
    "threads": "detector.threads",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="folder of photos (identity subfolders); '': the image folder of $FACEREC_DATA")
    parser.add_argument("out", type=Path, help="output folder for the crops and manifest.jsonl")
    parser.add_argument("--config", help="crop settings YAML (CropConfig keys, e.g. configs/crop.yaml)")
    add_set_argument(
        parser,
        "override a setting, e.g. --set detector.factor=0.8 --set jpeg_quality=90 (repeatable)",
    )
    parser.add_argument("--size", type=int, help=f"crop side in pixels (default: {_DETECTOR.image_size})")
    parser.add_argument(
        "--margin", type=float, help=f"fraction of the face box added on each side (default: {_DETECTOR.margin})"
    )
    parser.add_argument("--policy", choices=POLICIES, help=f"which face to keep (default: {_DETECTOR.policy})")
    parser.add_argument(
        "--fallback",
        choices=FALLBACKS,
        help=f"without a face: skip it (none) or write a centre crop (center) (default: {_CROP.fallback})",
    )
    parser.add_argument(
        "--no-align", dest="align", action="store_false", default=None, help="do not rotate faces to level the eyes"
    )
    parser.add_argument(
        "--min-face-size", type=int, help=f"smallest face in pixels (default: {_DETECTOR.min_face_size})"
    )
    parser.add_argument("--device", help=f"torch device for MTCNN (default: {_DETECTOR.device})")
    parser.add_argument("--batch-size", type=int, help=f"images per MTCNN batch (default: {_DETECTOR.batch_size})")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default 0: torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_json_flag(parser)


def crop_config_from_args(args: argparse.Namespace) -> CropConfig:
    """--config, then --set, then the flags given (flags win)."""
    from facerec.config import load_config

    flags = [
        f"{key}={str(value).lower() if isinstance(value, bool) else value}"
        for dest, key in FLAG_KEYS.items()
        if (value := getattr(args, dest)) is not None
    ]
    return load_config(CropConfig, args.config, [*args.overrides, *flags])


def run(args: argparse.Namespace) -> int:
    from facerec.data.datasets import lfw_images_dir, resolve_data_root
    from facerec.faces.crop import run_crop

    config = crop_config_from_args(args)
    src = Path(args.src).expanduser() if args.src else lfw_images_dir(resolve_data_root())
    summary = run_crop(src, args.out, config, progress=not args.no_progress)
    payload = summary.as_dict()
    text = (
        f"cropped {payload['total']} images into {args.out} in {payload['seconds']:.1f} s: "
        f"{payload['ok']} ok, {payload['no_face']} without a face ({payload['fallback']} centre-cropped), "
        f"{payload['failed']} unreadable, {payload['skipped']} already done"
    )
    emit(args, payload, text)
    return 0
