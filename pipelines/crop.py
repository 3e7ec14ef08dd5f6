"""Pipeline entry point ``crop`` (MLproject): crop a photo folder (default: LFW) with MTCNN.

python -m pipelines.crop [--config configs/crop.yaml] [src=PATH] [out=PATH] [crop.detector.margin=0.4 ...]
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from facerec.data.datasets import lfw_images_dir, resolve_data_root
from facerec.faces.crop import CropConfig, run_crop
from pipelines._job import run_job

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "crop.yaml"


@dataclass(frozen=True)
class CropJob:
    """What to crop, where to, and how: ``src`` None means the image folder of ``$FACEREC_DATA``."""

    out: str
    src: str | None = None
    progress: bool = True
    crop: CropConfig = field(default_factory=CropConfig)


def main(argv: Sequence[str] | None = None) -> int:
    """Load the job from YAML + ``key=value`` overrides, run it, print the JSON summary."""
    import json

    from facerec.config import load_config

    def run(job: CropJob) -> str:
        src = Path(job.src).expanduser() if job.src else lfw_images_dir(resolve_data_root())
        return json.dumps(run_crop(src, Path(job.out).expanduser(), job.crop, progress=job.progress).as_dict())

    return run_job("pipelines.crop", __doc__, DEFAULT_CONFIG, argv, lambda c, o: load_config(CropJob, c, o), run)


if __name__ == "__main__":
    sys.exit(main())
