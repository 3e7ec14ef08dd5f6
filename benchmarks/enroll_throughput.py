"""Enrollment throughput of ``facerec enroll --from-dir`` on LFW (images/s, end to end).

    FACEREC_DATA=/path/to/lfw python benchmarks/enroll_throughput.py --identities 500 \
        --model resnet18 --pretrained none --input-size 112

Runs the real command in a fresh process on the first ``--identities`` LFW identity
folders (by name; symlinked into a temporary folder) into a new gallery: read,
MTCNN, crop, embed, SQLite transaction per identity, index. Reports images/s over
the enrollment itself (the command's own clock, model loading included) and over
the whole process (imports too), the CPU seconds per image (comparable across
machine loads), the face counts MTCNN saw, and logs to MLflow
(experiment ``facerec-benchmarks``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from facerec.data.datasets import lfw_images_dir, resolve_data_root

EXPERIMENT = "facerec-benchmarks"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="LFW root [$FACEREC_DATA]")
    parser.add_argument("--identities", type=int, default=500, help="first N identity folders (0: all)")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--input-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-mlflow", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    images_dir = lfw_images_dir(resolve_data_root(args.data))
    folders = sorted(p for p in images_dir.iterdir() if p.is_dir())
    folders = folders[: args.identities] if args.identities else folders
    with tempfile.TemporaryDirectory(prefix="facerec-enroll-") as tmp:
        subset = Path(tmp) / "people"
        subset.mkdir()
        for folder in folders:
            (subset / folder.name).symlink_to(folder, target_is_directory=True)
        command = [
            sys.executable,
            "-m",
            "facerec",
            "-q",
            "enroll",
            "--from-dir",
            str(subset),
            "--skip-errors",
            "--gallery",
            str(Path(tmp) / "gallery"),
            "--model",
            args.model,
            "--pretrained",
            args.pretrained,
            "--input-size",
            str(args.input_size),
            "--batch-size",
            str(args.batch_size),
            "--json",
        ]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # CPU time: comparable across machine loads
    if done.returncode != 0:
        raise SystemExit(f"enroll failed: {done.stderr.strip().splitlines()[-1:]}")
    out = json.loads(done.stdout)
    images = out["added"] + out["skipped"] + len(out["failed"])
    faces = Counter(min(f["faces_found"], 3) for i in out["identities"] for f in i["added"])
    summary = {
        "identities": len(out["identities"]),
        "images": images,
        "added": out["added"],
        "failed": len(out["failed"]),
        "enroll_seconds": out["seconds"],
        "images_per_second": images / out["seconds"],
        "process_seconds": wall,
        "images_per_second_with_startup": images / wall,
        "process_cpu_seconds": usage.ru_utime + usage.ru_stime,
        "cpu_seconds_per_image": (usage.ru_utime + usage.ru_stime) / images,
        "faces_found": {("3+" if k == 3 else str(k)): v for k, v in sorted(faces.items())},
        "model": f"{args.model}@{args.input_size} pretrained={args.pretrained}",
        "batch_size": args.batch_size,
        "cpu_count": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
    }
    print(json.dumps(summary, indent=2))
    if not args.no_mlflow:
        import mlflow

        from facerec.tracking.runs import mlflow_run

        name = f"enroll-throughput-{args.model}-{args.input_size}px-{len(folders)}ids"
        with mlflow_run(
            EXPERIMENT,
            name,
            params={k: v for k, v in vars(args).items() if k != "no_mlflow"},
            tags={"facerec.benchmark": "enroll_throughput", "facerec.data_root": str(images_dir)},
        ):
            mlflow.log_metrics(
                {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            )
            mlflow.log_dict(summary, "enroll_throughput.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
