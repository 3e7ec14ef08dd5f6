"""Enroll identities into a gallery.

  facerec enroll NAME IMAGE... [--gallery DIR]      photos of one person (all or nothing)
  facerec enroll --from-dir DIR [--gallery DIR]     one subfolder per identity (one transaction each)

Raw photos go through the face detector; a photo without a face is an error
(with --from-dir, --skip-errors skips and reports it instead). With --from-dir the
photos of many identities are detected and embedded together, --batch-size at a
time, and each identity is committed as soon as its photos are done. A photo already
in the gallery (same file content) is skipped, never stored twice.
"""

from __future__ import annotations

import argparse
import time

from facerec.cli.commands import add_json_flag, emit
from facerec.cli.commands._recognition import (
    add_face_arguments,
    add_gallery_argument,
    add_gallery_model_arguments,
    recognizer_from_args,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("name", nargs="?", help="identity name (with IMAGE...)")
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="photos of that person")
    parser.add_argument("--from-dir", metavar="DIR", help="enroll every subfolder of DIR as an identity")
    parser.add_argument("--skip-errors", action="store_true", help="--from-dir: skip unreadable or faceless photos")
    parser.add_argument("--limit", type=int, default=None, help="--from-dir: only the first N identities (by name)")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads for face detection (0: torch's default)"
    )
    add_gallery_argument(parser)
    add_face_arguments(parser)
    add_gallery_model_arguments(parser)
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from facerec.errors import FacerecError

    has_name = args.name is not None  # an empty NAME is the gallery's to refuse, with its own message
    if bool(args.from_dir) == has_name:
        raise FacerecError("give either NAME IMAGE... or --from-dir DIR")
    if has_name and not args.images:
        raise FacerecError(f"no images given for {args.name!r}: facerec enroll NAME IMAGE...")
    start = time.perf_counter()
    failed: list[dict[str, str]] = []
    with recognizer_from_args(args) as recognizer:
        if args.from_dir:
            from facerec.gallery.enrollment import identity_folders

            total = sum(len(paths) for _, paths in identity_folders(args.from_dir, args.limit))
            # photos across identities share batches; the bar shows images/s and the ETA
            with tqdm(total=total, unit="img", desc="enroll", disable=None, dynamic_ncols=True) as bar:
                results, failed = recognizer.enroll_folder(
                    args.from_dir, skip_errors=args.skip_errors, progress=bar.update, limit=args.limit
                )
        else:
            with tqdm(total=len(args.images), unit="img", desc=f"enroll {args.name}", disable=None) as bar:
                results = [recognizer.enroll(args.name, args.images, progress=bar.update)]
        model = recognizer.model_record()
    seconds = time.perf_counter() - start
    added = sum(len(r.added) for r in results)
    skipped = sum(len(r.skipped) for r in results)
    payload = {
        "gallery": str(recognizer.gallery_path),
        "model": model.fingerprint,
        "face_policy": args.face if args.detect else "none",
        "identities": [r.to_dict() for r in results],
        "added": added,
        "skipped": skipped,
        "failed": failed,
        "seconds": round(seconds, 3),
        "images_per_second": round((added + skipped + len(failed)) / seconds, 2) if seconds else None,
    }
    lines = [
        f"{r.identity}: {len(r.added)} added"
        + (f", {len(r.skipped)} skipped ({r.skipped[0]['reason']})" if r.skipped else "")
        for r in results
    ]
    lines += [f"failed: {f['image']}: {f['error']}" for f in failed]
    lines.append(
        f"{len(results)} identities, {added} images added, {skipped} skipped, {len(failed)} failed "
        f"into {recognizer.gallery_path} in {seconds:.1f} s"
    )
    emit(args, payload, "\n".join(lines))
    return 0
