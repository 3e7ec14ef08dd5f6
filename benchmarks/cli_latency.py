"""Cold-start wall time of ``facerec verify`` (default model; a trained CLIP ViT-B/32 directory) and ``facerec --help``.

    python benchmarks/cli_latency.py --model dlib-resnet --repeats 5
    python benchmarks/cli_latency.py --model resnet18 --pretrained none --clip-dir runs/clip/model

Each run is a fresh process (``python -m facerec ...``): every import, the model
load and MTCNN's weights are paid again, which is what a user typing the command
waits for. Medians over ``--repeats`` (5) whole processes, plus each process's CPU
seconds (user + system; less sensitive to other load on a shared machine than wall
time). The import share comes from ``python -X importtime`` on the same command;
the rest is split in-process into model load, fingerprint (cached vs hashing every
weight), first verify (MTCNN build, detection, embedding) and a warm verify.
facerec's bytecode is compiled first (``compile_facerec``). Without ``--clip-dir`` a CLIP ViT-B/32 directory (random weights: the format and
size of a trained one) is written to a temporary folder first. Targets (quiet
2-core CPU): default model <= 3 s, CLIP directory <= 4 s, ``--help`` ~0.1 s.
Printed and logged to MLflow (experiment ``facerec-benchmarks``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from machine import StealMeter

from facerec.data.datasets import sample_root

log = logging.getLogger("benchmarks.cli_latency")

EXPERIMENT = "facerec-benchmarks"
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)")
TARGETS_S = {"verify_default": 3.0, "verify_clip_dir": 4.0, "help": 0.1}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("FACEREC_MODEL", "dlib-resnet"), help="the default model")
    parser.add_argument("--pretrained", default=None, help="weights for --model (not passed when omitted)")
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--clip-dir", default=None, help="a trained CLIP ViT-B/32 model directory")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-mlflow", action="store_true")
    return parser.parse_args(argv)


def timed(argv: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, child CPU seconds, result) of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.strip().splitlines()[-1:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, done


def repeated(argv: list[str], repeats: int) -> dict[str, float | list[float]]:
    runs = [timed(argv) for _ in range(repeats)]
    walls = [round(w, 3) for w, _, _ in runs]
    return {
        "s_median": statistics.median(walls),
        "cpu_s_median": statistics.median(c for _, c, _ in runs),
        "s_all": walls,
        "last_stdout": runs[-1][2].stdout,
    }


def import_profile(argv: list[str]) -> tuple[float, dict[str, float]]:
    """Total import seconds of a command and the seconds per top-level package (``-X importtime`` self times)."""
    _, _, done = timed([sys.executable, "-X", "importtime", *argv])
    per_package: dict[str, float] = defaultdict(float)
    for match in IMPORT_LINE.finditer(done.stderr):
        per_package[match.group(2).split(".")[0]] += int(match.group(1)) / 1e6
    return sum(per_package.values()), dict(sorted(per_package.items(), key=lambda kv: -kv[1]))


def phases(spec: str, options: dict, image1: Path, image2: Path) -> dict[str, float]:
    """In this process: model load, fingerprint as loaded (cached) vs hashed, first and warm verify."""
    from facerec.gallery.recognizer import FaceRecognizer
    from facerec.models import available_embedders, load_model
    from facerec.models import fingerprint as fingerprints

    available_embedders()  # imports every backbone module: imports are measured above, not here
    start = time.perf_counter()
    embedder = load_model(spec, **options)
    built = time.perf_counter()
    embedder.fingerprint  # noqa: B018 - what a process pays for it now
    fingerprinted = time.perf_counter()
    frozen = getattr(embedder, "frozen", False)  # a frozen model hashes its weight files, not a state dict
    hashed = fingerprints.hash_state(embedder) if hasattr(embedder, "state_dict") and not frozen else None
    hash_s = time.perf_counter() - fingerprinted
    if hashed is not None and hashed != embedder.fingerprint:
        raise SystemExit(f"cached fingerprint {embedder.fingerprint} differs from the hash {hashed}")
    recognizer = FaceRecognizer(embedder, gallery=None)
    first_start = time.perf_counter()
    recognizer.verify(image1, image2, threshold=0.5)
    first = time.perf_counter()
    recognizer.verify(image1, image2, threshold=0.5)
    warm = time.perf_counter()
    return {
        "model_load_s": built - start,
        "fingerprint_s": fingerprinted - built,
        "fingerprint_hash_s": hash_s,
        "first_verify_s": first - first_start,
        "warm_verify_s": warm - first,
    }


def compile_facerec() -> bool:
    """Byte-compile facerec's modules first, as ``pip install`` does (and Python on a first run).

    Where ``$PYTHONDONTWRITEBYTECODE`` is set (this build machine), an editable install never
    gets its ``__pycache__`` and every process compiles ~200 modules (~0.1 s): not what a
    user's installed package costs. ``compileall`` writes the bytecode whatever that setting.
    """
    import compileall

    import facerec

    return bool(compileall.compile_dir(Path(facerec.__file__).parent, quiet=1))


def make_clip_dir(out: Path) -> Path:
    """A CLIP ViT-B/32 (224 px) model directory with random weights: a trained one's format and size."""
    from facerec.models import create_embedder, save_model_dir

    log.info("writing a CLIP ViT-B/32 model directory to %s", out)
    return save_model_dir(create_embedder("clip-vit-b-32", pretrained="none", input_size=224), out, threshold=0.5)


def measure(name: str, model_flags: list[str], images: tuple[Path, Path], repeats: int) -> dict:
    verify = ["-m", "facerec", "-q", "verify", *map(str, images), *model_flags, "--threshold", "0.5", "--json"]
    timing = repeated([sys.executable, *verify], repeats)
    imports, packages = import_profile(verify)
    result = json.loads(timing.pop("last_stdout"))
    return {
        **{f"{name}_{k}": v for k, v in timing.items()},
        f"{name}_imports_s": imports,
        f"{name}_imports_by_package": {k: round(v, 3) for k, v in list(packages.items())[:10]},
        f"{name}_model": result["model"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    root = sample_root()
    images = (root / "Ashanti" / "Ashanti_0001.jpg", root / "Ashanti" / "Ashanti_0002.jpg")
    default_flags = ["--model", args.model]
    options: dict = {}
    if args.pretrained is not None:
        default_flags += ["--pretrained", args.pretrained]
        options["pretrained"] = args.pretrained
    if args.input_size:
        default_flags += ["--input-size", str(args.input_size)]
        options["input_size"] = args.input_size
    scratch = None
    clip_dir = Path(args.clip_dir) if args.clip_dir else None
    if clip_dir is None:
        scratch = Path(tempfile.mkdtemp(prefix="facerec-cli-latency-"))
        clip_dir = make_clip_dir(scratch / "clip-model")
    compiled = compile_facerec()
    load_start, steal = os.getloadavg(), StealMeter()
    try:
        help_ = repeated([sys.executable, "-m", "facerec", "--help"], args.repeats)
        help_.pop("last_stdout")
        help_imports, help_packages = import_profile(["-m", "facerec", "--help"])
        summary = {
            "model": args.model,
            "pretrained": args.pretrained,
            "input_size": args.input_size,
            "clip_dir": str(clip_dir),
            "repeats": args.repeats,
            "bytecode_compiled": compiled,
            **{f"help_{k}": v for k, v in help_.items()},
            "help_imports_s": help_imports,
            "help_imports_by_package": {k: round(v, 3) for k, v in list(help_packages.items())[:5]},
            **measure("verify_default", default_flags, images, args.repeats),
            **measure("verify_clip_dir", ["--model", str(clip_dir)], images, args.repeats),
        }
        for name, values in (
            ("default", phases(args.model, options, *images)),
            ("clip_dir", phases(str(clip_dir), {}, *images)),
        ):
            summary.update({f"{name}_{k}": v for k, v in values.items()})
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    for name, target in TARGETS_S.items():
        summary[f"{name}_target_s"] = target
        summary[f"{name}_meets_target"] = summary[f"{name}_s_median"] <= target * (1.5 if name == "help" else 1.0)
    summary.update(
        {
            "cpu_count": os.cpu_count(),
            "load_avg_1m_start": load_start[0],
            "load_avg_1m_end": os.getloadavg()[0],
            "cpu_steal_fraction": steal.fraction(),
        }
    )
    print(json.dumps(summary, indent=2))
    if not args.no_mlflow:
        import mlflow

        from facerec.tracking.runs import mlflow_run

        with mlflow_run(
            EXPERIMENT,
            f"cli-latency-{Path(args.model).name}",
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
