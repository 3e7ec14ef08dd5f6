"""CLI subcommands: one module each, exposing ``add_arguments(parser)`` and ``run(args) -> int``.

Command modules import heavy libraries (torch, faiss, mlflow) inside ``run`` only,
so that building the parser (``facerec --help``) stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

#: name -> (module, one-line help); the order is the order of ``facerec --help``.
COMMANDS: dict[str, tuple[str, str]] = {
    "crop": ("facerec.cli.commands.crop", "detect faces (MTCNN) and write aligned crops"),
    "embed": ("facerec.cli.commands.embed", "embed a folder of crops into an .npy file"),
    "train": ("facerec.cli.commands.train", "fine-tune an embedder with a contrastive loss"),
    "evaluate": ("facerec.cli.commands.evaluate", "evaluate a model on an LFW or folder protocol"),
    "benchmark": ("facerec.cli.commands.benchmark", "train and evaluate several backbones, tracked in MLflow"),
    "calibrate": ("facerec.cli.commands.calibrate", "calibrate a model's threshold on LFW View 1 train pairs"),
    "enroll": ("facerec.cli.commands.enroll", "enroll identities into a gallery"),
    "verify": ("facerec.cli.commands.verify", "say whether two photos show the same person"),
    "identify": ("facerec.cli.commands.identify", "find who a photo shows in the gallery"),
    "gallery": ("facerec.cli.commands.gallery", "list, show, remove or re-index gallery identities"),
    "serve": ("facerec.cli.commands.serve", "serve verify/identify/enroll as a REST API (FastAPI)"),
    "keys": ("facerec.cli.commands.keys", "add, list or remove the REST API's keys"),
}


def add_set_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--set KEY=VALUE`` (repeatable): config overrides, collected in ``args.overrides``."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_text)


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model SPEC`` (registry name, model directory, MLflow URI, onnx:PATH) and its options.

    Left unset, ``facerec.models.resolve`` decides (``$FACEREC_MODEL`` / ``$FACEREC_PRETRAINED``,
    else dlib-resnet, which works offline and has a calibrated threshold).
    """
    from facerec.models.resolve import model_help

    helps = model_help()
    parser.add_argument("--model", default=None, help=helps["model"])
    parser.add_argument("--pretrained", default=None, help=helps["pretrained"])
    parser.add_argument("--input-size", type=int, default=None, help="model input size in pixels")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")


def model_choice(args: argparse.Namespace):  # -> ModelChoice
    """The model the command's flags (or the environment, or the default) name."""
    from facerec.models.resolve import resolve_model

    return resolve_model(args.model, args.pretrained, args.input_size)


def model_from_args(args: argparse.Namespace):  # -> Embedder (lazy import keeps --help fast)
    return model_choice(args).load(args.device)


def emit(args: argparse.Namespace, payload: dict[str, Any], text: str | None = None) -> None:
    """Print ``payload`` as JSON with ``--json``, else ``text`` (or a key: value listing)."""
    if getattr(args, "json", False):
        print(json.dumps(payload, indent=2, default=str))
        return
    if text is None:
        text = "\n".join(f"{k}: {v}" for k, v in payload.items())
    print(text)
    sys.stdout.flush()
