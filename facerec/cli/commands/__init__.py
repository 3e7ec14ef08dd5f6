"""CLI subcommands: one module each, exposing ``add_arguments(parser)`` and ``run(args) -> int``.

Command modules import heavy libraries (torch, faiss, mlflow) inside ``run`` only,
so that building the parser (``facerec --help``) stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

#: name -> (module, one-line help); the order is the order of ``facerec --help``.
COMMANDS: dict[str, tuple[str, str]] = {
    "crop": ("facerec.cli.commands.crop", "detect faces (MTCNN) and write aligned crops"),
    "embed": ("facerec.cli.commands.embed", "embed a folder of crops into an .npy file"),
    "train": ("facerec.cli.commands.train", "fine-tune an embedder with a contrastive loss"),
    "evaluate": ("facerec.cli.commands.evaluate", "evaluate a model on an LFW or folder protocol"),
    "benchmark": ("facerec.cli.commands.benchmark", "train and evaluate several backbones, tracked in MLflow"),
    "enroll": ("facerec.cli.commands.enroll", "enroll identities into a gallery"),
    "verify": ("facerec.cli.commands.verify", "say whether two photos show the same person"),
    "identify": ("facerec.cli.commands.identify", "find who a photo shows in the gallery"),
    "gallery": ("facerec.cli.commands.gallery", "list, show, remove or re-index gallery identities"),
    "serve": ("facerec.cli.commands.serve", "serve verify/identify/enroll as a REST API (FastAPI)"),
    "keys": ("facerec.cli.commands.keys", "add, list or remove the REST API's keys"),
}


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model SPEC`` (registry name, model directory or MLflow URI) and its options.

    Defaults come from ``$FACEREC_MODEL`` / ``$FACEREC_PRETRAINED``, else CLIP ViT-B/32 with
    OpenAI weights (which fails with a clear message where they cannot be fetched).
    """
    parser.add_argument(
        "--model",
        default=os.environ.get("FACEREC_MODEL", "clip-vit-b-32"),
        help="registry name, trained model directory, or MLflow URI (models:/NAME@ALIAS) [$FACEREC_MODEL]",
    )
    parser.add_argument(
        "--pretrained",
        default=os.environ.get("FACEREC_PRETRAINED", "openai"),
        help="for registry names: weights tag (openai, laion2b_s34b_b79k, DEFAULT), local checkpoint path, "
        "or 'none' for random init [$FACEREC_PRETRAINED]",
    )
    parser.add_argument("--input-size", type=int, default=None, help="model input size in pixels")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")


def model_from_args(args: argparse.Namespace):  # -> Embedder (lazy import keeps --help fast)
    from facerec.models import load_model

    options = {"input_size": args.input_size} if args.input_size else {}
    return load_model(args.model, pretrained=args.pretrained, device=args.device, **options)


def emit(args: argparse.Namespace, payload: dict[str, Any], text: str | None = None) -> None:
    """Print ``payload`` as JSON with ``--json``, else ``text`` (or a key: value listing)."""
    if getattr(args, "json", False):
        print(json.dumps(payload, indent=2, default=str))
        return
    if text is None:
        text = "\n".join(f"{k}: {v}" for k, v in payload.items())
    print(text)
    sys.stdout.flush()
