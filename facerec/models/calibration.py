"""Calibrate a model's verification threshold on LFW View 1 *train* pairs (``pairsDevTrain.txt``).

The protocol rule: anything calibrated on LFW sees View 1 train only; DevTest and
View 2 stay for evaluation. The threshold maximises accuracy on the train pairs
(``metrics.best_threshold``, the midpoint of the best range); the result is a model
directory (``model.json`` with the threshold and where it came from) that
``--model DIR`` accepts everywhere, and optionally the small JSON shipped with a
frozen model (``facerec/models/thresholds/<name>.json``).
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facerec.files import atomic_write

log = logging.getLogger(__name__)

CALIBRATION_PAIRS = "pairsDevTrain.txt"


@dataclass(frozen=True)
class Calibration:
    """A calibrated threshold and what it was calibrated on."""

    model: str
    fingerprint: str
    threshold: float
    train_accuracy: float
    kfold_accuracy: float
    auc: float
    n_pairs: int
    data: str
    pairs: str
    crops: str | None
    command: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def command_line() -> str:
    """The command that is running, as one could type it again."""
    argv = list(sys.argv)
    if argv and argv[0].endswith("__main__.py"):
        argv[0] = "python -m facerec"
    return " ".join(shlex.quote(a) if i else a for i, a in enumerate(argv))


def calibrate(
    embedder: Any,
    data: str | Path | None,
    crops: str | Path | None = None,
    crop: bool = True,
    batch_size: int = 64,
    progress: bool = True,
    command: str | None = None,
) -> Calibration:
    """Embed the ``pairsDevTrain.txt`` images (cropped like evaluation does) and pick the threshold."""
    from facerec.data.datasets import LFW
    from facerec.evaluation import metrics
    from facerec.evaluation.protocols import EvalConfig, EvalSet, pair_scores, prepare_images
    from facerec.models.inference import embed_paths

    lfw = LFW.at(data)
    config = EvalConfig(protocol="lfw-view1", data=str(lfw.root), crops=str(crops) if crops else None, crop=crop)
    pairs = lfw.pairs(CALIBRATION_PAIRS)
    eval_set = prepare_images(EvalSet("calibration", lfw.images_dir, pairs, None), config, progress)
    paths = eval_set.unique_paths()
    vectors = embed_paths(embedder, paths, batch_size=batch_size, progress=progress)
    scores = pair_scores(vectors, {p: i for i, p in enumerate(paths)}, eval_set.pairs)
    labels = np.array([p.same for p in eval_set.pairs], dtype=bool)
    threshold = metrics.best_threshold(scores, labels)
    result = Calibration(
        model=embedder.name,
        fingerprint=embedder.fingerprint,
        threshold=round(float(threshold), 6),
        train_accuracy=metrics.accuracy_at(scores, labels, threshold),
        kfold_accuracy=metrics.kfold_accuracy(scores, labels)[0],
        auc=metrics.roc_auc(scores, labels),
        n_pairs=len(pairs),
        data=str(lfw.root),
        pairs=CALIBRATION_PAIRS,
        crops=str(eval_set.root) if crop else None,
        command=command or command_line(),
    )
    log.info(
        "%s: threshold %.4f (train accuracy %.4f on %d pairs)",
        embedder.name,
        threshold,
        result.train_accuracy,
        len(pairs),
    )
    return result


def write_threshold_file(calibration: Calibration, path: str | Path) -> Path:
    """Add (or replace) this calibration in the small JSON a frozen model ships (``thresholds/<name>.json``).

    The file keeps one calibration per fingerprint, so each variant of a model (other
    options give other vectors) finds its own threshold: ``{"model": NAME, "calibrations": [...]}``.
    """
    path = Path(path)
    record = calibration.to_dict()
    kept = [r for r in read_threshold_records(path) if r.get("fingerprint") != record["fingerprint"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        f.write(json.dumps({"model": record["model"], "calibrations": [record, *kept]}, indent=2) + "\n")
    return path


def read_threshold_records(path: str | Path) -> list[dict[str, Any]]:
    """The calibrations in a threshold file (none if it does not exist; a one-record file is read too)."""
    path = Path(path)
    if not path.is_file():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    return list(data["calibrations"]) if "calibrations" in data else [data]
