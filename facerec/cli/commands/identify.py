"""Find who a photo shows in the gallery (open set: a stranger is not matched).

Candidates are identities ranked by their best-matching image; the top one is
the answer only if its score reaches the threshold (the model's calibrated one
unless --threshold is given), else "identity" is null.
"""

from __future__ import annotations

import argparse

from facerec.cli.commands import add_json_flag, emit
from facerec.cli.commands._recognition import (
    add_face_arguments,
    add_gallery_argument,
    add_gallery_model_arguments,
    add_threshold_argument,
    recognizer_from_args,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("--top-k", type=int, default=5, help="number of candidate identities to list")
    add_threshold_argument(parser)
    add_gallery_argument(parser)
    add_face_arguments(parser)
    add_gallery_model_arguments(parser)
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from facerec.errors import FacerecError

    if args.top_k < 1:
        raise FacerecError("--top-k must be at least 1")
    with recognizer_from_args(args) as recognizer:
        result = recognizer.identify(args.image, top_k=args.top_k, threshold=args.threshold)
    if result.identity is None:
        best = result.candidates[0]
        text = f"unknown person (closest: {best.identity}, score {best.score:.4f} < threshold {result.threshold:.4f})"
    else:
        text = f"{result.identity} (score {result.score:.4f} >= threshold {result.threshold:.4f})"
    emit(args, result.to_dict(), text)
    return 0
