"""Pipeline entry point ``build_gallery`` (MLproject): enroll an identity-folder data set into a gallery.

    python -m pipelines.build_gallery [--config configs/gallery.yaml] [data=PATH] [gallery=DIR] [limit=500]
        [model.name=resnet18 model.pretrained=none model.input_size=112] [index.kind=hnsw index.params.m=32]

Each identity is one transaction; the run reports throughput (images/s) and the
gallery's stats, and logs them to MLflow (experiment ``facerec-gallery``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facerec.config import check_config
from facerec.faces.config import FACE_CHOICES, FaceChoice
from facerec.gallery.config import IndexConfig
from pipelines._job import run_job

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "gallery.yaml"
EXPERIMENT = "facerec-gallery"


@dataclass(frozen=True)
class ModelChoice:
    name: str = "dlib-resnet"
    pretrained: str | None = None
    input_size: int | None = None
    device: str = "cpu"


@dataclass(frozen=True)
class GalleryBuild:
    """What to enroll (``data`` None: the embedded sample), into which gallery, with which model and index."""

    data: str | None = None
    gallery: str | None = None
    limit: int | None = None
    face: FaceChoice = "central"
    detect: bool = True
    skip_errors: bool = True
    batch_size: int = 32
    progress: bool = True
    track: bool = True
    model: ModelChoice = field(default_factory=ModelChoice)
    index: IndexConfig = field(default_factory=IndexConfig)

    def __post_init__(self) -> None:
        check_config(
            self,
            [
                (self.face in FACE_CHOICES, f"face must be one of {', '.join(FACE_CHOICES)}, got {self.face!r}"),
                (self.limit is None or self.limit >= 1, f"limit must be >= 1 or null, got {self.limit}"),
                (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            ],
        )


def build_gallery(job: GalleryBuild) -> dict[str, Any]:
    """Enroll ``job.data`` into ``job.gallery``; returns the summary (counts, throughput, gallery stats)."""
    from tqdm import tqdm

    from facerec.data.datasets import lfw_images_dir, read_identity_folder, sample_root
    from facerec.gallery.recognizer import FaceRecognizer

    root = lfw_images_dir(Path(job.data).expanduser()) if job.data else sample_root()
    recognizer = FaceRecognizer(
        job.model.name,
        pretrained=job.model.pretrained,
        input_size=job.model.input_size,
        device=job.model.device,
        gallery=job.gallery,
        face=job.face,
        detect=job.detect,
        batch_size=job.batch_size,
    )
    with recognizer:
        _ = recognizer.embedder  # load the model before the clock starts
        total = len(read_identity_folder(root)) if job.limit is None else None
        start = time.perf_counter()
        with tqdm(total=total, unit="img", desc="enroll", disable=not job.progress) as bar:
            results, failed = recognizer.enroll_folder(root, job.skip_errors, progress=bar.update, limit=job.limit)
        seconds = time.perf_counter() - start
        stats = recognizer.stats()
        if stats["index_kind"] != job.index.kind or stats["index_params"] != job.index.params:
            recognizer.rebuild_index(job.index.kind, **job.index.params)
            stats = recognizer.stats()
        embedder = recognizer.embedder
        model = {"name": embedder.name, "input_size": embedder.input_size, "fingerprint": embedder.fingerprint}
    processed = sum(len(r.added) + len(r.skipped) for r in results) + len(failed)
    return {
        "data": str(root),
        "model": model,
        "identities": len(results),
        "added": sum(len(r.added) for r in results),
        "skipped": sum(len(r.skipped) for r in results),
        "failed": len(failed),
        "failures": failed[:20],
        "seconds": round(seconds, 2),
        "images_per_second": round(processed / seconds, 2) if seconds else None,
        "gallery": stats,
    }


def run_build(job: GalleryBuild) -> dict[str, Any]:
    """``build_gallery(job)``, logged to MLflow (experiment ``facerec-gallery``) when ``job.track``."""
    if not job.track:
        return build_gallery(job)
    import mlflow

    from facerec.config import to_dict
    from facerec.tracking.runs import mlflow_run, set_run_name

    with mlflow_run(EXPERIMENT, "gallery", params=to_dict(job), tags={"facerec.weights": job.model.pretrained}):
        summary = build_gallery(job)
        set_run_name(gallery_run_name(job, summary))
        mlflow.log_metrics(
            {k: float(summary[k]) for k in ("identities", "added", "skipped", "failed", "seconds", "images_per_second")}
        )
        mlflow.log_dict(summary, "gallery_summary.json")
    return summary


def gallery_run_name(job: GalleryBuild, summary: dict[str, Any]) -> str:
    """``gallery resnet18@112px zero-shot:none+flat-index lfw-sample``: the loaded model's name and input
    size (a model directory or MLflow URI says neither until loaded), how its weights came about, the data."""
    from facerec.tracking.runs import run_name

    model = summary["model"]
    spec = job.model.name
    if spec.startswith(("models:/", "runs:/")):
        weights = spec
    elif Path(spec).exists():
        weights = "trained"
    else:
        weights = f"zero-shot:{job.model.pretrained}"
    recipe = f"{weights}+{job.index.kind}-index"
    return "gallery " + run_name(f"{model['name']}@{model['input_size']}px", recipe, Path(summary["data"]).name)


def main(argv: Sequence[str] | None = None) -> int:
    """Load the job from YAML + ``key=value`` overrides, run it (tracked), print the JSON summary."""
    from facerec.config import load_config

    return run_job(
        "pipelines.build_gallery",
        __doc__,
        DEFAULT_CONFIG,
        argv,
        lambda c, o: load_config(GalleryBuild, c, o),
        lambda job: json.dumps(run_build(job), default=str),
    )


if __name__ == "__main__":
    sys.exit(main())
