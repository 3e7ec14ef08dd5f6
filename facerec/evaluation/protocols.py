"""Evaluation protocols: a model + a data set -> verification and identification metrics + plots.

Protocols (``EvalConfig.protocol``):

- ``lfw-view1``: verification on ``pairsDevTest.txt`` (identity-disjoint from View 1
  train; accuracy over 10 fixed folds, threshold picked on the other nine) and
  identification on the ``peopleDevTest.txt`` identities.
- ``lfw-view2``: the 10-fold ``pairs.txt`` benchmark (for models not trained on LFW);
  identification on the ``people.txt`` identities.
- ``folder``: any identity-folder data set; pairs generated with a fixed seed,
  optionally on a held-out share of the identities.

Size (~520 lines, over the ~400 guideline): the three protocols share one path (set,
crops, one embedding pass, verification + identification, the saved result and its MLflow
log); cutting it by protocol would copy that path three times. Metrics live in ``metrics``,
plots in ``plots``, the config in ``config``.

Identification: gallery = the first image of every identity with 2+ images, probes
= the rest; open-set distractors = identities with a single image (their image must
be rejected). Each unique image is embedded once; raw photos are first cropped with
MTCNN (centre fallback, so every pair is scored) into a cached crop folder.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facerec.data.datasets import (
    LFW,
    ImageRecord,
    Pair,
    generate_pairs,
    group_by_identity,
    read_identity_folder,
    resolve_data_root,
    sample_root,
    split_by_identity,
)
from facerec.errors import DataError
from facerec.evaluation import metrics
from facerec.evaluation.config import PROTOCOLS, EvalConfig  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

DEFAULT_CROP_CACHE = Path(".cache") / "crops"
RESULT_FILE = "result.json"
ARRAYS_FILE = "arrays.npz"


@dataclass
class EvalSet:
    """What a protocol scores: verification pairs (with folds) and an identification set."""

    name: str
    root: Path  # the folder the image paths lie under (raw photos or crops)
    pairs: list[Pair]
    folds: np.ndarray | None  # None: the metrics module's fixed shuffled 10 folds
    records: list[ImageRecord] = field(default_factory=list)

    def unique_paths(self) -> list[Path]:
        """Every image once, in first-seen order."""
        seen = dict.fromkeys([p for pair in self.pairs for p in (pair.path1, pair.path2)])
        seen.update(dict.fromkeys(r.path for r in self.records))
        return list(seen)

    def relocated(self, root: Path) -> EvalSet:
        """The same set with every path moved from ``self.root`` to ``root`` (a crop folder)."""

        def move(path: Path) -> Path:
            return root / path.relative_to(self.root)

        pairs = [Pair(move(p.path1), move(p.path2), p.same, p.fold) for p in self.pairs]
        records = [ImageRecord(move(r.path), r.identity) for r in self.records]
        return EvalSet(self.name, root, pairs, self.folds, records)


@dataclass
class EvalResult:
    """Metrics, curves and the few embeddings the plots need; saved as JSON + npz (no pickle)."""

    protocol: str
    model: dict[str, Any]
    verification: dict[str, Any]
    identification: dict[str, Any] | None
    speed: dict[str, float]
    scores: np.ndarray
    labels: np.ndarray
    scatter_vectors: np.ndarray
    scatter_names: np.ndarray

    @property
    def metrics(self) -> dict[str, float]:
        """Flat scalar metrics for MLflow and tables (lists and matrices left out)."""
        out: dict[str, float] = {}
        for part in (self.verification, self.identification or {}, self.speed):
            out.update(
                {k: float(v) for k, v in part.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            )
        for key in ("parameters", "weights_mb"):
            if self.model.get(key) is not None:
                out[key] = float(self.model[key])
        return out

    @property
    def cmc(self) -> np.ndarray | None:
        return None if self.identification is None else np.asarray(self.identification["cmc"])

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        fpr, tpr, _ = metrics.roc_curve_points(self.scores, self.labels)
        return fpr, tpr

    def summary(self) -> dict[str, Any]:
        """JSON-ready view: model, protocol, flat metrics, confusion matrix and CMC."""
        return {
            "protocol": self.protocol,
            "model": self.model,
            "metrics": self.metrics,
            "confusion": self.verification["confusion"],
            "cmc": None if self.cmc is None else self.cmc.tolist(),
        }

    def figures(self, projection: str = "tsne", seed: int = 0) -> dict[str, Any]:
        """``{artifact name: Figure}`` for this model: ROC, CMC, confusion matrix, embedding scatter."""
        from facerec.evaluation import plots

        label = self.model.get("label", self.model.get("name", "model"))
        figures = {
            "roc.png": plots.roc_figure({label: self.roc()}, f"ROC, {self.protocol}"),
            "confusion.png": plots.confusion_figure(self.verification["confusion"], f"{label}, {self.protocol}"),
        }
        if self.cmc is not None:
            figures["cmc.png"] = plots.cmc_figure({label: self.cmc}, f"CMC, {self.protocol}")
        if len(self.scatter_vectors) >= 3:
            figures["embeddings.png"] = plots.embedding_figure(
                self.scatter_vectors,
                self.scatter_names.tolist(),
                projection,
                f"{label}: {plots.PROJECTION_NAMES[projection]}",
                seed,
            )
        return figures

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "protocol": self.protocol,
            "model": self.model,
            "verification": self.verification,
            "identification": self.identification,
            "speed": self.speed,
        }
        (directory / RESULT_FILE).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
        np.savez_compressed(
            directory / ARRAYS_FILE,
            scores=self.scores,
            labels=self.labels,
            scatter_vectors=self.scatter_vectors,
            scatter_names=self.scatter_names.astype(str),
        )
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> EvalResult:
        directory = Path(directory)
        try:
            meta = json.loads((directory / RESULT_FILE).read_text(encoding="utf-8"))
            with np.load(directory / ARRAYS_FILE, allow_pickle=False) as arrays:
                data = {k: arrays[k] for k in arrays.files}
            return cls(
                meta["protocol"],
                meta["model"],
                meta["verification"],
                meta["identification"],
                meta["speed"],
                data["scores"],
                data["labels"],
                data["scatter_vectors"],
                data["scatter_names"],
            )
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"cannot read evaluation result in {directory}: {exc}") from exc


# -------------------------------------------------------------------- protocols
def protocol_set(config: EvalConfig) -> EvalSet:
    """The pairs and identification records of a protocol, on the raw image paths."""
    if config.protocol == "folder":
        root = Path(config.data).expanduser() if config.data else sample_root()
        records = read_identity_folder(root)
        if config.holdout > 0:
            _, records = split_by_identity(records, config.holdout, config.split_seed)
            log.info("folder: evaluating on %d held-out identities", len(group_by_identity(records)))
        pairs = generate_pairs(records, feasible_pairs(records, config.n_pairs), config.seed, config.n_folds)
        return EvalSet(
            "folder", root, pairs, np.array([p.fold for p in pairs]), records if config.identification else []
        )
    lfw = LFW.at(config.data)
    if config.protocol == "lfw-view1":
        pairs = lfw.pairs("pairsDevTest.txt")
        records = lfw.dev_test() if config.identification else []
        return EvalSet("lfw-view1", lfw.images_dir, pairs, None, records)
    pairs = lfw.pairs("pairs.txt")
    records = lfw.people("people.txt") if config.identification else []
    return EvalSet("lfw-view2", lfw.images_dir, pairs, np.array([p.fold for p in pairs]), records)


def feasible_pairs(records: Sequence[ImageRecord], n_pairs: int) -> int:
    """``n_pairs``, capped so that half of them can be distinct matched pairs."""
    matched = sum(len(rs) * (len(rs) - 1) // 2 for rs in group_by_identity(records).values())
    if 2 * matched < n_pairs:
        log.warning("only %d distinct matched pairs exist: using %d pairs instead of %d", matched, 2 * matched, n_pairs)
    return min(n_pairs, 2 * matched)


def default_crops_dir(config: EvalConfig) -> Path:
    """``.cache/crops/<data-name>-<size>``, shared by every run that crops the same data the same way."""
    if config.crops:
        return Path(config.crops).expanduser()
    if config.protocol == "folder":
        name = Path(config.data).expanduser().resolve().name if config.data else sample_root().name
    else:
        name = resolve_data_root(config.data).resolve().name
    return DEFAULT_CROP_CACHE / f"{name}-{config.crop_size}"


def prepare_images(eval_set: EvalSet, config: EvalConfig, progress: bool = True) -> EvalSet:
    """Crop the set's raw photos (cached, centre fallback) and point the set at the crops."""
    if not config.crop:
        return eval_set
    from facerec.faces.config import CropConfig, DetectorConfig
    from facerec.faces.crop import run_crop

    crops = default_crops_dir(config)
    paths = eval_set.unique_paths()
    crop_config = CropConfig(detector=DetectorConfig(image_size=config.crop_size), fallback="center")
    log.info("cropping %d images of %s into %s (cached)", len(paths), eval_set.root, crops)
    run_crop(eval_set.root, crops, crop_config, paths=paths, progress=progress)
    cropped = eval_set.relocated(crops)
    missing = [p for p in cropped.unique_paths() if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} images could not be cropped, e.g. {missing[0]} (see the crop manifest)")
    return cropped


def training_folder(config: EvalConfig, dest: str | Path, progress: bool = True) -> Path:
    """A folder of links to the (cropped) identities the folder protocol does *not* hold out.

    Training on it and evaluating with ``config`` keeps the two identity-disjoint; the
    split is ``split_by_identity(records, config.holdout, config.split_seed)``, as in
    ``protocol_set``. The folder name hashes its content, so it is reused when unchanged.
    """
    import hashlib

    if config.protocol != "folder" or config.holdout <= 0:
        raise DataError("a training folder needs the folder protocol with holdout > 0")
    root = Path(config.data).expanduser() if config.data else sample_root()
    train_records, _ = split_by_identity(read_identity_folder(root), config.holdout, config.split_seed)
    cropped = prepare_images(EvalSet("train", root, [], None, train_records), config, progress)
    names = sorted({r.identity for r in cropped.records})
    key = hashlib.sha256(json.dumps([str(cropped.root.resolve()), names]).encode()).hexdigest()[:12]
    tree = Path(dest) / key
    tree.mkdir(parents=True, exist_ok=True)
    for name in names:
        link = tree / name
        if not link.is_symlink():
            link.symlink_to((cropped.root / name).resolve(), target_is_directory=True)
    log.info("training folder %s: %d identities of %s (the held-out ones excluded)", tree, len(names), root)
    return tree


# ------------------------------------------------------------------- evaluation
def model_info(embedder: Any, model_dir: str | Path | None = None, label: str | None = None) -> dict[str, Any]:
    """Name, input size, start weights, fingerprint, parameter count and weights.pt size."""
    from facerec.models.base import WEIGHTS_FILE

    info = {
        "name": embedder.name,
        "input_size": embedder.input_size,
        "embedding_dim": embedder.embedding_dim,
        "pretrained": embedder.spec.pretrained,
        "fingerprint": embedder.fingerprint,
        "parameters": int(sum(p.numel() for p in embedder.parameters())),
        "weights_mb": None,
        "threshold": embedder.threshold,
        "label": label or f"{embedder.name}@{embedder.input_size}px",
    }
    if model_dir is not None and (Path(model_dir) / WEIGHTS_FILE).is_file():
        info["weights_mb"] = round((Path(model_dir) / WEIGHTS_FILE).stat().st_size / 2**20, 3)
    else:
        info["weights_mb"] = round(sum(t.numel() * t.element_size() for t in embedder.state_dict().values()) / 2**20, 3)
    return info


def evaluate_model(
    embedder: Any,
    eval_set: EvalSet,
    config: EvalConfig,
    model: dict[str, Any] | None = None,
    progress: bool = True,
) -> EvalResult:
    """Embed every unique image of ``eval_set`` once, then compute all metrics."""
    from facerec.models.inference import embed_paths

    paths = eval_set.unique_paths()
    start = time.perf_counter()
    vectors = embed_paths(
        embedder,
        paths,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        progress=progress,
        flip=config.flip,
    )
    seconds = time.perf_counter() - start
    row = {p: i for i, p in enumerate(paths)}
    speed = {"images_per_s": len(paths) / max(seconds, 1e-9), "embed_seconds": seconds, "n_images": float(len(paths))}
    log.info("embedded %d images in %.1f s (%.1f images/s)", len(paths), seconds, speed["images_per_s"])

    scores = pair_scores(vectors, row, eval_set.pairs)
    labels = np.array([p.same for p in eval_set.pairs], dtype=bool)
    verification = metrics.verification_metrics(scores, labels, eval_set.folds)
    if embedder.threshold is not None:
        verification["accuracy_at_model_threshold"] = metrics.accuracy_at(scores, labels, float(embedder.threshold))

    identification = None
    if eval_set.records:
        identification = identification_results(vectors, row, eval_set.records, config)
    scatter_vectors, scatter_names = scatter_sample(vectors, row, eval_set.records, config)
    return EvalResult(
        eval_set.name,
        model or model_info(embedder),
        verification,
        identification,
        speed,
        scores,
        labels,
        scatter_vectors,
        scatter_names,
    )


def pair_scores(vectors: np.ndarray, row: dict[Path, int], pairs: Sequence[Pair]) -> np.ndarray:
    """Cosine similarity of each pair, from unit vectors indexed by path (``row``)."""
    a = vectors[[row[p.path1] for p in pairs]]
    b = vectors[[row[p.path2] for p in pairs]]
    return np.einsum("nd,nd->n", a, b).astype(np.float64)


def split_gallery(
    records: Sequence[ImageRecord], distractor_fraction: float = 0.0, seed: int = 0
) -> tuple[list[ImageRecord], list[ImageRecord], list[ImageRecord]]:
    """(gallery, probes, distractors): first image of each 2+ identity / the rest / single-image identities.

    ``distractor_fraction`` of the 2+ identities (chosen with ``seed``) also become
    distractors, represented by their first image.
    """
    groups = {name: sorted(rs, key=lambda r: str(r.path)) for name, rs in group_by_identity(records).items()}
    multi = [n for n, rs in groups.items() if len(rs) >= 2]
    extra = set(random.Random(seed).sample(multi, int(round(len(multi) * distractor_fraction))))
    gallery = [groups[n][0] for n in multi if n not in extra]
    probes = [r for n in multi if n not in extra for r in groups[n][1:]]
    distractors = [rs[0] for n, rs in groups.items() if len(rs) == 1 or n in extra]
    return gallery, probes, distractors


def identification_results(
    vectors: np.ndarray, row: dict[Path, int], records: Sequence[ImageRecord], config: EvalConfig
) -> dict[str, Any] | None:
    """Closed-set CMC/rank-k and open-set DIR@FAR with a faiss inner-product index of the gallery."""
    from facerec.gallery.index import build_index, search

    gallery, probes, distractors = split_gallery(records, config.distractor_fraction, config.seed)
    if len(gallery) < 2 or not probes:
        log.warning("identification skipped: needs 2+ gallery identities with probes, got %d", len(gallery))
        return None
    gallery_labels = np.array([r.identity for r in gallery])
    index = build_index(vectors[[row[r.path] for r in gallery]], np.arange(len(gallery)), "flat")
    k = min(config.max_rank, len(gallery))
    scores, ids = search(index, vectors[[row[r.path] for r in probes]], k)
    distractor_scores = None
    if distractors:
        distractor_scores = search(index, vectors[[row[r.path] for r in distractors]], 1)[0][:, 0]
    else:
        log.info("no distractors (no single-image identities): open-set DIR not computed")
    out = metrics.identification_metrics(
        [r.identity for r in probes], gallery_labels[ids], scores, distractor_scores, config.far
    )
    out["n_gallery"] = len(gallery)
    return out


def scatter_sample(
    vectors: np.ndarray, row: dict[Path, int], records: Sequence[ImageRecord], config: EvalConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of the ``scatter_identities`` identities with the most images (for t-SNE/PCA)."""
    groups = group_by_identity(records)
    chosen = sorted(groups, key=lambda n: (-len(groups[n]), n))[: config.scatter_identities]
    picked = [r for n in sorted(chosen) for r in groups[n][: config.scatter_max_images]]
    if len(chosen) < 2:
        return np.zeros((0, vectors.shape[1]), np.float32), np.array([], dtype=str)
    return vectors[[row[r.path] for r in picked]], np.array([r.identity for r in picked])


# ------------------------------------------------------------------ MLflow glue
def log_result(
    result: EvalResult, config: EvalConfig, artifact_dir: str = "eval", eval_set: EvalSet | None = None
) -> None:
    """Log metrics, the CMC as a stepped metric, plots, the saved result and the evaluation data
    (``eval_set``, as an MLflow dataset input) to the active MLflow run."""
    import tempfile

    import mlflow

    from facerec.tracking.datasets import evaluation_dataset, log_dataset
    from facerec.tracking.runs import log_figure

    if eval_set is not None:
        log_dataset(evaluation_dataset(eval_set, config), "evaluation")
    mlflow.log_metrics(result.metrics)
    if result.cmc is not None:
        for rank, value in enumerate(result.cmc, start=1):
            mlflow.log_metric("cmc", float(value), step=rank)
    for name, figure in result.figures(config.projection, config.seed).items():
        log_figure(figure, f"plots/{name}")
    with tempfile.TemporaryDirectory() as tmp:
        result.save(tmp)
        mlflow.log_artifacts(tmp, artifact_dir)


def run_label(model: dict[str, Any], tag: str) -> str:
    """Run name: ``clip-vit-b-32@64px zero-shot:openai lfw-view1`` (model, recipe, data)."""
    from facerec.tracking.runs import run_name

    return run_name(model["label"], model_recipe(model), tag)


def model_recipe(model: dict[str, Any]) -> str:
    """How a model's weights came about: ``<loss>-<strategy>`` of a fine-tuned model directory,
    ``zero-shot:<weights>`` for registry weights, or the MLflow URI it was loaded from."""
    import yaml

    from facerec.models.base import CONFIG_FILE

    spec = str(model.get("spec", ""))
    config_file = Path(spec) / CONFIG_FILE
    if spec and config_file.is_file():
        config = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        if isinstance(config.get("loss"), dict) and isinstance(config.get("strategy"), dict):
            return f"{config['loss'].get('kind')}-{config['strategy'].get('kind')}"
        return "model-dir"
    if spec.startswith(("models:/", "runs:/")):
        return spec
    return f"zero-shot:{model.get('pretrained', 'none')}"


def evaluate(
    model_spec: str,
    config: EvalConfig,
    pretrained: str = "none",
    device: str = "cpu",
    input_size: int | None = None,
    experiment: str = "facerec-evaluate",
    track: bool = True,
    progress: bool = True,
) -> EvalResult:
    """Load ``model_spec``, run the protocol, log params/metrics/plots to MLflow (``track``)."""
    from facerec.config import to_dict
    from facerec.models import is_model_dir, load_model

    options = {"input_size": input_size} if input_size else {}
    raw_set = protocol_set(config)  # data errors first: they are cheaper to find than loading a model
    embedder = load_model(model_spec, pretrained=pretrained, device=device, **options)
    eval_set = prepare_images(raw_set, config, progress)
    model = model_info(embedder, model_spec if is_model_dir(model_spec) else None)
    model["spec"] = model_spec
    if not track:
        return evaluate_model(embedder, eval_set, config, model, progress)
    from facerec.tracking.runs import mlflow_run

    tags = {
        "facerec.model": model["name"],
        "facerec.weights": model["pretrained"],
        "facerec.protocol": config.protocol,
        "facerec.data": str(eval_set.root),
        "facerec.fingerprint": model["fingerprint"],
    }
    params = {"eval": to_dict(config), "model": {k: model[k] for k in ("spec", "name", "input_size", "pretrained")}}
    data = f"folder:{raw_set.root.name}" if config.protocol == "folder" else config.protocol
    with mlflow_run(experiment, run_label(model, data), params=params, tags=tags):
        result = evaluate_model(embedder, eval_set, config, model, progress)
        log_result(result, config, eval_set=eval_set)
    return result


def format_metrics(result: EvalResult) -> str:
    """Human-readable summary of an evaluation."""
    m, v = result.metrics, result.verification
    lines = [
        f"model: {result.model['label']} ({result.model['pretrained']} weights, {result.model['fingerprint']})",
        f"protocol: {result.protocol}  pairs: {v['n_pairs']}  images: {int(m['n_images'])}",
        f"verification: accuracy {v['accuracy']:.4f} ± {v['accuracy_std']:.4f}  AUC {v['auc']:.4f}  EER {v['eer']:.4f}",
        f"  TAR@FAR=1e-2 {v['tar_far_1e-2']:.4f}  TAR@FAR=1e-3 {v['tar_far_1e-3']:.4f}",
        f"  threshold {v['threshold']:.4f}: precision {v['precision']:.4f} recall {v['recall']:.4f} F1 {v['f1']:.4f}"
        f"  confusion [[tn, fp], [fn, tp]] = {v['confusion']}",
    ]
    if "accuracy_at_model_threshold" in v:
        lines.append(f"  accuracy at the model's calibrated threshold: {v['accuracy_at_model_threshold']:.4f}")
    if result.identification:
        i = result.identification
        open_set = "".join(f"  DIR@FAR={k[8:]} {v:.4f}" for k, v in i.items() if k.startswith("dir_far_"))
        lines.append(
            f"identification: rank-1 {i['rank1']:.4f}  rank-5 {i['rank5']:.4f}{open_set}  macro F1 {i['macro_f1']:.4f}"
            f"  (gallery {i['n_gallery']}, probes {i['n_probes']}, distractors {i.get('n_distractors', 0)})"
        )
    lines.append(
        f"speed: {m['images_per_s']:.1f} images/s; parameters {int(m['parameters']):,}; weights {m.get('weights_mb', 0):.1f} MB"
    )
    return "\n".join(lines)
