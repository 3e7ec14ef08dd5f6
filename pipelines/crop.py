"""Pipeline entry point ``crop`` (MLproject): crop a photo folder (default: LFW) with MTCNN.

    python -m pipelines.crop [--config configs/crop.yaml] [src=PATH] [out=PATH] [crop.detector.margin=0.4 ...]
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from facerec.crop import CropConfig, run_crop
from facerec.data import lfw_images_dir, resolve_data_root
from facerec.errors import FacerecError

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

    parser = argparse.ArgumentParser(prog="pipelines.crop", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="YAML config (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, dotted keys")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        job = load_config(CropJob, args.config, args.overrides)
        src = Path(job.src).expanduser() if job.src else lfw_images_dir(resolve_data_root())
        summary = run_crop(src, Path(job.out).expanduser(), job.crop, progress=job.progress)
    except FacerecError as exc:
        print(f"pipelines.crop: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(summary.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
