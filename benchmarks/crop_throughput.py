"""Crop-stage throughput: MTCNN detect + choose + align + write, images/s on LFW (or any photo folder).

    FACEREC_DATA=/path/to/lfw python benchmarks/crop_throughput.py --out .cache/crops/lfw-224 --fallback center

Prints images/s (over the images actually cropped; cache hits are excluded and reported
separately), the face-found rate and the fallback count, and logs them to MLflow
(experiment ``facerec-benchmarks``; tracking URI ``$MLFLOW_TRACKING_URI`` or sqlite:///mlflow.db).
A rerun into the same ``--out`` measures the cache: everything is skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from facerec.config import to_dict
from facerec.data.datasets import lfw_images_dir, resolve_data_root
from facerec.errors import FacerecError
from facerec.faces.config import FALLBACKS, POLICIES, DetectorConfig
from facerec.faces.crop import CropConfig, list_inputs, read_manifest, run_crop


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = DetectorConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="LFW root or photo folder [$FACEREC_DATA]")
    parser.add_argument("--out", type=Path, required=True, help="crop output folder (its cache is reused)")
    parser.add_argument("--limit", type=int, default=None, help="crop only the first N images (sorted)")
    parser.add_argument("--fallback", choices=FALLBACKS, default="none")
    parser.add_argument("--size", type=int, default=defaults.image_size)
    parser.add_argument("--margin", type=float, default=defaults.margin)
    parser.add_argument("--policy", choices=POLICIES, default=defaults.policy)
    parser.add_argument("--no-align", action="store_true")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-mlflow", action="store_true", help="print only, do not log to MLflow")
    return parser.parse_args(argv)


def manifest_stats(out: Path, keys: set[str]) -> dict[str, int]:
    """How many of this run's inputs had 0, 1, 2+ faces (from the manifest)."""
    records, _ = read_manifest(out)
    counts = Counter(min(records[k].get("n_faces", 0), 2) for k in keys if k in records)
    return {"images_no_face_detected": counts[0], "images_one_face": counts[1], "images_multi_face": counts[2]}


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        src = lfw_images_dir(resolve_data_root(args.data))
        detector = dataclasses.replace(
            DetectorConfig(),
            image_size=args.size,
            margin=args.margin,
            policy=args.policy,
            align=not args.no_align,
            batch_size=args.batch_size,
            device=args.device,
            threads=args.threads,
        )
        config = CropConfig(detector=detector, fallback=args.fallback)
        paths = list_inputs(src, args.out, None)
        if args.limit:
            paths = paths[: args.limit]
        load_before = os.getloadavg()[0]
        summary = run_crop(src, args.out, config, paths=paths, progress=True)
    except FacerecError as exc:
        print(f"crop_throughput: error: {exc}", file=sys.stderr)
        return exc.exit_code
    cropped = summary.total - summary.skipped
    result = {
        **summary.as_dict(),
        "cropped": cropped,
        "images_per_s": round(cropped / summary.seconds, 2) if cropped else 0.0,
        "face_found_rate": round(summary.ok / summary.total, 4) if summary.total else 0.0,
        **manifest_stats(args.out, {p.relative_to(src).as_posix() for p in paths}),
        "torch_threads": args.threads or torch.get_num_threads(),
        "load_avg_1m_before": round(load_before, 2),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result, indent=2))
    print(
        f"crop throughput: {result['images_per_s']} images/s over {cropped} cropped images "
        f"({summary.skipped} cached, {summary.seconds:.1f} s); face found in {result['face_found_rate']:.2%} "
        f"({summary.ok}/{summary.total}); fallback crops: {summary.fallback}; unreadable: {summary.failed}"
    )
    if not args.no_mlflow:
        log_to_mlflow(args, config, src, result)
    return 0


def log_to_mlflow(args: argparse.Namespace, config: CropConfig, src: Path, result: dict) -> None:
    import mlflow

    from facerec.tracking.runs import mlflow_run

    run_name = f"crop-{config.detector.image_size}px-{config.detector.policy}-m{config.detector.margin}"
    params = {
        "crop": to_dict(config),
        "limit": args.limit,
        "out": str(args.out),
        "cpu_count": os.cpu_count(),
        "torch_threads": result["torch_threads"],
    }
    tags = {"benchmark": "crop_throughput", "data_root": str(src), "cache_hit_run": result["cropped"] == 0}
    with mlflow_run("facerec-benchmarks", run_name, params=params, tags=tags):
        mlflow.log_metrics({k: float(v) for k, v in result.items() if isinstance(v, (int, float))})
        mlflow.log_dict(result, "crop_throughput.json")


if __name__ == "__main__":
    sys.exit(main())
