"""The backbone benchmark: train every model the same way, evaluate on one protocol, compare.

One MLflow parent run per benchmark, one nested child run per backbone (training
and evaluation of that model), then for the whole benchmark: ROC and CMC curves of
all models on one plot each, the confusion matrices, a t-SNE/PCA of a few
identities, and a results table (CSV + Markdown, also printed). The best model is
registered in the MLflow model registry and gets the ``champion`` alias.

Resume: a model whose child run finished in an earlier benchmark with the same
configuration hash (and whose model directory is still in the output folder) is not
trained again; its saved evaluation is reused in the new parent run.

Size (~540 lines, over the ~400 guideline): every step here reads one ``BenchmarkConfig``
(validate all models, train, evaluate, resume by hash, tabulate, register); the MLflow
comparison artifacts are in ``tracking.compare``, registration in ``tracking.registry``.
A split into a package (config / run / summary) is the next step if it grows.
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
from typing import Any

from facerec.config import check_config, from_dict, merge, to_dict
from facerec.errors import ConfigError
from facerec.evaluation.protocols import EvalConfig, EvalResult, EvalSet

log = logging.getLogger(__name__)

CONFIG_HASH_TAG = "facerec.config_hash"
BENCHMARK_TAG = "facerec.benchmark"
#: On a child run that reused a finished model: the run it reused (which may itself have reused one).
RESUMED_TAG = "facerec.resumed_from"
#: Metrics where lower is better (the champion is chosen with the others maximised).
LOWER_IS_BETTER = frozenset({"eer"})


@dataclass(frozen=True)
class ModelEntry:
    """One backbone of a benchmark: registry name, input size, start weights.

    ``optim``: this backbone's optimizer settings over the shared ``train.optim`` (a ViT from
    scratch wants a lower learning rate than a CNN with BatchNorm); loss, head, augmentation,
    data and budget stay shared. ``train``: other per-backbone overrides of the shared ``train``
    mapping (e.g. steps that fill one wall-clock budget at this backbone's speed).
    """

    name: str
    input_size: int | None = None
    pretrained: str = "none"
    embedding_dim: int | None = None
    optim: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    #: Names this entry where one backbone is listed more than once (a strategy study: ``lora``,
    #: ``full``, ...); shown after ``<name>@<size>px`` in the tables and runs, and matched by ``only``.
    label: str | None = None

    @property
    def key(self) -> str:
        """The entry's unique name in the experiment: ``<name> <label>`` or the registry name."""
        return f"{self.name} {self.label}" if self.label else self.name


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
    #: Overrides every model's ``pretrained`` (e.g. ``none`` on a machine that cannot fetch weights).
    pretrained: str | None = None
    only: tuple[str, ...] = ()
    register: RegistryConfig = field(default_factory=RegistryConfig)

    def __post_init__(self) -> None:
        names = [m.key for m in self.models]
        unknown = sorted(set(self.only) - set(names) - {m.name for m in self.models})
        check_config(
            self,
            [
                (bool(self.models), "models must list at least one model"),
                (len(set(names)) == len(names), f"models lists a model twice: {names}"),
                (not unknown, f"only names {', '.join(map(repr, unknown))}, not among the models {names}"),
            ],
        )

    @property
    def out(self) -> Path:
        return Path(self.output_dir or Path("outputs") / "benchmark" / self.name)

    def selected(self) -> list[ModelEntry]:
        return [m for m in self.models if not self.only or m.name in self.only or m.key in self.only]


@dataclass
class ModelOutcome:
    """One model's result in a benchmark."""

    entry: ModelEntry
    weights: str
    label: str
    run_id: str
    model_dir: Path
    result: EvalResult
    train_seconds: float
    resumed: bool
    trainable_params: int | None = None
    #: the training's per-epoch validation rows (``epoch``, ``val_auc``, ...; empty for zero-shot runs)
    history: list[dict[str, float]] = field(default_factory=list)


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
    model = {"name": entry.name, "pretrained": config.pretrained or entry.pretrained}
    if entry.input_size is not None:
        model["input_size"] = entry.input_size
    if entry.embedding_dim is not None:
        model["embedding_dim"] = entry.embedding_dim
    return merge(merge(config.train, entry.train), {"model": model, "device": config.device, "optim": entry.optim})


def model_hash(config: BenchmarkConfig, entry: ModelEntry) -> str:
    """Everything that changes a model's numbers: backbone and weights, training, evaluation."""
    # optim and train overrides count inside the train mapping (and leave older hashes unchanged)
    # (and an unset label is left out, so entries written before labels existed keep their hashes)
    backbone = {k: v for k, v in to_dict(entry).items() if k not in ("optim", "train") and (k, v) != ("label", None)}
    return _hash(
        {
            "model": backbone,
            "pretrained": config.pretrained,
            "train": model_train_config(config, entry),
            "evaluate": to_dict(config.evaluate),
        }
    )


# --------------------------------------------------------------------- running
def run_benchmark(config: BenchmarkConfig, progress: bool = True) -> BenchmarkResult:
    """Train + evaluate every selected model under one parent run; summarise; register the champion."""
    import mlflow

    from facerec.evaluation.protocols import prepare_images, protocol_set
    from facerec.tracking.datasets import evaluation_dataset, log_dataset
    from facerec.tracking.runs import configure_tracking, mlflow_run

    started = time.perf_counter()
    check(config)
    configure_tracking()
    config.out.mkdir(parents=True, exist_ok=True)
    eval_set = prepare_images(protocol_set(config.evaluate), config.evaluate, progress)
    train_data = training_data(config, progress)
    tags = {
        BENCHMARK_TAG: config.name,
        "facerec.protocol": config.evaluate.protocol,
        "facerec.data": str(eval_set.root),
    }
    params = {
        "benchmark": {k: v for k, v in to_dict(config).items() if k not in ("models", "train", "evaluate")},
        "models": ", ".join(m.key + (f"@{m.input_size}px" if m.input_size else "") for m in config.selected()),
        "evaluate": to_dict(config.evaluate),
        "train": config.train or "zero-shot",
    }
    outcomes: list[ModelOutcome] = []
    with mlflow_run(config.experiment, parent_run_name(config), params=params, tags=tags) as parent:
        log_dataset(evaluation_dataset(eval_set, config.evaluate), "evaluation")
        for entry in config.selected():
            outcomes.append(run_model(config, entry, eval_set, train_data, progress))
        table = results_table(outcomes)
        log_summary(config, outcomes, table)
        champion = register_champion(config, outcomes) if config.register.enabled else None
        if champion:
            mlflow.set_tag("facerec.champion", f"{champion['label']} v{champion['version']}")
        seconds = time.perf_counter() - started
        mlflow.log_metric("benchmark_seconds", seconds)
    return BenchmarkResult(parent.info.run_id, outcomes, table["markdown"], champion, seconds)


def check(config: BenchmarkConfig) -> None:
    """Fail before any work: every model's training config must build, folder training needs a holdout."""
    if config.train is None:
        return
    from facerec.training.config import TrainConfig
    from facerec.training.config import check as check_train  # the benchmark has a check() of its own

    for entry in config.selected():
        try:  # its types and choices, then the cross-field rules `facerec train` checks
            check_train(from_dict(TrainConfig, model_train_config(config, entry)))
        except ConfigError as exc:
            raise ConfigError(f"benchmark {config.name}, model {entry.key}: train.{exc}") from exc
    if config.evaluate.protocol == "folder" and config.evaluate.holdout <= 0:
        raise ConfigError(
            "the folder protocol evaluates on the training folder's identities: set evaluate.holdout > 0 "
            "so that the benchmark trains on the others"
        )


def recipe(config: BenchmarkConfig, entry: ModelEntry) -> str:
    """``<loss>-<strategy>`` of the shared training, or ``zero-shot:<weights>``."""
    if config.train is None:
        return f"zero-shot:{config.pretrained or entry.pretrained}"
    from facerec.training.trainer import TrainConfig

    train = from_dict(TrainConfig, model_train_config(config, entry))
    return f"{train.loss.kind}-{train.strategy.kind}"


def data_label(config: BenchmarkConfig) -> str:
    """The evaluation data: the LFW protocol, or ``folder:<name>``."""
    if config.evaluate.protocol != "folder":
        return config.evaluate.protocol
    from facerec.data.datasets import sample_root

    return f"folder:{Path(config.evaluate.data).name if config.evaluate.data else sample_root().name}"


def parent_run_name(config: BenchmarkConfig) -> str:
    """``benchmark quick: 6 models@32-224px supcon-full folder:lfw-sample``."""
    from facerec.tracking.runs import run_name

    entries = config.selected()
    sizes = sorted({e.input_size for e in entries if e.input_size})
    size = "" if not sizes else f"@{sizes[0]}px" if len(sizes) == 1 else f"@{sizes[0]}-{sizes[-1]}px"
    recipes = sorted({recipe(config, e) for e in entries})
    models = entries[0].name if len(entries) == 1 else f"{len(entries)} models"
    return f"benchmark {config.name}: " + run_name(f"{models}{size}", "/".join(recipes), data_label(config))


def training_data(config: BenchmarkConfig, progress: bool = True) -> dict[str, Any]:
    """``train.data`` keys the benchmark sets: with the folder protocol, a folder of the identities
    that are not held out for evaluation, so training never sees an evaluation identity."""
    from facerec.evaluation.protocols import training_folder

    if config.train is None or config.evaluate.protocol != "folder":
        return {}
    tree = training_folder(config.evaluate, config.out / "train-identities", progress)
    return {"kind": "folder", "root": str(tree), "crops": str(tree) if config.evaluate.crop else None}


def find_finished(digest: str) -> str | None:
    """The newest finished run with the same model hash in the active (parent) run's experiment."""
    import mlflow

    runs = mlflow.search_runs(
        [mlflow.active_run().info.experiment_id],
        filter_string=f"tags.`{CONFIG_HASH_TAG}` = '{digest}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0].info.run_id if runs else None


def run_model(
    config: BenchmarkConfig, entry: ModelEntry, eval_set: EvalSet, train_data: dict[str, Any], progress: bool
) -> ModelOutcome:
    """One nested child run per model: train (the trainer's run is the child), evaluate into it, log.

    A finished earlier run with the same hash whose files are still in the output folder is
    reused: a new child run records its evaluation, tagged ``facerec.resumed_from``.
    """
    import mlflow

    from facerec.evaluation.protocols import RESULT_FILE, evaluate_model, log_result, model_info
    from facerec.models import is_model_dir, load_model_dir
    from facerec.tracking.compare import headline
    from facerec.tracking.runs import log_params, mlflow_run, run_name

    digest = model_hash(config, entry)
    slug = f"{entry.key.replace(' ', '-')}-{digest[:8]}"
    slot = config.out / "models" / slug
    model_dir = slot / "model"
    previous = find_finished(digest) if config.resume else None
    reuse = previous is not None and (slot / "eval" / RESULT_FILE).is_file() and is_model_dir(model_dir)
    if previous and not reuse:
        log.info("%s: finished run %s found, but its files under %s are gone: running again", entry.key, previous, slot)
    train_config = model_train_config(config, entry)
    tags = {
        CONFIG_HASH_TAG: digest,
        BENCHMARK_TAG: config.name,
        "facerec.model": entry.name,
        "facerec.weights": config.pretrained or entry.pretrained,
        "facerec.protocol": config.evaluate.protocol,
    }
    train_info: dict[str, Any] = {"seconds": 0.0}
    if reuse:
        log.info("%s: reusing finished run %s (configuration %s)", entry.key, previous, digest)
        result = EvalResult.load(slot / "eval")
        train_info = json.loads((slot / "train.json").read_text(encoding="utf-8"))
        if "history" not in train_info:  # written before train.json kept it: the training run logged it
            train_info["history"] = logged_history(previous)
            write_train_info(slot, train_info)
        context = mlflow_run(
            config.experiment,
            run_name(result.model["label"], recipe(config, entry), data_label(config)),
            tags={**tags, RESUMED_TAG: previous},
            nested=True,
        )
    elif train_config is None:
        context = mlflow_run(config.experiment, f"{entry.name} {config.name}", tags=tags, nested=True)
    else:
        trained = train_model(config, entry, merge(train_config, {"data": train_data}), slot)
        train_info = {
            "seconds": trained.seconds,
            "trainable_params": trained.metrics.get("trainable_params"),
            "history": [
                {k: float(v) for k, v in row.items() if isinstance(v, (int, float))} for row in trained.history
            ],
        }
        context = mlflow.start_run(run_id=trained.run_id, nested=True)
    with context as run:
        if not reuse:
            if train_config is None:
                embedder = zero_shot_model(config, entry, model_dir)
            else:
                embedder = load_model_dir(model_dir, config.device)
            label = " ".join(filter(None, [f"{embedder.name}@{embedder.input_size}px", entry.label]))
            result = evaluate_model(
                embedder, eval_set, config.evaluate, model_info(embedder, model_dir, label), progress
            )
            result.save(slot / "eval")
            write_train_info(slot, train_info)
        name = run_name(result.model["label"], recipe(config, entry), data_label(config))
        mlflow.set_tags({**tags, "mlflow.runName": name})
        if train_config is None or reuse:
            log_params({"model": to_dict(entry), "train": train_config or "zero-shot"})
        train_seconds = float(train_info["seconds"])
        mlflow.log_metric("train_seconds", train_seconds)
        log_result(result, config.evaluate, eval_set=eval_set)
        # The same headline keys in every child (NaN = not measured): the UI's charts line them up.
        mlflow.log_metrics(headline({**result.metrics, "train_minutes": train_seconds / 60}))
    return ModelOutcome(
        entry,
        tags["facerec.weights"],
        result.model["label"],
        run.info.run_id,
        model_dir,
        result,
        train_seconds,
        reuse,
        train_info.get("trainable_params"),
        train_info.get("history", []),
    )


def write_train_info(slot: Path, info: dict[str, Any]) -> None:
    """``slot/train.json`` (seconds, trainable parameters, validation history), replaced atomically."""
    from facerec.files import atomic_write

    with atomic_write(slot / "train.json") as handle:
        json.dump(info, handle)


def logged_history(run_id: str, keys: Sequence[str] = ("val_auc", "val_accuracy", "val_eer")) -> list[dict[str, float]]:
    """A training run's per-epoch validation rows as MLflow holds them (metric steps are epochs).

    ``run_id`` may be a child that reused a finished model: its ``facerec.resumed_from`` chain
    leads back to the run that trained it.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    while previous := client.get_run(run_id).data.tags.get(RESUMED_TAG):  # each names an older run
        run_id = previous
    rows: dict[int, dict[str, float]] = {}
    for key in keys:
        for metric in client.get_metric_history(run_id, key):
            rows.setdefault(metric.step, {"epoch": float(metric.step)})[key] = metric.value
    return [rows[epoch] for epoch in sorted(rows)]


def train_model(config: BenchmarkConfig, entry: ModelEntry, train_config: dict[str, Any], slot: Path) -> Any:
    """Fine-tune with the shared config; the trainer's nested run becomes the model's child run.

    The run folder is ``slot`` (model in ``slot/model``); an interrupted run resumes from its checkpoint.
    """
    from facerec.training import CHECKPOINT_FILE, TrainConfig, train

    paths = {
        "output": str(slot.parent),
        "run_name": slot.name,
        "resume": (slot / CHECKPOINT_FILE).is_file(),
        "overwrite": False,
    }
    train_cfg = from_dict(TrainConfig, merge(train_config, paths))  # check() built it already without the paths
    if paths["resume"]:
        log.info("%s: resuming the interrupted training in %s", entry.key, slot)
    return train(train_cfg, run_name=slot.name, nested=True)


def zero_shot_model(config: BenchmarkConfig, entry: ModelEntry, model_dir: Path) -> Any:
    """The start weights as they are, saved as a model directory (for size and registration)."""
    from facerec.models import load_model, save_model_dir

    options = {k: v for k, v in (("input_size", entry.input_size), ("embedding_dim", entry.embedding_dim)) if v}
    embedder = load_model(entry.name, pretrained=config.pretrained or entry.pretrained, device=config.device, **options)
    save_model_dir(embedder, model_dir, config={"zero_shot": to_dict(entry)}, info={"benchmark": config.name})
    return embedder


# --------------------------------------------------------------------- summary
TABLE_COLUMNS = (
    ("model", "model"),
    ("weights", "weights"),
    ("params_m", "params (M)"),
    ("trainable_m", "trainable (M)"),
    ("weights_mb", "size (MB)"),
    ("train_min", "train (min)"),
    ("images_per_s", "images/s"),
    ("accuracy", "accuracy"),
    ("auc", "AUC"),
    ("eer", "EER"),
    ("tar_far_1e-2", "TAR@1e-2"),
    ("tar_far_1e-3", "TAR@1e-3"),
    ("rank1", "rank-1"),
    ("rank5", "rank-5"),
    ("dir_far_1e-2", "DIR@1e-2"),
    ("macro_f1", "macro F1"),
)


#: Columns rounded in ``table_rows`` already (sizes, times, speeds), printed as they are.
ROUNDED_COLUMNS = frozenset({"params_m", "trainable_m", "weights_mb", "train_min", "images_per_s"})


def table_rows(outcomes: Sequence[ModelOutcome]) -> list[dict[str, Any]]:
    """One flat row per model: identity, cost and every scalar metric."""
    rows = []
    for o in outcomes:
        m = o.result.metrics
        row = {"model": o.label, "weights": o.weights, "run_id": o.run_id, "resumed": o.resumed}
        row.update({k: round(v, 4) for k, v in m.items()})
        row.update(
            params_m=round(m.get("parameters", 0) / 1e6, 2),
            trainable_m="" if o.trainable_params is None else round(o.trainable_params / 1e6, 3),
            weights_mb=round(m.get("weights_mb", 0), 1),
            train_min=round(o.train_seconds / 60, 2),
            images_per_s=round(m["images_per_s"], 1),
        )
        rows.append(row)
    return rows


def results_table(outcomes: Sequence[ModelOutcome]) -> dict[str, str]:
    """``{"csv": all columns, "markdown": the main columns, "html": the same as a page}``."""
    rows = table_rows(outcomes)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    from facerec.tracking.compare import html_table

    titles = [title for _, title in TABLE_COLUMNS]
    header = "| " + " | ".join(titles) + " |"
    rule = "|" + "|".join("---" if key in ("model", "weights") else "---:" for key, _ in TABLE_COLUMNS) + "|"
    lines = [header, rule]
    cells_by_row = []
    for row in rows:
        cells = []
        for key, _ in TABLE_COLUMNS:
            value = row.get(key, "")
            if key == "accuracy" and "accuracy_std" in row:
                value = f"{row['accuracy']:.4f} ± {row['accuracy_std']:.4f}"
            elif isinstance(value, float) and key not in ROUNDED_COLUMNS:
                value = f"{value:.4f}"
            cells.append(str(value if value != "" else "–"))
        lines.append("| " + " | ".join(cells) + " |")
        cells_by_row.append(cells)
    page = html_table(titles, cells_by_row, "Benchmark results", "accuracy: mean ± std over the folds")
    return {"csv": buffer.getvalue(), "markdown": "\n".join(lines) + "\n", "html": page}


def log_summary(config: BenchmarkConfig, outcomes: Sequence[ModelOutcome], table: dict[str, str]) -> None:
    """Whole-benchmark plots and the results table, to the parent run and the output folder."""
    from facerec.evaluation import plots
    from facerec.files import atomic_path
    from facerec.tracking.compare import log_comparison
    from facerec.tracking.runs import log_figure

    results = {o.label: o.result for o in outcomes}
    protocol = config.evaluate.protocol
    figures = {
        "roc.png": plots.roc_figure({k: r.roc() for k, r in results.items()}, f"ROC, {config.name} ({protocol})"),
        "confusion.png": plots.confusion_grid(
            {k: r.verification["confusion"] for k, r in results.items()},
            f"Confusion matrices at the k-fold threshold, {config.name}",
        ),
    }
    histories = {o.label: o.history for o in outcomes if o.history}
    if histories:  # learning curves: how far each budget took each model, on held-out training identities
        figures["validation.png"] = plots.curves_by_model(
            histories, "val_auc", "validation AUC", f"Validation AUC by epoch, {config.name}"
        )
    cmcs = {k: r.cmc for k, r in results.items() if r.cmc is not None}
    if cmcs:
        figures["cmc.png"] = plots.cmc_figure(cmcs, f"CMC, {config.name} ({protocol})")
    panels = {
        k: (r.scatter_vectors, r.scatter_names.tolist()) for k, r in results.items() if len(r.scatter_vectors) >= 3
    }
    if panels:
        figures["embeddings.png"] = plots.embedding_grid(panels, config.evaluate.projection, config.evaluate.seed)
    plot_dir = config.out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    for name, figure in figures.items():
        with atomic_path(plot_dir / name) as tmp:
            figure.savefig(tmp, dpi=110, format="png")
        log_figure(figure, f"plots/{name}")
    by_model = {o.label: {**o.result.metrics, "train_minutes": o.train_seconds / 60} for o in outcomes}
    tables = {"md": table["markdown"], "html": table["html"], "csv": table["csv"]}
    log_comparison(by_model, tables, f"{config.name} ({protocol})", config.out)


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
    from facerec.tracking.registry import register_model_dir

    best = champion_of(outcomes, config.register.metric)
    return register_model_dir(
        best.model_dir,
        best.run_id,
        config.register.name,
        config.register.alias,
        metric=config.register.metric,
        value=best.result.metrics[config.register.metric],
        protocol=config.evaluate.protocol,
        label=best.label,
        benchmark=config.name,
    )


def summary(result: BenchmarkResult) -> dict[str, Any]:
    """JSON-ready summary with a printable ``text`` (the Markdown table and the champion)."""
    champion = result.champion
    lines = [result.table_markdown]
    if champion:
        where = (
            champion["uri"]
            if champion["at_alias"]
            else f"{champion['uri']} (@{champion['alias']} kept: it scores higher)"
        )
        verb = "registered as" if champion["registered"] else "already registered as"
        lines.append(f"best: {champion['label']} ({champion['metric']} {champion['value']:.4f}) {verb} {where}")
    lines.append(f"MLflow parent run {result.parent_run_id}; {result.seconds / 60:.1f} min")
    return {
        "parent_run_id": result.parent_run_id,
        "seconds": round(result.seconds, 1),
        "champion": champion,
        "models": table_rows(result.outcomes),
        "text": "\n".join(lines),
    }
