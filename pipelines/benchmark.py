"""Pipeline entry point ``benchmark`` (MLproject): train + evaluate every backbone of an experiment.

python -m pipelines.benchmark --config experiments/quick.yaml [only=[resnet18]] [train.epochs=1 ...]
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines._job import run_job

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "quick.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the results table and a JSON summary line."""
    from facerec.model_benchmark import load_benchmark_config, run_benchmark, summary

    def run(config) -> str:
        payload = summary(run_benchmark(config))
        return f"{payload.pop('text')}\n{json.dumps(payload, default=str)}"

    return run_job("pipelines.benchmark", __doc__, DEFAULT_CONFIG, argv, load_benchmark_config, run)


if __name__ == "__main__":
    sys.exit(main())
