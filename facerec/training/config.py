"""Typed configuration of one fine-tuning run: ``TrainConfig`` and its sections.

Choices are ``Literal`` aliases beside the dataclass that uses them, so the CLI,
the YAML loader (``facerec.config``) and ``typing.get_args`` read one list.
``check(config)`` reports every cross-field problem at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from facerec.data.transforms import Augment
from facerec.errors import ConfigError
from facerec.training.distill import DistillConfig
from facerec.training.strategies import StrategyConfig

DataKind = Literal["lfw", "folder", "sample"]
Decode = Literal["once", "per_step"]
LossKind = Literal["contrastive", "infonce", "supcon", "arcface", "cosface", "subcenter-arcface", "distill"]
# P x K losses that compare photos of one person within the batch; the others (margin softmax
# against class weights, distillation against the teacher's vectors) also train with K = 1.
POSITIVE_LOSSES = ("infonce", "supcon")
SelectMetric = Literal["auc", "accuracy"]


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
    with a single image take part. ``decode``: ``once`` = every training crop decoded and resized
    into memory once per run, ``per_step`` = read from disk at every step (data too large for
    memory). ``augment``: ``light`` = flip, small affine and colour jitter on the batch in torch
    (cheap); ``strong`` = albumentations per image (adds blur, JPEG, occlusion; costs CPU time);
    see ``facerec.training.batches``. ``mixup``: Beta(a, a) parameter of blending each training
    image with another of its batch (0 = off); only with an online teacher (``loss.distill.online``),
    the one target that describes a blend.
    """

    kind: DataKind = "lfw"
    root: str | None = None
    crops: str | None = None
    val_fraction: float = 0.1
    val_pairs: int = 1000
    augment: Augment = "light"
    augmented_fraction: float = 0.25
    decode: Decode = "once"
    mixup: float = 0.0


@dataclass(frozen=True)
class LossConfig:
    """``contrastive`` uses pair batches (``positive_fraction``); the other kinds use P x K batches.

    ``arcface``/``cosface``/``subcenter-arcface``: margin-based softmax over the training identities
    (pytorch-metric-learning; ``softmax_margin``/``scale``: None = the papers' values, ArcFace's margin
    in degrees). ``distill``: distillation alone; with ``distill.teacher`` set, any other kind is mixed
    with distillation (``distill.weight``). See ``facerec.training.distill.DistillConfig``.
    ``K=1`` (P photos of P people a step, the most photos a batch can show) suits the losses
    that need no in-batch positives: ``distill`` alone and the margin-based softmaxes.
    """

    kind: LossKind = "contrastive"
    margin: float = 0.5
    temperature: float = 0.1
    positive_fraction: float = 0.5
    P: int = 16
    K: int = 4
    softmax_margin: float | None = None
    scale: float | None = None
    distill: DistillConfig = field(default_factory=DistillConfig)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW; ``warmup`` is a fraction of all steps (linear), then cosine decay to 0; ``clip_grad``: max norm.

    ``ema``: decay per step of an exponential moving average of the weights (e.g. 0.999, an
    average over ~1,000 steps); the average is what is validated, selected and saved, and the
    live weights' validation figures are logged beside it (``live_val_*``). None: off.
    """

    lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: float = 0.05
    clip_grad: float | None = 1.0
    ema: float | None = None


@dataclass(frozen=True)
class TrainConfig:
    """One fine-tuning run. ``batch_size``: pairs per step and process (contrastive loss only).

    ``steps_per_epoch``: default one pass over the training images across all processes.
    ``max_minutes``: wall-clock budget; the loop stops after the step that exceeds it.
    ``device``: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N``. ``amp``: mixed
    precision where the hardware computes it natively: CUDA (bf16 where supported, else fp16
    with a grad scaler) and CPUs with AVX512-BF16 or AMX (bf16); fp32 elsewhere
    (``facerec.training.precision``).
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
    select_metric: SelectMetric = "auc"
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


def problems(config: TrainConfig) -> list[str]:
    """Every cross-field problem of ``config`` (types and choices are checked by the loader)."""
    found = []
    if not 0.0 < config.data.val_fraction < 1.0:
        found.append(
            "data.val_fraction must be in (0, 1): validation picks the model and the threshold, "
            f"got {config.data.val_fraction}"
        )
    if config.epochs < 1:
        found.append(f"epochs must be >= 1, got {config.epochs}")
    if config.max_minutes is not None and config.max_minutes <= 0:
        found.append(f"max_minutes must be > 0, got {config.max_minutes}")
    if config.data.augment == "none" and config.data.augmented_fraction > 0:
        found.append("data.augmented_fraction > 0 pairs a photo with itself and needs augmentation: set data.augment")
    if config.resume and config.overwrite:
        found.append("resume and overwrite exclude each other")
    if config.loss.kind in POSITIVE_LOSSES and config.loss.K < 2:
        found.append(
            f"loss.kind={config.loss.kind} learns from in-batch positives and needs loss.K >= 2, got {config.loss.K}"
        )
    if config.loss.kind == "distill" and not config.loss.distill.teacher:
        found.append("loss.kind=distill needs loss.distill.teacher (e.g. dlib-resnet or onnx:/path/model.onnx)")
    if config.optim.ema is not None and not 0.0 < config.optim.ema < 1.0:
        found.append(f"optim.ema is the average's decay per step and must be in (0, 1), got {config.optim.ema}")
    if config.data.mixup < 0:
        found.append(f"data.mixup must be >= 0 (0 = off), got {config.data.mixup}")
    online = bool(config.loss.distill.teacher) and config.loss.distill.online
    if config.data.mixup > 0 and (not online or config.loss.kind != "distill"):
        found.append(
            "data.mixup blends two faces, which only an online teacher's target describes: "
            "set loss.kind=distill and loss.distill.online=true, or data.mixup=0"
        )
    return found


def check(config: TrainConfig) -> None:
    """Raise one ``ConfigError`` naming every problem of ``config``."""
    found = problems(config)
    if found:
        raise ConfigError("; ".join(found))


def default_run_name(config: TrainConfig) -> str:
    """``<model>[-<size>px]-<strategy>-<loss>``; a model directory contributes its folder name."""
    from facerec.models import is_model_dir

    model = Path(config.model.name).name if is_model_dir(config.model.name) else config.model.name
    size = f"-{config.model.input_size}px" if config.model.input_size else ""
    return f"{model}{size}-{config.strategy.kind}-{config.loss.kind}"
