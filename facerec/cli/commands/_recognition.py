"""Arguments shared by the recognition commands (enroll, verify, identify, gallery) and their FaceRecognizer.

Light on purpose: ``facerec.recognizer`` (torch, faiss) is imported inside the functions only.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from facerec.cli.commands import add_model_arguments, model_choice
from facerec.faces.config import FACE_CHOICES

MODEL_DESTS = ("model", "pretrained", "input_size")


def add_gallery_argument(parser: argparse.ArgumentParser, default: Any = None) -> None:
    parser.add_argument(
        "--gallery",
        metavar="DIR",
        default=default,
        help="gallery directory [$FACEREC_HOME/gallery, else ~/.local/share/facerec/gallery]",
    )


def add_face_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--face",
        choices=FACE_CHOICES,
        default="central",
        help="which face to use in a photo with several: the central one (default) or the largest",
    )
    parser.add_argument(
        "--no-detect",
        dest="detect",
        action="store_false",
        help="the images are face crops already: skip face detection",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images per detection/embedding batch")


def add_threshold_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="cosine-similarity threshold (default: the model's calibrated threshold)",
    )


def add_gallery_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model`` etc. where a gallery is involved: without them, the gallery's own model is used."""
    add_model_arguments(parser)
    parser.epilog = (
        "Without --model/--pretrained/--input-size the model the gallery was enrolled with is used; "
        "a new gallery gets $FACEREC_MODEL (default dlib-resnet)."
    )


def recognizer_from_args(args: argparse.Namespace):  # -> FaceRecognizer (lazy import keeps --help fast)
    """A FaceRecognizer from the command's arguments (model, gallery, face policy, threshold).

    Named flags choose the model; without them the recognizer resolves it (the gallery's
    model, else $FACEREC_MODEL, else the default: see ``facerec.models.resolve``).
    Commands without a gallery (verify) resolve it right here.
    """
    from facerec.gallery.gallery import default_gallery_dir
    from facerec.gallery.recognizer import FaceRecognizer

    gallery = Path(args.gallery).expanduser() if getattr(args, "gallery", None) else default_gallery_dir()
    # Without a gallery (verify) the gallery's model has no say: resolve the flags right here.
    model = args.model if hasattr(args, "gallery") else model_choice(args)
    return FaceRecognizer(
        model,
        pretrained=args.pretrained,
        input_size=args.input_size,
        device=getattr(args, "device", "cpu"),
        gallery=gallery,
        face=getattr(args, "face", "central"),
        detect=getattr(args, "detect", True),
        threshold=getattr(args, "threshold", None),
        batch_size=getattr(args, "batch_size", 32),
        threads=getattr(args, "threads", 0),
    )
