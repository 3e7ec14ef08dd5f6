"""Cold-start wall time of ``facerec verify`` and ``facerec --help``, and how much of it is imports.

    python benchmarks/cli_latency.py --model clip-vit-b-32 --input-size 224 --repeats 3

Each run is a fresh process (``python -m facerec ...``), so every import, the model
build and MTCNN's weights are paid again: that is what a user typing the command
waits for. The import share comes from ``python -X importtime`` on the same command
(each module's self time, grouped by top-level package); the rest is split in-process
into model build, first verify (MTCNN build, detection, embedding) and a warm verify. Medians over
``--repeats``; logged to MLflow (experiment ``facerec-benchmarks``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence

from facerec.data.datasets import sample_root

EXPERIMENT = "facerec-benchmarks"
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="clip-vit-b-32")
    parser.add_argument("--pretrained", default="none", help="'none' here: no weights can be downloaded offline")
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-mlflow", action="store_true")
    return parser.parse_args(argv)


def timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return seconds, done


def import_profile(argv: list[str]) -> tuple[float, dict[str, float]]:
    """Total import seconds of a command and the seconds per top-level package (``-X importtime``).

    Each module's *self* time goes to its top-level package, so nothing is counted twice.
    """
    _, done = timed([sys.executable, "-X", "importtime", *argv])
    per_package: dict[str, float] = defaultdict(float)
    for match in IMPORT_LINE.finditer(done.stderr):
        per_package[match.group(2).split(".")[0]] += int(match.group(1)) / 1e6
    return sum(per_package.values()), dict(sorted(per_package.items(), key=lambda kv: -kv[1]))


def phases(args: argparse.Namespace, image1, image2) -> dict[str, float]:
    """In this process, after the imports: model build, first verify (MTCNN build + work), a warm verify."""
    from facerec.gallery.recognizer import FaceRecognizer
    from facerec.models import available_embedders, load_model

    available_embedders()  # imports every backbone module: imports are measured above, not here
    start = time.perf_counter()
    options = {"input_size": args.input_size} if args.input_size else {}
    embedder = load_model(args.model, pretrained=args.pretrained, **options)
    built = time.perf_counter()
    recognizer = FaceRecognizer(embedder, gallery=None)
    recognizer.verify(image1, image2, threshold=0.5)
    first = time.perf_counter()
    recognizer.verify(image1, image2, threshold=0.5)
    warm = time.perf_counter()
    return {"model_build_s": built - start, "first_verify_s": first - built, "warm_verify_s": warm - first}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    root = sample_root()
    image1, image2 = root / "Ashanti" / "Ashanti_0001.jpg", root / "Ashanti" / "Ashanti_0002.jpg"
    model = ["--model", args.model, "--pretrained", args.pretrained]
    if args.input_size:
        model += ["--input-size", str(args.input_size)]
    verify = ["-m", "facerec", "-q", "verify", str(image1), str(image2), *model, "--threshold", "0.5", "--json"]
    help_ = ["-m", "facerec", "--help"]

    help_times = [timed([sys.executable, *help_])[0] for _ in range(max(args.repeats, 5))]
    verify_times = []
    for _ in range(args.repeats):
        seconds, done = timed([sys.executable, *verify])
        verify_times.append(seconds)
        result = json.loads(done.stdout)
    verify_imports, verify_packages = import_profile(verify)
    help_imports, _ = import_profile(help_)
    breakdown = phases(args, image1, image2)
    load = os.getloadavg()
    summary = {
        "model": args.model,
        "pretrained": args.pretrained,
        "input_size": args.input_size,
        "help_s_median": statistics.median(help_times),
        "help_imports_s": help_imports,
        "verify_s_median": statistics.median(verify_times),
        "verify_s_all": verify_times,
        "verify_imports_s": verify_imports,
        "verify_import_share": verify_imports / statistics.median(verify_times),
        "verify_imports_by_package": {k: round(v, 3) for k, v in list(verify_packages.items())[:12]},
        **breakdown,
        "verify_score": result["score"],
        "cpu_count": os.cpu_count(),
        "load_avg_1m": load[0],
    }
    print(json.dumps(summary, indent=2))
    if not args.no_mlflow:
        import mlflow

        from facerec.tracking.runs import mlflow_run

        name = f"cli-latency-{args.model}-{args.input_size or 'default'}px"
        with mlflow_run(
            EXPERIMENT,
            name,
            params={k: v for k, v in vars(args).items() if k != "no_mlflow"},
            tags={"facerec.benchmark": "cli_latency"},
        ):
            mlflow.log_metrics(
                {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            )
            mlflow.log_dict(summary, "cli_latency.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
