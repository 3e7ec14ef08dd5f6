"""Enrollment throughput: ``facerec enroll --from-dir`` against ``facerec crop`` + ``facerec embed``.

    FACEREC_DATA=/path/to/lfw python benchmarks/enroll_throughput.py --images 200 \
        --model resnet18 --pretrained none --input-size 112 [--threads 0] [--repeats 1]

Takes the first LFW identity folders (by name) until ``--images`` photos are reached,
and runs, in one run on those same photos with the same model, each as a fresh
process (imports and model loading included, as a user would run them):

1. ``facerec crop`` (MTCNN; crops at the model's input size) then ``facerec embed``
   on the crops: the two stages run separately;
2. ``facerec enroll --from-dir`` into a new gallery: read, MTCNN, crop, embed, one
   SQLite transaction per identity, the FAISS index.

Prints images/s of each and the ratio enroll / (crop + embed), both over wall time
and over CPU seconds (the CPU ratio is the one to trust on a loaded machine), with
the load average; logs to MLflow (experiment ``facerec-benchmarks``). Target: a
ratio >= 0.8. With ``--repeats`` the three commands run interleaved and medians are
reported. Without ``--model`` the CLI's default model is used.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from facerec.data.datasets import lfw_images_dir, resolve_data_root

EXPERIMENT = "facerec-benchmarks"
TARGET_RATIO = 0.8


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="LFW root [$FACEREC_DATA]")
    parser.add_argument("--images", type=int, default=200, help="whole identity folders until this many photos")
    parser.add_argument("--model", default=None, help="registry name or model directory (default: the CLI's)")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="MTCNN torch threads for crop and enroll (0: default)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved runs of the three commands (medians)")
    parser.add_argument("--no-mlflow", action="store_true")
    return parser.parse_args(argv)


def pick_images(images_dir: Path, wanted: int, dest: Path) -> tuple[int, int]:
    """Symlink the first identity folders (by name) into ``dest`` until ``wanted`` photos; (identities, photos)."""
    dest.mkdir()
    identities = photos = 0
    for folder in sorted(p for p in images_dir.iterdir() if p.is_dir()):
        if photos >= wanted:
            break
        (dest / folder.name).mkdir()  # real folders: facerec crop does not descend into linked ones
        identities += 1
        for photo in sorted(folder.iterdir()):
            (dest / folder.name / photo.name).symlink_to(photo)
            photo.read_bytes()  # into the page cache: no command pays the cold read alone
            photos += 1
    return identities, photos


def model_flags(args: argparse.Namespace) -> list[str]:
    flags = []
    for flag, value in (("--model", args.model), ("--pretrained", args.pretrained), ("--input-size", args.input_size)):
        if value is not None:
            flags += [flag, str(value)]
    return flags


def crop_size(args: argparse.Namespace) -> int:
    """The model's input size: enroll crops at it, so ``facerec crop`` does too."""
    if args.input_size:
        return args.input_size
    from facerec.models import load_model

    options = {"pretrained": args.pretrained} if args.pretrained else {}
    return load_model(args.model or os.environ.get("FACEREC_MODEL", "clip-vit-b-32"), **options).input_size


def timed(command: list[str]) -> dict[str, Any]:
    """Run one facerec command in a fresh process: its wall and CPU seconds and its --json output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "facerec", "-q", *command, "--json"], capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # DataLoader workers included: reaped by the child
    if done.returncode != 0:
        raise SystemExit(f"facerec {command[0]} failed: {done.stderr.strip().splitlines()[-1:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "out": json.loads(done.stdout)}


def one_round(work: Path, people: Path, args: argparse.Namespace, size: int) -> dict[str, Any]:
    work.mkdir()
    batch = ["--batch-size", str(args.batch_size)]
    crop = timed(
        ["crop", str(people), str(work / "crops"), "--size", str(size), "--threads", str(args.threads), *batch]
    )
    embed = timed(["embed", str(work / "crops"), "--out", str(work / "vectors.npy"), *model_flags(args), *batch])
    enroll = timed(
        [
            "enroll",
            "--from-dir",
            str(people),
            "--skip-errors",
            "--gallery",
            str(work / "gallery"),
            *(["--threads", str(args.threads)] if args.threads else []),
            *model_flags(args),
            *batch,
        ]
    )
    return {
        "crop_wall": crop["wall"],
        "crop_cpu": crop["cpu"],
        "embed_wall": embed["wall"],
        "embed_cpu": embed["cpu"],
        "enroll_wall": enroll["wall"],
        "enroll_cpu": enroll["cpu"],
        "crop_faces": crop["out"]["ok"],
        "embedded": embed["out"]["count"],
        "enrolled": enroll["out"]["added"],
        "enroll_failed": len(enroll["out"]["failed"]),
        "model": enroll["out"]["model"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    images_dir = lfw_images_dir(resolve_data_root(args.data))
    size = crop_size(args)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="facerec-enroll-") as tmp:
        identities, photos = pick_images(images_dir, args.images, Path(tmp) / "people")
        rounds = [one_round(Path(tmp) / f"round{r}", Path(tmp) / "people", args, size) for r in range(args.repeats)]
    median = {k: statistics.median(r[k] for r in rounds) for k in rounds[0] if isinstance(rounds[0][k], float)}
    separate_wall = median["crop_wall"] + median["embed_wall"]
    separate_cpu = median["crop_cpu"] + median["embed_cpu"]
    summary = {
        "identities": identities,
        "images": photos,
        "model": rounds[0]["model"],
        "crop_size": size,
        "faces": {k: rounds[0][k] for k in ("crop_faces", "embedded", "enrolled", "enroll_failed")},
        "crop_images_per_s": photos / median["crop_wall"],
        "embed_images_per_s": photos / median["embed_wall"],
        "crop_plus_embed_images_per_s": photos / separate_wall,
        "enroll_images_per_s": photos / median["enroll_wall"],
        "ratio_wall": separate_wall / median["enroll_wall"],
        "ratio_cpu": separate_cpu / median["enroll_cpu"],
        "target_ratio": TARGET_RATIO,
        **{f"{k}_s": round(v, 2) for k, v in median.items()},
        "repeats": args.repeats,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_avg_before": [round(v, 2) for v in load_before],
        "load_avg_after": [round(v, 2) for v in os.getloadavg()],
    }
    print(json.dumps(summary, indent=2))
    print(
        f"enroll {summary['enroll_images_per_s']:.2f} img/s vs crop + embed {summary['crop_plus_embed_images_per_s']:.2f}"
        f" img/s: ratio {summary['ratio_wall']:.2f} (wall), {summary['ratio_cpu']:.2f} (CPU); target >= {TARGET_RATIO}"
    )
    if not args.no_mlflow:
        import mlflow

        from facerec.tracking.runs import mlflow_run

        name = f"enroll-throughput-{Path(args.model or 'default').name}-{size}px-{photos}img"
        with mlflow_run(
            EXPERIMENT,
            name,
            params={k: v for k, v in vars(args).items() if k != "no_mlflow"},
            tags={"facerec.benchmark": "enroll_throughput", "facerec.data_root": str(images_dir)},
        ):
            mlflow.log_metrics(
                {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            )
            mlflow.log_dict({"summary": summary, "rounds": rounds}, "enroll_throughput.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
