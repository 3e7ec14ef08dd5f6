"""Pipeline entry point ``evaluate`` (MLproject): evaluate a model on a protocol, log to MLflow.

    python -m pipelines.evaluate [--config configs/evaluate.yaml] [model=SPEC] [evaluate.protocol=lfw-view1 ...]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from facerec.errors import FacerecError
from facerec.evaluate import EvalConfig

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "evaluate.yaml"


@dataclass(frozen=True)
class EvaluateJob:
    """Which model to evaluate (registry name, model directory, ``models:/`` URI) and how."""

    model: str = "clip-vit-b-32"
    pretrained: str = "none"
    input_size: int | None = None
    device: str = "cpu"
    experiment: str = "facerec-evaluate"
    track: bool = True
    progress: bool = True
    evaluate: EvalConfig = field(default_factory=EvalConfig)


def main(argv: Sequence[str] | None = None) -> int:
    """Load the job from YAML + ``key=value`` overrides, evaluate, print the metrics and a JSON summary."""
    from facerec.config import load_config
    from facerec.evaluate import evaluate, format_metrics

    parser = argparse.ArgumentParser(prog="pipelines.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="YAML config (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, dotted keys")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        job = load_config(EvaluateJob, args.config, [o for o in args.overrides if o])
        result = evaluate(
            job.model, job.evaluate, pretrained=job.pretrained, device=job.device, input_size=job.input_size,
            experiment=job.experiment, track=job.track, progress=job.progress,
        )
    except FacerecError as exc:
        print(f"pipelines.evaluate: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(format_metrics(result))
    print(json.dumps(result.summary()["metrics"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
