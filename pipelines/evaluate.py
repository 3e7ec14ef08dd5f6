"""Pipeline entry point ``evaluate`` (MLproject): evaluate a model on a protocol, log to MLflow.

python -m pipelines.evaluate [--config configs/evaluate.yaml] [model=SPEC] [evaluate.protocol=lfw-view1 ...]
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from facerec.evaluation.protocols import EvalConfig
from pipelines._job import run_job

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
    from facerec.evaluation.protocols import evaluate, format_metrics

    def run(job: EvaluateJob) -> str:
        result = evaluate(
            job.model,
            job.evaluate,
            pretrained=job.pretrained,
            device=job.device,
            input_size=job.input_size,
            experiment=job.experiment,
            track=job.track,
            progress=job.progress,
        )
        return f"{format_metrics(result)}\n{json.dumps(result.summary()['metrics'])}"

    return run_job(
        "pipelines.evaluate", __doc__, DEFAULT_CONFIG, argv, lambda c, o: load_config(EvaluateJob, c, o), run
    )


if __name__ == "__main__":
    sys.exit(main())
