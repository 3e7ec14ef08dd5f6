"""Speed of ``facerec embed`` against a bare ``model.encode_image`` loop on pre-made tensors.

Same model object, batch size and torch threads, measured in one run. The two
measurements alternate (A B, B A, ...) so that load from other processes on a
shared machine hits both alike; medians of wall-clock images/s (the target:
embed >= 0.9 x bare) and of images per CPU-second (process + DataLoader workers;
less sensitive to other load) are printed and logged to MLflow
(experiment ``facerec-benchmarks``).

    python benchmarks/embed_speed.py --model clip-vit-b-32 --pretrained none --input-size 224 --batch-size 32
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image, ImageOps

from facerec.data.datasets import sample_root
from facerec.data.images import load_image
from facerec.models import Embedder, create_embedder
from facerec.models.inference import configure_threads, default_workers, embed_files, list_images

log = logging.getLogger("benchmarks.embed_speed")

TARGET_RATIO = 0.9
CACHED_CROPS = Path(".cache/crops/lfw-224")


def make_crops(out_dir: Path, count: int, size: int) -> list[Path]:
    """``count`` JPEG crops of ``size`` px from the embedded sample (mirrored copies beyond its 200 images)."""
    sources = list_images(sample_root())
    paths = []
    for i in range(count):
        image = load_image(sources[i % len(sources)]).resize((size, size), Image.Resampling.BICUBIC)
        if (i // len(sources)) % 2:
            image = ImageOps.mirror(image)
        path = out_dir / f"crop_{i:04d}.jpg"
        image.save(path, quality=95)
        paths.append(path)
    return paths


def bare_encoder(embedder: Embedder) -> Callable[[torch.Tensor], torch.Tensor]:
    """``encode_image`` of an open_clip model sharing the embedder's image tower (the backbone otherwise)."""
    if embedder.name != "clip-vit-b-32":
        return embedder.backbone
    import open_clip

    clip = open_clip.create_model("ViT-B-32", pretrained=None, force_image_size=embedder.input_size)
    clip.visual = embedder.backbone  # the very same weights and modules
    return clip.eval().encode_image


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the DataLoader workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def measure(work: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``work()``."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    work()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def bare_loop(encode: Callable[[torch.Tensor], torch.Tensor], batches: Sequence[torch.Tensor]) -> None:
    with torch.inference_mode():
        for batch in batches:
            encode(batch)


def embed_folder(embedder: Embedder, paths: Sequence[Path], batch_size: int, workers: int) -> None:
    result = embed_files(embedder, paths, batch_size=batch_size, num_workers=workers, progress=False)
    if result.failed:
        raise SystemExit(f"unreadable crops: {result.failed[:3]}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="clip-vit-b-32")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument(
        "--rounds", type=int, default=4, help="A/B pairs, order alternating (AB BA ...); medians reported"
    )
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--crops", type=Path, default=None, help=f"crop folder (default: {CACHED_CROPS} if present)")
    parser.add_argument("--no-mlflow", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("facerec", "benchmarks"):
        logging.getLogger(name).setLevel(logging.INFO)

    workers = default_workers() if args.workers is None else args.workers
    threads = configure_threads(workers)
    embedder = create_embedder(args.model, pretrained=args.pretrained, input_size=args.input_size).eval()
    encode = bare_encoder(embedder)

    with tempfile.TemporaryDirectory() as tmp:
        crop_dir = args.crops or (CACHED_CROPS if CACHED_CROPS.is_dir() else None)
        if crop_dir is not None:
            paths = list_images(crop_dir)[: args.images]
        else:
            paths = make_crops(Path(tmp), args.images, args.input_size)
        if len(paths) < args.images:
            log.warning("only %d crops in %s", len(paths), crop_dir)
        pixels = torch.stack([embedder.preprocess(load_image(p)) for p in paths])
        batches = list(((pixels - embedder.mean) / embedder.std).split(args.batch_size))

        runs = {
            "bare": lambda: bare_loop(encode, batches),
            "embed": lambda: embed_folder(embedder, paths, args.batch_size, workers),
        }
        bare_loop(encode, batches[:1])  # warm-up: allocator, kernels, worker start
        embed_folder(embedder, paths[: args.batch_size], args.batch_size, workers)
        load_before = os.getloadavg()[0]
        wall: dict[str, list[float]] = {"bare": [], "embed": []}
        cpu: dict[str, list[float]] = {"bare": [], "embed": []}
        for round_ in range(args.rounds):
            for name in ("bare", "embed") if round_ % 2 == 0 else ("embed", "bare"):  # A B, B A, ...
                seconds, cpu_s = measure(runs[name])
                wall[name].append(len(paths) / seconds)
                cpu[name].append(len(paths) / cpu_s)
            log.info(
                "round %d: bare %.2f images/s, embed %.2f images/s", round_ + 1, wall["bare"][-1], wall["embed"][-1]
            )
        load_after = os.getloadavg()[0]
        bare, embed = wall["bare"], wall["embed"]

    bare_ips, embed_ips = statistics.median(bare), statistics.median(embed)
    ratio = embed_ips / bare_ips
    cpu_ratio = statistics.median(cpu["embed"]) / statistics.median(cpu["bare"])
    paired_ratio = statistics.median(e / b for b, e in zip(bare, embed))  # per A/B pair, then median
    results = {
        "bare_images_per_s": bare_ips,
        "embed_images_per_s": embed_ips,
        "ratio": ratio,
        "paired_ratio": paired_ratio,
        "bare_images_per_cpu_s": statistics.median(cpu["bare"]),
        "embed_images_per_cpu_s": statistics.median(cpu["embed"]),
        "cpu_ratio": cpu_ratio,
        "load_avg_1m_before": load_before,
        "load_avg_1m_after": load_after,
    }
    params = {
        "model": args.model,
        "pretrained": args.pretrained,
        "input_size": args.input_size,
        "batch_size": args.batch_size,
        "images": len(paths),
        "rounds": args.rounds,
        "workers": workers,
        "torch_threads": threads,
        "cores": os.cpu_count(),
        "crops": str(crop_dir or "sample (resized)"),
        "fingerprint": embedder.fingerprint,
    }
    print(
        f"model {embedder.fingerprint}, {len(paths)} crops, batch {args.batch_size}, "
        f"{threads} torch threads, {workers} decoding workers"
    )
    print("per round (bare, embed) images/s: " + ", ".join(f"({b:.2f}, {e:.2f})" for b, e in zip(bare, embed)))
    print(f"bare encode_image: {bare_ips:.2f} images/s (median)")
    print(f"facerec embed:     {embed_ips:.2f} images/s (median)")
    print(
        f"ratio {ratio:.3f} (target >= {TARGET_RATIO}: {'met' if ratio >= TARGET_RATIO else 'NOT met'}); "
        f"1-min load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} cores"
    )
    print(f"median of per-round ratios {paired_ratio:.3f}")
    print(
        f"per CPU-second (robust to other load): bare {results['bare_images_per_cpu_s']:.2f}, "
        f"embed {results['embed_images_per_cpu_s']:.2f} images, ratio {cpu_ratio:.3f}"
    )
    if not args.no_mlflow:
        import mlflow

        from facerec.tracking.runs import mlflow_run

        run_name = f"embed-speed-{args.model}-{args.input_size}px-b{args.batch_size}"
        with mlflow_run("facerec-benchmarks", run_name, params=params, tags={"facerec.weights": args.pretrained}):
            mlflow.log_metrics(results)
            for step, (b, e) in enumerate(zip(bare, embed)):
                mlflow.log_metrics({"round_bare_images_per_s": b, "round_embed_images_per_s": e}, step=step)
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
