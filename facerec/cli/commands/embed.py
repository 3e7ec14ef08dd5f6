"""Embed every image under DIR into FILE.npy (float32, one L2-normalised row per image).

Next to it: FILE.paths.txt (the image of each row, relative to DIR) and FILE.json
(model name, fingerprint, dimension, skipped files). Unreadable images are skipped
and reported (--strict makes them an error); nothing is written on failure.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from facerec.cli.commands import add_json_flag, add_model_arguments, emit, model_from_args

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", help="folder of face crops (searched recursively)")
    add_model_arguments(parser)
    parser.add_argument(
        "--out", required=True, metavar="FILE.npy", help="output array; .paths.txt and .json go next to it"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: from the core count)")
    parser.add_argument("--flip", action="store_true", help="average each embedding with its mirrored image's")
    parser.add_argument("--strict", action="store_true", help="fail on an unreadable image instead of skipping it")
    add_json_flag(parser)


def output_paths(out: str | Path) -> tuple[Path, Path, Path]:
    """FILE.npy, FILE.paths.txt, FILE.json for ``--out FILE[.npy]``."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix == ".npy" else out
    return (
        stem.with_name(stem.name + ".npy"),
        stem.with_name(stem.name + ".paths.txt"),
        stem.with_name(stem.name + ".json"),
    )


def run(args: argparse.Namespace) -> int:
    import time

    import numpy as np
    import torch

    from facerec.errors import ConfigError, DataError, ImageError
    from facerec.models.inference import configure_threads, default_workers, embed_files, list_images

    root = Path(args.directory)
    npy_path, paths_path, meta_path = output_paths(args.out)
    if npy_path.is_dir() or npy_path.parent.is_file():
        raise ConfigError(f"--out {args.out}: not a writable file path")
    if args.batch_size < 1 or (args.workers is not None and args.workers < 0):
        raise ConfigError("--batch-size must be >= 1 and --workers >= 0")
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        raise ConfigError(f"--device {args.device}: not a torch device (cpu, cuda, cuda:1)") from exc
    images = list_images(root)
    if not images:
        raise DataError(f"no images under {root}")
    unlisted = [p for p in images if "\n" in str(p.relative_to(root)) or "\r" in str(p.relative_to(root))]
    images = [p for p in images if p not in unlisted]
    workers = default_workers(device=device) if args.workers is None else args.workers
    configure_threads(workers)
    embedder = model_from_args(args)

    start = time.perf_counter()
    result = embed_files(embedder, images, batch_size=args.batch_size, num_workers=workers, flip=args.flip)
    seconds = time.perf_counter() - start
    skipped = [(p, f"{p}: file name contains a line break") for p in unlisted] + result.failed
    if skipped and (args.strict or not result.paths):
        shown = "; ".join(reason for _, reason in skipped[:3]) + (
            f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        )
        raise ImageError(f"{len(skipped)} of {len(images) + len(unlisted)} images under {root} are unreadable: {shown}")
    for _, reason in skipped:
        log.warning("skipped: %s", reason)

    relative = [p.relative_to(root).as_posix() for p in result.paths]
    meta = {
        "model": embedder.name,
        "fingerprint": embedder.fingerprint,
        "embedding_dim": embedder.embedding_dim,
        "input_size": embedder.input_size,
        "pretrained": embedder.spec.pretrained,
        "flip": args.flip,
        "root": str(root.resolve()),
        "count": len(relative),
        "skipped": [{"path": p.relative_to(root).as_posix(), "reason": reason} for p, reason in skipped],
    }
    npy_path.parent.mkdir(parents=True, exist_ok=True)
    _write_together(
        {
            npy_path: lambda f: np.save(f, result.vectors.astype(np.float32)),
            paths_path: lambda f: f.write("".join(f"{r}\n" for r in relative).encode("utf-8")),
            meta_path: lambda f: f.write(json.dumps(meta, indent=2).encode("utf-8")),
        }
    )

    payload = {
        "out": str(npy_path),
        "paths": str(paths_path),
        "meta": str(meta_path),
        **meta,
        "seconds": round(seconds, 3),
        "images_per_s": round(len(relative) / max(seconds, 1e-9), 2),
    }
    text = (
        f"embedded {len(relative)} images from {root} with {embedder.fingerprint} -> {npy_path} "
        f"({len(relative)} x {embedder.embedding_dim}, {payload['images_per_s']} images/s)"
        + (
            f"; skipped {len(skipped)} unreadable: {', '.join(s['path'] for s in meta['skipped'][:5])}"
            if skipped
            else ""
        )
    )
    emit(args, payload, text)
    return 0


def _write_together(writers: dict[Path, Callable[[BinaryIO], object]]) -> None:
    """Write every file through a temporary one, renamed only once all are written: no partial output."""
    from contextlib import ExitStack

    from facerec.errors import DataError
    from facerec.files import atomic_write

    try:
        with ExitStack() as stack:
            for path, write in writers.items():
                write(stack.enter_context(atomic_write(path, "wb", durable=False)))
    except OSError as exc:
        raise DataError(f"cannot write {exc.filename or 'output'}: {exc.strerror or exc}") from exc
