"""Contrastive fine-tuning of an embedder: config, loop, validation, calibration, checkpoints.

One call, ``train(config)``, runs the whole stage: it reads the training
identities (LFW View 1 ``peopleDevTrain`` or an identity folder), carves an
identity-disjoint validation split out of them (never DevTest), fine-tunes
with the configured strategy and loss, validates every epoch (pair accuracy
and ROC AUC), keeps the best-on-validation weights, calibrates the
verification threshold on the validation pairs and writes a model directory
(``save_model_dir``: weights, config, fingerprint, threshold) that
``--model PATH`` accepts everywhere. LoRA adapters are merged into plain
weights before saving, so the directory loads with the plain architecture.

Every run is an MLflow run (params, per-epoch metrics, curves, the model
directory as an artifact, the start weights as a tag). Under ``torchrun`` the
loop runs as DistributedDataParallel (NCCL on CUDA, gloo on CPU); each rank
draws its share of every global batch, only rank 0 validates, logs and saves.
``run_dir/checkpoint.pt`` (model, optimizer, scheduler, scaler, epoch, RNG
states; read with ``weights_only=True``) lets ``resume=true`` continue after
the last finished epoch.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from facerec.config import flatten, to_dict
from facerec.data.datasets import (
    LFW,
    ImageRecord,
    generate_pairs,
    read_identity_folder,
    resolve_data_root,
    sample_root,
    split_by_identity,
)
from facerec.data.sampling import LabelledDataset, PairBatchSampler, PairDataset, PKBatchSampler, seed_worker
from facerec.data.transforms import Augment, seed_transform, train_transform
from facerec.errors import ConfigError, DataError, TrainingError
from facerec.files import atomic_path
from facerec.models import Embedder, is_model_dir, load_model, save_model_dir
from facerec.models.lora import merge_lora
from facerec.training.losses import ContrastiveLoss, InfoNCELoss, SupConLoss
from facerec.training.strategies import StrategyConfig, apply_strategy, param_groups, parameter_counts, set_train_mode

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
MODEL_SUBDIR = "model"
CHECKPOINT_FORMAT = 1
#: Config sections that must match for ``resume`` (the rest: budget, workers, device may change).
RESUME_KEYS = ("model", "data", "strategy", "loss", "optim", "batch_size", "steps_per_epoch", "seed")


# ------------------------------------------------------------------- config
@dataclass(frozen=True)
class ModelConfig:
    """Start model: a registry name (with ``pretrained`` weights), a model directory or an MLflow URI."""

    name: str = "clip-vit-b-32"
    pretrained: str = "none"
    input_size: int | None = None
    embedding_dim: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    """Training identities.

    ``kind``: ``lfw`` = View 1 ``peopleDevTrain`` of the LFW root; ``folder`` = every identity
    of ``root/<identity>/``; ``sample`` = the embedded 50-identity sample. ``crops``: a folder of
    face crops mirroring that tree (the crop stage's output); without it the photos are used
    as they are, resized to the input size. ``augmented_fraction``: share of positive pairs
    (or of P identities) that are two augmentations of one photo, which is how identities
    with a single image take part.
    """

    kind: Literal["lfw", "folder", "sample"] = "lfw"
    root: str | None = None
    crops: str | None = None
    val_fraction: float = 0.1
    val_pairs: int = 1000
    augment: Augment = "strong"
    augmented_fraction: float = 0.25


@dataclass(frozen=True)
class LossConfig:
    """``contrastive`` uses pair batches (``positive_fraction``); ``infonce``/``supcon`` use P x K batches."""

    kind: Literal["contrastive", "infonce", "supcon"] = "contrastive"
    margin: float = 0.5
    temperature: float = 0.1
    positive_fraction: float = 0.5
    P: int = 16
    K: int = 4


@dataclass(frozen=True)
class OptimConfig:
    """AdamW; ``warmup`` is a fraction of all steps (linear), then cosine decay to 0; ``clip_grad``: max norm."""

    lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: float = 0.05
    clip_grad: float | None = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """One fine-tuning run. ``batch_size``: pairs per step and process (contrastive loss only).

    ``steps_per_epoch``: default one pass over the training images across all processes.
    ``max_minutes``: wall-clock budget; the loop stops after the step that exceeds it.
    ``device``: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N``. ``amp``: mixed
    precision, on CUDA only (bf16 where supported, else fp16 with a grad scaler).
    ``output``: base folder; the run lives in ``output/<run name>/`` (checkpoint, best weights,
    ``model/``). ``resume``: continue from that folder's checkpoint; ``overwrite``: start over
    even though a checkpoint is there.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = 10
    max_minutes: float | None = None
    batch_size: int = 64
    steps_per_epoch: int | None = None
    select_metric: Literal["auc", "accuracy"] = "auc"
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    num_workers: int = 2
    val_batch_size: int = 64
    output: str = "runs/train"
    resume: bool = False
    overwrite: bool = False
    experiment: str = "facerec-train"
    run_name: str | None = None


@dataclass
class TrainResult:
    """What a run produced: the model directory and its validation figures."""

    model_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    threshold: float
    seconds: float
    images_per_s: float
    run_id: str | None = None


def train(config: TrainConfig, run_name: str | None = None, nested: bool = False) -> TrainResult:
    """Fine-tune per ``config``; ``nested=True`` logs as a child of the active MLflow run."""
    return Trainer(config, run_name).fit(nested=nested)


def default_run_name(config: TrainConfig) -> str:
    model = Path(config.model.name).name if is_model_dir(config.model.name) else config.model.name
    size = f"-{config.model.input_size}px" if config.model.input_size else ""
    return f"{model}{size}-{config.strategy.kind}-{config.loss.kind}"


# ------------------------------------------------------------------ helpers
def _check(config: TrainConfig) -> None:
    if not 0.0 < config.data.val_fraction < 1.0:
        raise ConfigError(
            f"data.val_fraction must be in (0, 1): validation picks the model and the threshold, got {config.data.val_fraction}"
        )
    if config.epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {config.epochs}")
    if config.max_minutes is not None and config.max_minutes <= 0:
        raise ConfigError(f"max_minutes must be > 0, got {config.max_minutes}")
    if config.data.augment == "none" and config.data.augmented_fraction > 0:
        raise ConfigError(
            "data.augmented_fraction > 0 pairs a photo with itself and needs augmentation: set data.augment"
        )
    if config.resume and config.overwrite:
        raise ConfigError("resume and overwrite exclude each other")


def load_records(config: DataConfig, seed: int) -> tuple[list[ImageRecord], list[ImageRecord], str]:
    """(train records, validation records, a description of the source): identity-disjoint split."""
    crops = Path(config.crops).expanduser() if config.crops else None
    if crops is not None and not crops.is_dir():
        raise DataError(f"crops folder {crops} does not exist (run the crop stage first)")
    if config.kind == "lfw":
        lfw = LFW.at(config.root)
        records = lfw.dev_train(images_dir=crops)
        source = f"LFW peopleDevTrain ({crops or lfw.images_dir})"
    else:
        root = sample_root() if config.kind == "sample" else resolve_data_root(config.root)
        records = read_identity_folder(crops or root)
        source = f"identity folder {crops or root}"
    if crops is None:
        log.warning("no crops folder: training on the photos as they are, resized to the input size")
    train_records, val_records = split_by_identity(records, config.val_fraction, seed)
    if not train_records:
        raise DataError(f"val_fraction={config.val_fraction} leaves no training identities")
    return train_records, val_records, source


def make_loss(config: LossConfig) -> nn.Module:
    try:
        if config.kind == "contrastive":
            return ContrastiveLoss(config.margin)
        return (InfoNCELoss if config.kind == "infonce" else SupConLoss)(config.temperature)
    except ValueError as exc:
        raise ConfigError(f"loss: {exc}") from None


def warmup_cosine(total_steps: int, warmup_steps: int):
    """LR multiplier: linear warm-up from ~0 to 1, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    """Every RNG state as tensors and plain types (loadable with ``weights_only=True``)."""
    version, mt, gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass(frozen=True)
class Distributed:
    """This process's place in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def sync_buffers(self, module: nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm statistics) to every rank: DDP syncs them only
        at the start of each forward, so after the last step each rank holds its own."""
        if self.world_size > 1:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def sum(self, *values: float) -> list[float]:
        """Sum scalars over all processes."""
        if self.world_size == 1:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} requested but CUDA is not available here")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def init_distributed(device_spec: str) -> Distributed:
    """Read torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; join the process group when > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns = True
    if world_size > 1:
        log.info("distributed: rank %d/%d on %s (%s)", rank, world_size, device, dist.get_backend())
    return Distributed(rank, world_size, local_rank, device, owns)


# ------------------------------------------------------------------ trainer
class Trainer:
    """Holds the model, data, optimizer and state of one run; ``fit`` runs it."""

    def __init__(self, config: TrainConfig, run_name: str | None = None) -> None:
        _check(config)
        self.config = config
        self.run_name = run_name or config.run_name or default_run_name(config)
        self.run_dir = Path(config.output).expanduser() / self.run_name
        resume_state = self._read_checkpoint() if config.resume else None
        if resume_state is None and (self.run_dir / CHECKPOINT_FILE).exists() and not config.overwrite:
            raise ConfigError(
                f"{self.run_dir} already holds a checkpoint: pass resume=true to continue it, "
                "overwrite=true to start over, or another run_name/output"
            )
        self.dist = init_distributed(config.device)
        seed_everything(config.seed)

        self.train_records, self.val_records, self.data_source = load_records(config.data, config.seed)
        self.val_pairs = generate_pairs(self.val_records, config.data.val_pairs, seed=config.seed, n_folds=10)

        self.model = self._build_model()
        self.model.to(self.dist.device)
        self.loss_fn = make_loss(config.loss).to(self.dist.device)
        self.pairs = config.loss.kind == "contrastive"
        self.images_per_step = 2 * config.batch_size if self.pairs else config.loss.P * config.loss.K
        self.sampler, self.dataset = self._batches()

        groups = param_groups(self.model, config.optim.lr, config.optim.head_lr, config.optim.weight_decay)
        self.trainable = [p for g in groups for p in g["params"]]
        self.optimizer = torch.optim.AdamW(groups)
        total = config.epochs * self.sampler.steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(total, round(config.optim.warmup * total))
        )
        self.amp_dtype = torch.bfloat16 if self._cuda and torch.cuda.is_bf16_supported() else torch.float16
        self.use_amp = config.amp and self._cuda
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)

        self.epoch = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"epoch": -1, "score": -math.inf}
        self.previous_run_id: str | None = None
        self.run_id: str | None = None
        if resume_state is not None:
            self._restore(resume_state)
        self.network: nn.Module = self.model
        if self.dist.world_size > 1:
            ids = [self.dist.device.index] if self._cuda else None
            self.network = DistributedDataParallel(self.model, device_ids=ids)

    @property
    def _cuda(self) -> bool:
        return self.dist.device.type == "cuda"

    # ---- construction
    def _build_model(self) -> Embedder:
        m = self.config.model
        options = {k: v for k, v in (("input_size", m.input_size), ("embedding_dim", m.embedding_dim)) if v}
        model = load_model(m.name, pretrained=m.pretrained, **options, **m.options)
        if is_model_dir(m.name):
            self.start_weights = f"model-dir:{Path(m.name).resolve()} ({model.fingerprint})"
        else:
            self.start_weights = f"{model.name}:{m.pretrained}"
        apply_strategy(model, self.config.strategy)
        return model

    def _batches(self):
        c = self.config
        steps = c.steps_per_epoch or max(1, len(self.train_records) // (self.images_per_step * self.dist.world_size))
        common = dict(
            steps=steps,
            augmented_fraction=c.data.augmented_fraction,
            seed=c.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        transform = train_transform(self.model.input_size, c.data.augment)
        if self.pairs:
            sampler = PairBatchSampler(
                self.train_records, c.batch_size, positive_fraction=c.loss.positive_fraction, **common
            )
            return sampler, PairDataset(self.train_records, transform)
        sampler = PKBatchSampler(self.train_records, c.loss.P, c.loss.K, **common)
        return sampler, LabelledDataset(self.train_records, transform)

    def _loader(self, epoch: int) -> DataLoader:
        """A fresh loader per epoch: sampler and augmentation streams keyed on (seed, epoch, rank)."""
        seed = (self.config.seed * 1_000_003 + epoch * 1_009 + self.dist.rank) % 2**32
        self.sampler.set_epoch(epoch)
        seed_transform(self.dataset.transform, seed)
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            self.dataset,
            batch_sampler=self.sampler,
            num_workers=self.config.num_workers,
            worker_init_fn=seed_worker,
            generator=generator,
            pin_memory=self._cuda,
        )

    # ---- checkpoints
    def _state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best": dict(self.best),
            "history": self.history,
            "config": to_dict(self.config),
            "rng": _rng_state(),
            "mlflow_run_id": self.run_id,
        }

    def _save_checkpoint(self) -> None:
        with atomic_path(self.run_dir / CHECKPOINT_FILE) as tmp:
            torch.save(self._state(), tmp)

    def _save_best(self) -> None:
        with atomic_path(self.run_dir / BEST_FILE) as tmp:
            torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, tmp)

    def _read_checkpoint(self) -> dict[str, Any]:
        """The run's checkpoint, refused when the config changed in what shapes training."""
        path = self.run_dir / CHECKPOINT_FILE
        if not path.is_file():
            raise ConfigError(f"resume=true but {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError, EOFError) as exc:
            raise ConfigError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"{path} is not a facerec training checkpoint (format {CHECKPOINT_FORMAT})")
        saved, current = flatten(state["config"]), flatten(to_dict(self.config))
        for key in sorted(set(saved) | set(current)):
            if key.split(".")[0] in RESUME_KEYS and saved.get(key) != current.get(key):
                raise ConfigError(f"cannot resume {path}: {key} was {saved.get(key)!r}, now {current.get(key)!r}")
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.best, self.history = state["best"], state["history"]
        self.previous_run_id = state.get("mlflow_run_id")
        _set_rng_state(state["rng"])
        self.model.invalidate_fingerprint()
        log.info("resuming %s after epoch %d (step %d)", self.run_dir, self.epoch, self.global_step)

    # ---- validation
    def validate(self, model: Embedder | None = None) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        """(verification metrics, scores, labels) of ``model`` on the validation pairs."""
        from facerec.evaluation.metrics import verification_metrics
        from facerec.evaluation.protocols import pair_scores
        from facerec.models.inference import embed_paths

        model = model or self.model
        paths = sorted({p for pair in self.val_pairs for p in (pair.path1, pair.path2)})
        row = {p: i for i, p in enumerate(paths)}
        vectors = embed_paths(
            model, paths, batch_size=self.config.val_batch_size, num_workers=self.config.num_workers, progress=False
        )
        scores = pair_scores(vectors, row, self.val_pairs)
        labels = np.array([p.same for p in self.val_pairs])
        return verification_metrics(scores, labels, folds=np.array([p.fold for p in self.val_pairs])), scores, labels

    # ---- training
    def _step(self, batch: tuple[torch.Tensor, ...]) -> float:
        device = self.dist.device
        with torch.autocast(device_type=device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            if self.pairs:
                a, b, same = batch
                z = self.network(torch.cat([a, b]).to(device, non_blocking=True))
                loss = self.loss_fn(*z.chunk(2), same.to(device))
            else:
                images, labels = batch
                loss = self.loss_fn(self.network(images.to(device, non_blocking=True)), labels.to(device))
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} at step {self.global_step}: lower the learning rate")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.optim.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.trainable, self.config.optim.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.global_step += 1
        return loss.item()

    def _train_epoch(self, epoch: int, deadline: float | None) -> dict[str, Any]:
        set_train_mode(self.network)
        loss_sum, steps, stopped = 0.0, 0, False
        start = time.perf_counter()
        batches = tqdm(
            self._loader(epoch),
            total=self.sampler.steps,
            desc=f"epoch {epoch}/{self.config.epochs}",
            disable=not self.dist.is_main,
            leave=False,
        )
        for batch in batches:
            loss_sum += self._step(batch)
            steps += 1
            batches.set_postfix(loss=f"{loss_sum / steps:.4f}")
            if deadline is not None and self.dist.sum(float(time.monotonic() > deadline))[0] > 0:
                # every rank sees the same sum, so all stop after the same step
                stopped = True
                break
        seconds = time.perf_counter() - start
        self.dist.sync_buffers(self.model)
        loss_sum, steps_all = self.dist.sum(loss_sum, steps)
        images = steps_all * self.images_per_step
        return {
            "train_loss": loss_sum / max(1, steps_all),
            "images": images,
            "train_seconds": seconds,
            "images_per_s": images / seconds if seconds > 0 else 0.0,
            "lr": self.scheduler.get_last_lr()[0],
            "steps": steps,
            "stopped": stopped,
        }

    def _record_validation(self, row: dict[str, Any]) -> None:
        """Validate (rank 0), keep the best weights, append ``row`` to the history."""
        metrics, _, _ = self.validate()
        row.update(val_accuracy=metrics["accuracy"], val_auc=metrics["auc"], val_eer=metrics["eer"])
        score = row["val_auc" if self.config.select_metric == "auc" else "val_accuracy"]
        if score > self.best["score"]:
            self.best = {"epoch": row["epoch"], "score": score}
            self._save_best()
        self.history.append(row)

    def fit(self, nested: bool = False) -> TrainResult:
        """Train, select, calibrate, save; returns what the run produced."""
        try:
            context = self._tracking(nested) if self.dist.is_main else contextlib.nullcontext()
            with context:
                return self._fit()
        finally:
            if self.dist.owns_group:
                dist.destroy_process_group()

    def _fit(self) -> TrainResult:
        c = self.config
        start = time.monotonic()
        deadline = start + 60 * c.max_minutes if c.max_minutes else None
        if self.dist.is_main and self.epoch == 0 and not self.history:
            self._record_validation({"epoch": 0})
            self._log_row(self.history[-1])
        train_seconds, train_images = 0.0, 0
        while self.epoch < c.epochs:
            self.epoch += 1
            stats = self._train_epoch(self.epoch, deadline)
            train_seconds += stats["train_seconds"]
            train_images += stats["images"]
            if self.dist.is_main:
                row = {
                    "epoch": self.epoch,
                    **{k: stats[k] for k in ("train_loss", "images_per_s", "lr", "train_seconds")},
                }
                if stats["stopped"]:
                    row["partial"] = 1
                self._record_validation(row)
                self._save_checkpoint()
                self._log_row(row)
                log.info(
                    "epoch %d: loss %.4f, val acc %.4f, val AUC %.4f, %.1f img/s",
                    self.epoch,
                    row["train_loss"],
                    row["val_accuracy"],
                    row["val_auc"],
                    row["images_per_s"],
                )
            self.dist.barrier()
            if stats["stopped"]:
                log.warning("wall-clock budget of %.1f min reached during epoch %d", c.max_minutes, self.epoch)
                break
        seconds = time.monotonic() - start
        images_per_s = train_images / train_seconds if train_seconds > 0 else 0.0
        if not self.dist.is_main:
            return TrainResult(self.run_dir / MODEL_SUBDIR, {}, self.history, math.nan, seconds, images_per_s)
        return self._finish(seconds, images_per_s)

    # ---- final model
    def _final_model(self) -> tuple[Embedder, bool]:
        """A copy of the model with the best weights, LoRA merged into plain weights."""
        final = copy.deepcopy(self.model)
        best_path = self.run_dir / BEST_FILE
        if best_path.is_file():
            final.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True))
        merged = merge_lora(final) > 0
        final.invalidate_fingerprint()
        return final.eval(), merged

    def _finish(self, seconds: float, images_per_s: float) -> TrainResult:
        from facerec.evaluation.metrics import best_threshold

        final, merged = self._final_model()
        metrics, scores, labels = self.validate(final)
        threshold = best_threshold(scores, labels)
        summary = {
            "best_epoch": self.best["epoch"],
            "threshold": threshold,
            "seconds": seconds,
            "images_per_s": images_per_s,
            **{f"best_val_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
        }
        info = {
            "start_weights": self.start_weights,
            "trained_on": self.data_source,
            "threshold_calibrated_on": f"validation split of the training identities ({len(self.val_pairs)} pairs, "
            f"{len({r.identity for r in self.val_records})} identities)",
            "lora_merged": merged,
            "best_epoch": self.best["epoch"],
            "metrics": summary,
            "mlflow_run_id": self.run_id,
        }
        model_dir = save_model_dir(
            final, self.run_dir / MODEL_SUBDIR, threshold=threshold, config=to_dict(self.config), info=info
        )
        log.info(
            "saved %s (best epoch %d, val acc %.4f, AUC %.4f, threshold %.4f)",
            model_dir,
            self.best["epoch"],
            metrics["accuracy"],
            metrics["auc"],
            threshold,
        )
        if self.run_id:
            self._log_final(model_dir, summary, final.fingerprint)
        return TrainResult(model_dir, summary, self.history, threshold, seconds, images_per_s, self.run_id)

    # ---- tracking
    @contextlib.contextmanager
    def _tracking(self, nested: bool) -> Iterator[None]:
        from facerec.tracking.datasets import log_training_inputs
        from facerec.tracking.runs import mlflow_run, set_run_name, training_run_name

        counts = parameter_counts(self.model)
        params = {
            **to_dict(self.config),
            "run": {
                "steps_per_epoch": self.sampler.steps,
                "world_size": self.dist.world_size,
                "device": str(self.dist.device),
                "amp": self.use_amp,
                "train_images": len(self.train_records),
                "train_identities": len({r.identity for r in self.train_records}),
                "val_images": len(self.val_records),
                "val_pairs": len(self.val_pairs),
                "trainable_params": counts["trainable"],
                "total_params": counts["total"],
            },
        }
        tags = {
            "facerec.stage": "train",
            "facerec.start_weights": self.start_weights,
            "facerec.data": self.data_source,
            "facerec.strategy": self.config.strategy.kind,
        }
        if self.previous_run_id:
            tags["facerec.resumed_from_run"] = self.previous_run_id
        with mlflow_run(self.config.experiment, self.run_name, params=params, tags=tags, nested=nested) as run:
            self.run_id = run.info.run_id
            log_training_inputs(self.config.data, self.train_records, self.val_records, len(self.val_pairs))
            set_run_name(training_run_name(self.config, self.model))
            for row in self.history:  # a resumed run carries the earlier epochs' curves
                self._log_row(row)
            yield

    def _log_row(self, row: dict[str, Any]) -> None:
        if not self.run_id:
            return
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))

    def _log_final(self, model_dir: Path, summary: dict[str, Any], fingerprint: str) -> None:
        import mlflow

        from facerec.evaluation.plots import history_figure
        from facerec.tracking.pyfunc import log_model_dir
        from facerec.tracking.runs import log_figure

        mlflow.log_metrics({k: float(v) for k, v in summary.items()})
        mlflow.set_tag("facerec.fingerprint", fingerprint)
        for name, keys in (("train_loss", ("train_loss",)), ("validation", ("val_accuracy", "val_auc"))):
            curves = [{k: row[k] for k in ("epoch", *keys) if k in row} for row in self.history]
            log_figure(history_figure(curves, title=f"{self.run_name}: {name.replace('_', ' ')}"), f"plots/{name}.png")
        mlflow.log_dict({"history": self.history}, "history.json")
        mlflow.log_artifacts(str(model_dir), artifact_path=MODEL_SUBDIR)
        log_model_dir(model_dir)  # the pyfunc flavor (facerec.tracking.pyfunc), registrable as models:/
