"""Say whether two photos show the same person: cosine score of their faces against a threshold.

The threshold is the model's calibrated one (trained model directories carry it)
unless --threshold is given. Prints {"same", "score", "threshold", "faces"}.
"""

from __future__ import annotations

import argparse

from facerec.cli.commands import add_json_flag, add_model_arguments, emit
from facerec.cli.commands._recognition import add_face_arguments, add_threshold_argument, recognizer_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image1", metavar="IMAGE1")
    parser.add_argument("image2", metavar="IMAGE2")
    add_threshold_argument(parser)
    add_face_arguments(parser)
    add_model_arguments(parser)
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    with recognizer_from_args(args) as recognizer:
        result = recognizer.verify(args.image1, args.image2, threshold=args.threshold)
        payload = {**result.to_dict(), "model": recognizer.embedder.fingerprint}
    verdict = "same person" if result.same else "different people"
    emit(args, payload, f"{verdict} (score {result.score:.4f}, threshold {result.threshold:.4f})")
    return 0
