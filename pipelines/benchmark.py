"""Pipeline entry point ``benchmark`` (MLproject): train + evaluate every backbone of an experiment.

    python -m pipelines.benchmark --config experiments/quick.yaml [only=[resnet18]] [train.epochs=1 ...]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from facerec.errors import FacerecError

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "quick.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the results table and a JSON summary line."""
    from facerec.benchmark import load_benchmark_config, run_benchmark, summary

    parser = argparse.ArgumentParser(prog="pipelines.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="experiment YAML or name (default: quick)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, dotted keys")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        # An empty value (``device=``, an MLproject default) keeps the experiment file's value.
        overrides = [o for o in args.overrides if o.partition("=")[2].strip()]
        result = run_benchmark(load_benchmark_config(args.config, overrides))
    except FacerecError as exc:
        print(f"pipelines.benchmark: error: {exc}", file=sys.stderr)
        return exc.exit_code
    payload = summary(result)
    print(payload.pop("text"))
    print(json.dumps(payload, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
