"""The backbone benchmark: train every model the same way, evaluate on one protocol, compare.

One MLflow parent run per benchmark, one nested child run per backbone (training
and evaluation of that model), then for the whole benchmark: ROC and CMC curves of
all models on one plot each, the confusion matrices, a t-SNE/PCA of a few
identities, and a results table (CSV + Markdown, also printed). The best model is
registered in the MLflow model registry and gets the ``champion`` alias.

Resume: a model whose child run finished in an earlier benchmark with the same
configuration hash (and whose model directory is still in the output folder) is not
trained again; its saved evaluation is reused in the new parent run.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from facerec.config import from_dict, merge, to_dict
from facerec.errors import ConfigError
from facerec.evaluate import EvalConfig, EvalResult, EvalSet

log = logging.getLogger(__name__)

CONFIG_HASH_TAG = "facerec.config_hash"
BENCHMARK_TAG = "facerec.benchmark"
#: Metrics where lower is better (the champion is chosen with the others maximised).
LOWER_IS_BETTER = frozenset({"eer"})


@dataclass(frozen=True)
class ModelEntry:
    """One backbone of a benchmark: registry name, input size, start weights."""

    name: str
    input_size: int | None = None
    pretrained: str = "none"
    embedding_dim: int | None = None

    def label(self, input_size: int) -> str:
        return f"{self.name}@{input_size}px"


@dataclass(frozen=True)
class RegistryConfig:
    """Where the best model is registered, under which alias, chosen by which metric."""

    enabled: bool = True
    name: str = "facerec"
    alias: str = "champion"
    metric: str = "accuracy"


@dataclass(frozen=True)
class BenchmarkConfig:
    """An experiment file (``experiments/<name>.yaml``).

    ``train`` is a ``facerec.train.TrainConfig`` mapping shared by every model (loss,
    head, strategy, augmentation, data, budget); each model only sets its backbone.
    ``train: null`` evaluates the start weights as they are (zero-shot).
    """

    name: str
    models: tuple[ModelEntry, ...]
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    train: dict[str, Any] | None = None
    description: str = ""
    experiment: str = "facerec-benchmark"
    output_dir: str | None = None
    device: str = "cpu"
    resume: bool = True
    only: tuple[str, ...] = ()
    register: RegistryConfig = field(default_factory=RegistryConfig)
    projection: Literal["tsne", "pca"] = "tsne"

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("a benchmark needs at least one model")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"a model is listed twice: {names}")
        unknown = sorted(set(self.only) - set(names))
        if unknown:
            raise ValueError(f"only= names {unknown[0]!r}, which is not among the models {names}")

    @property
    def out(self) -> Path:
        return Path(self.output_dir or Path("outputs") / "benchmark" / self.name)

    def selected(self) -> list[ModelEntry]:
        return [m for m in self.models if not self.only or m.name in self.only]


@dataclass
class ModelOutcome:
    """One model's result in a benchmark."""

    entry: ModelEntry
    label: str
    run_id: str
    model_dir: Path
    result: EvalResult
    train_seconds: float
    resumed: bool


@dataclass
class BenchmarkResult:
    parent_run_id: str
    outcomes: list[ModelOutcome]
    table_markdown: str
    champion: dict[str, Any] | None
    seconds: float


def load_benchmark_config(path: str | Path, overrides: Sequence[str] = ()) -> BenchmarkConfig:
    """An experiment YAML (a path, or a name under ``experiments/``) plus ``key=value`` overrides."""
    from facerec.config import load_config

    path = Path(path)
    if not path.exists() and path.suffix == "" and (Path("experiments") / f"{path}.yaml").is_file():
        path = Path("experiments") / f"{path}.yaml"
    return load_config(BenchmarkConfig, path, overrides)


# --------------------------------------------------------------------- hashing
def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_train_config(config: BenchmarkConfig, entry: ModelEntry) -> dict[str, Any] | None:
    """The shared training mapping with this model's backbone filled in (None: zero-shot)."""
    if config.train is None:
        return None
    model = {"name": entry.name, "pretrained": entry.pretrained}
    if entry.input_size is not None:
        model["input_size"] = entry.input_size
    if entry.embedding_dim is not None:
        model["embedding_dim"] = entry.embedding_dim
    return merge(config.train, {"model": model, "device": config.device})


def model_hash(config: BenchmarkConfig, entry: ModelEntry) -> str:
    """Everything that changes a model's numbers: backbone, training, evaluation."""
    return _hash({"model": to_dict(entry), "train": model_train_config(config, entry), "evaluate": to_dict(config.evaluate)})


# --------------------------------------------------------------------- running
def run_benchmark(config: BenchmarkConfig, progress: bool = True) -> BenchmarkResult:
    """Train + evaluate every selected model under one parent run; summarise; register the champion."""
    import mlflow

    from facerec.evaluate import prepare_images, protocol_set
    from facerec.tracking import configure_tracking, mlflow_run

    started = time.perf_counter()
    configure_tracking()
    eval_set = prepare_images(protocol_set(config.evaluate), config.evaluate, progress)
    config.out.mkdir(parents=True, exist_ok=True)
    tags = {BENCHMARK_TAG: config.name, "facerec.protocol": config.evaluate.protocol, "facerec.data": str(eval_set.root)}
    params = {"benchmark": {k: v for k, v in to_dict(config).items() if k not in ("models", "train", "evaluate")},
              "models": ",".join(m.label(m.input_size or 0) for m in config.selected()),
              "evaluate": to_dict(config.evaluate), "train": config.train or "zero-shot"}
    outcomes: list[ModelOutcome] = []
    with mlflow_run(config.experiment, f"benchmark {config.name}", params=params, tags=tags) as parent:
        for entry in config.selected():
            outcomes.append(run_model(config, entry, eval_set, progress))
        table = results_table(outcomes)
        log_summary(config, outcomes, table)
        champion = register_champion(config, outcomes) if config.register.enabled else None
        if champion:
            mlflow.set_tag("facerec.champion", f"{champion['label']} (v{champion['version']})")
        seconds = time.perf_counter() - started
        mlflow.log_metric("benchmark_seconds", seconds)
    return BenchmarkResult(parent.info.run_id, outcomes, table["markdown"], champion, seconds)


def find_finished(config: BenchmarkConfig, entry: ModelEntry, digest: str) -> str | None:
    """The newest finished child run of an earlier benchmark with the same model hash."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(config.experiment)
    if experiment is None:
        return None
    runs = mlflow.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{CONFIG_HASH_TAG}` = '{digest}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1, output_format="list",
    )
    return runs[0].info.run_id if runs else None


def run_model(config: BenchmarkConfig, entry: ModelEntry, eval_set: EvalSet, progress: bool) -> ModelOutcome:
    """One nested child run: train (or reuse a finished earlier result), evaluate, log."""
    import mlflow

    from facerec.evaluate import log_result
    from facerec.tracking import mlflow_run

    digest = model_hash(config, entry)
    slot = config.out / entry.name
    model_dir = slot / "model"
    previous = find_finished(config, entry, digest) if config.resume else None
    resumed = previous is not None and (slot / "eval").is_dir() and (model_dir / "model.json").is_file()
    if previous and not resumed:
        log.info("%s: finished run %s found but its files in %s are gone: running again", entry.name, previous, slot)
    train_config = model_train_config(config, entry)
    tags = {CONFIG_HASH_TAG: digest, BENCHMARK_TAG: config.name, "facerec.model": entry.name,
            "facerec.weights": entry.pretrained, "facerec.protocol": config.evaluate.protocol}
    if resumed:
        tags["facerec.resumed_from"] = previous
    size = entry.input_size or 0
    with mlflow_run(config.experiment, f"{entry.label(size)} {config.name}", tags=tags, nested=True) as run:
        if resumed:
            log.info("%s: reusing finished run %s (same configuration %s)", entry.name, previous, digest)
            result = EvalResult.load(slot / "eval")
            train_seconds = float(json.loads((slot / "train.json").read_text())["seconds"])
        else:
            embedder, train_seconds = train_or_load(config, entry, train_config, model_dir)
            from facerec.evaluate import evaluate_model, model_info

            label = f"{embedder.name}@{embedder.input_size}px"
            result = evaluate_model(embedder, eval_set, config.evaluate, model_info(embedder, model_dir, label), progress)
            result.save(slot / "eval")
            (slot / "train.json").write_text(json.dumps({"seconds": train_seconds}), encoding="utf-8")
        mlflow.set_tag("mlflow.runName", f"{result.model['label']} {config.name}")
        from facerec.tracking import log_params

        log_params({"model": to_dict(entry), "train": train_config or "zero-shot", "input_size": result.model["input_size"]})
        mlflow.log_metric("train_seconds", train_seconds)
        log_result(result, config.evaluate)
    return ModelOutcome(entry, result.model["label"], run.info.run_id, model_dir, result, train_seconds, resumed)


def train_or_load(
    config: BenchmarkConfig, entry: ModelEntry, train_config: dict[str, Any] | None, model_dir: Path
) -> tuple[Any, float]:
    """Fine-tune with the shared training config (nested under the model's run), or save the start weights."""
    from facerec.embedders import load_model, load_model_dir, save_model_dir

    if train_config is None:
        options = {"input_size": entry.input_size} if entry.input_size else {}
        if entry.embedding_dim:
            options["embedding_dim"] = entry.embedding_dim
        embedder = load_model(entry.name, pretrained=entry.pretrained, device=config.device, **options)
        save_model_dir(embedder, model_dir, config={"zero_shot": to_dict(entry)}, info={"benchmark": config.name})
        return embedder, 0.0
    from facerec.train import TrainConfig, train

    try:
        train_cfg = from_dict(TrainConfig, merge(train_config, {"output_dir": str(model_dir)}))
    except ConfigError as exc:
        raise ConfigError(f"benchmark {config.name}, model {entry.name}: {exc}") from None
    outcome = train(train_cfg, run_name=f"train {entry.name}", nested=True)
    return load_model_dir(outcome.model_dir, config.device), float(outcome.seconds)


# --------------------------------------------------------------------- summary
TABLE_COLUMNS = (
    ("model", "model"), ("weights", "weights"), ("params_m", "params (M)"), ("weights_mb", "size (MB)"),
    ("train_min", "train (min)"), ("images_per_s", "images/s"), ("accuracy", "accuracy"), ("auc", "AUC"),
    ("eer", "EER"), ("tar_far_1e-2", "TAR@1e-2"), ("tar_far_1e-3", "TAR@1e-3"), ("rank1", "rank-1"),
    ("rank5", "rank-5"), ("dir_far_1e-2", "DIR@1e-2"), ("macro_f1", "macro F1"),
)


def table_rows(outcomes: Sequence[ModelOutcome]) -> list[dict[str, Any]]:
    """One flat row per model: identity, cost and every scalar metric."""
    rows = []
    for o in outcomes:
        m = o.result.metrics
        row = {
            "model": o.label, "weights": o.result.model.get("pretrained", "none"),
            "params_m": round(m.get("parameters", 0) / 1e6, 2), "weights_mb": round(m.get("weights_mb", 0), 1),
            "train_min": round(o.train_seconds / 60, 2), "run_id": o.run_id, "resumed": o.resumed,
        }
        row.update({k: round(v, 4) for k, v in m.items()})
        row["images_per_s"] = round(m["images_per_s"], 1)
        rows.append(row)
    return rows


def results_table(outcomes: Sequence[ModelOutcome]) -> dict[str, str]:
    """``{"csv": all columns, "markdown": the main columns}``."""
    rows = table_rows(outcomes)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    header = "| " + " | ".join(title for _, title in TABLE_COLUMNS) + " |"
    rule = "|" + "|".join("---" if key in ("model", "weights") else "---:" for key, _ in TABLE_COLUMNS) + "|"
    lines = [header, rule]
    for row in rows:
        cells = []
        for key, _ in TABLE_COLUMNS:
            value = row.get(key, "")
            if key == "accuracy" and "accuracy_std" in row:
                value = f"{row['accuracy']:.4f} ± {row['accuracy_std']:.4f}"
            elif isinstance(value, float) and key not in ("params_m", "weights_mb", "train_min", "images_per_s"):
                value = f"{value:.4f}"
            cells.append(str(value if value != "" else "–"))
        lines.append("| " + " | ".join(cells) + " |")
    return {"csv": buffer.getvalue(), "markdown": "\n".join(lines) + "\n"}


def log_summary(config: BenchmarkConfig, outcomes: Sequence[ModelOutcome], table: dict[str, str]) -> None:
    """Whole-benchmark plots and the results table, to the parent run and the output folder."""
    import mlflow

    from facerec import plots
    from facerec.tracking import log_figure

    results = {o.label: o.result for o in outcomes}
    protocol = config.evaluate.protocol
    figures = {
        "roc.png": plots.roc_figure({k: r.roc() for k, r in results.items()}, f"ROC, {config.name} ({protocol})"),
        "confusion.png": plots.confusion_grid({k: r.verification["confusion"] for k, r in results.items()},
                                              f"Confusion matrices at the k-fold threshold, {config.name}"),
    }
    cmcs = {k: r.cmc for k, r in results.items() if r.cmc is not None}
    if cmcs:
        figures["cmc.png"] = plots.cmc_figure(cmcs, f"CMC, {config.name} ({protocol})")
    panels = {k: (r.scatter_vectors, r.scatter_names.tolist()) for k, r in results.items() if len(r.scatter_vectors) >= 3}
    if panels:
        figures["embeddings.png"] = plots.embedding_grid(panels, config.projection, config.evaluate.seed)
    plot_dir = config.out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    for name, figure in figures.items():
        figure.savefig(plot_dir / name, dpi=110)
        log_figure(figure, f"plots/{name}")
    (config.out / "results.csv").write_text(table["csv"], encoding="utf-8")
    (config.out / "results.md").write_text(table["markdown"], encoding="utf-8")
    mlflow.log_text(table["csv"], "results/results.csv")
    mlflow.log_text(table["markdown"], "results/results.md")


# -------------------------------------------------------------------- registry
def champion_of(outcomes: Sequence[ModelOutcome], metric: str) -> ModelOutcome:
    """The best model by ``metric`` (maximised, or minimised for error rates)."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    scored = [o for o in outcomes if metric in o.result.metrics]
    if not scored:
        raise ConfigError(f"register.metric {metric!r} is not among the metrics: {sorted(outcomes[0].result.metrics)}")
    return max(scored, key=lambda o: sign * o.result.metrics[metric])


def register_champion(config: BenchmarkConfig, outcomes: Sequence[ModelOutcome]) -> dict[str, Any]:
    """Log the best model directory to its run and register it; move the alias when it wins."""
    from facerec.registry import register_model_dir

    best = champion_of(outcomes, config.register.metric)
    return register_model_dir(
        best.model_dir, best.run_id, config.register.name, config.register.alias,
        metric=config.register.metric, value=best.result.metrics[config.register.metric],
        protocol=config.evaluate.protocol, label=best.label, benchmark=config.name,
    )
