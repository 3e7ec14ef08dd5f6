"""Detect faces with MTCNN and write aligned, square crops.

SRC is a folder of photos (LFW layout: SRC/<identity>/<file>; any depth works); OUT mirrors
its tree and holds manifest.jsonl (one record per input: status ok/no_face/unreadable, chosen
box, probability, number of faces). Re-running with the same parameters skips finished
images, so an interrupted run resumes. Exit 0 when the run completes, even if some photos
had no face; a missing SRC, a SRC that is not a folder or an unwritable OUT exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from facerec.cli.commands import add_json_flag, emit
from facerec.faces.config import FALLBACKS, POLICIES, DetectorConfig

_DEFAULTS = DetectorConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="folder of photos (identity subfolders)")
    parser.add_argument("out", type=Path, help="output folder for the crops and manifest.jsonl")
    parser.add_argument(
        "--size", type=int, default=_DEFAULTS.image_size, help="crop side in pixels (default: %(default)s)"
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=_DEFAULTS.margin,
        help="fraction of the face box added on each side (default: %(default)s)",
    )
    parser.add_argument(
        "--policy", choices=POLICIES, default=_DEFAULTS.policy, help="which face to keep (default: %(default)s)"
    )
    parser.add_argument(
        "--fallback",
        choices=FALLBACKS,
        default="none",
        help="without a face: skip it (none) or write a centre crop (center) (default: %(default)s)",
    )
    parser.add_argument("--no-align", action="store_true", help="do not rotate faces to level the eyes")
    parser.add_argument("--min-face-size", type=int, default=_DEFAULTS.min_face_size, help="smallest face in pixels")
    parser.add_argument("--device", default=_DEFAULTS.device, help="torch device for MTCNN (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size, help="images per MTCNN batch")
    parser.add_argument("--threads", type=int, default=_DEFAULTS.threads, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from facerec.faces.crop import CropConfig, run_crop

    detector = dataclasses.replace(
        _DEFAULTS,
        image_size=args.size,
        margin=args.margin,
        policy=args.policy,
        align=not args.no_align,
        min_face_size=args.min_face_size,
        device=args.device,
        batch_size=args.batch_size,
        threads=args.threads,
    )
    summary = run_crop(
        args.src, args.out, CropConfig(detector=detector, fallback=args.fallback), progress=not args.no_progress
    )
    payload = summary.as_dict()
    text = (
        f"cropped {payload['total']} images into {args.out} in {payload['seconds']:.1f} s: "
        f"{payload['ok']} ok, {payload['no_face']} without a face ({payload['fallback']} centre-cropped), "
        f"{payload['failed']} unreadable, {payload['skipped']} already done"
    )
    emit(args, payload, text)
    return 0
