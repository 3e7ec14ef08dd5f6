"""Learning curves of finished training runs, against the training images each had seen.

Runs with different epoch lengths (320 or 400 steps) or batch shapes only compare on one
axis: images seen. Each run folder's ``checkpoint.pt`` holds the config and the per-epoch
history (read with ``weights_only=True`` and ``mmap``: the weights are not loaded); the plot
draws ``--key`` (default: validation ROC AUC) per run, and the script prints the rows.

A run that started from another run's model directory (``model.name=runs/train/A/model``)
continues A's curve from the images A had seen at its best epoch (the weights that directory
holds). ``--live`` adds, for runs with a weight average (``optim.ema``), the live weights' curve.

    python benchmarks/learning_curves.py runs/train/kd-clip-k1-strong-long runs/train/kd-clip-online \\
        --label "cached targets, strong" --label "online teacher + mixup" --out docs/lfw-view1-kd-clip-curves.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from facerec.config import from_dict
from facerec.errors import FacerecError
from facerec.evaluation.plots import curves_by_model
from facerec.training.batches import images_per_step
from facerec.training.config import TrainConfig

CHECKPOINT = "checkpoint.pt"


def run_curve(run_dir: Path) -> list[dict[str, Any]]:
    """The run's history rows, each with ``images`` (training images seen by the end of that epoch)."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise FacerecError(f"{run_dir} has no {CHECKPOINT}: not a training run folder")
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    config = from_dict(TrainConfig, state["config"])
    per_epoch = (config.steps_per_epoch or 0) * images_per_step(config)
    seen = start_images(Path(config.model.name), run_dir)
    rows = []
    for row in state["history"]:
        if row["epoch"]:
            # a partial epoch (stopped by max_minutes) or one pass over the data: the count it measured
            measured = round(row.get("images_per_s", 0) * row.get("train_seconds", 0))
            seen += measured if row.get("partial") or not per_epoch else per_epoch
        rows.append({**row, "images": seen})
    return rows


def start_images(model_dir: Path, run_dir: Path) -> int:
    """Training images behind a run's start weights: 0, or its parent run's count at the parent's best epoch."""
    parent = model_dir.parent
    info = model_dir / "model.json"
    if not info.is_file() or not (parent / CHECKPOINT).is_file() or parent.resolve() == run_dir.resolve():
        return 0
    best = json.loads(info.read_text()).get("best_epoch")
    return next((row["images"] for row in run_curve(parent) if row["epoch"] == best), 0)


def with_live_curves(curves: dict[str, list[dict[str, Any]]], key: str) -> dict[str, list[dict[str, Any]]]:
    """Each run plus, where its rows carry ``live_<key>`` (a weight-averaged run), its live weights' curve."""
    out = {}
    for label, rows in curves.items():
        out[label] = rows
        live = [{**row, key: row[f"live_{key}"]} for row in rows if f"live_{key}" in row]
        if live:
            out[f"{label} (live weights)"] = live
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training run folders (runs/train/NAME)")
    parser.add_argument("--label", action="append", default=[], help="a legend label per run, in order")
    parser.add_argument("--key", default="val_auc", help="history column to plot (default: val_auc)")
    parser.add_argument("--live", action="store_true", help="also draw the live weights of weight-averaged runs")
    parser.add_argument("--title", default="Validation ROC AUC (held-out DevTrain people)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    if args.label and len(args.label) != len(args.runs):
        print(f"error: {len(args.label)} labels for {len(args.runs)} runs", file=sys.stderr)
        return 2
    labels = args.label or [run.name for run in args.runs]
    try:
        curves = {label: run_curve(run) for label, run in zip(labels, args.runs, strict=True)}
    except (FacerecError, KeyError, OSError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.live:
        curves = with_live_curves(curves, args.key)
    for label, rows in curves.items():
        best = max(rows, key=lambda r: r.get(args.key, float("-inf")))
        cells = ", ".join(f"{r[args.key]:.3f}" for r in rows if args.key in r)
        print(f"{label}: {args.key} by epoch {cells}; best {best.get(args.key):.3f} at {best['images']:,} images")
    points = {label: [{**r, "epoch": r["images"] / 1000} for r in rows] for label, rows in curves.items()}
    figure = curves_by_model(points, args.key, args.key, args.title)
    figure.axes[0].set_xlabel("training images seen (thousands)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
