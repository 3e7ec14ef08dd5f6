"""Knowledge distillation: a student embedder learns a teacher's embedding geometry.

The teacher's vectors for every training crop come from ``facerec.training.teacher``
(computed once, cached on disk). This module turns them into targets and losses:

- ``teacher_targets``: a target per crop and per mirror image (the teacher's vector of
  the view the student sees, or their mean), *centred*: the mean target of the training
  crops is subtracted and the result renormalised. Face models put every face in a narrow cone (dlib's unit vectors: mean
  cosine 0.83 between different LFW people, 0.00 once the mean is removed), so an
  uncentred cosine regression spends most of its signal on the shared direction.
- ``DistillLoss``: ``cosine`` regression of a bias-free projection of the student's
  embedding to the teacher's dimension (``1 - cos(P z, t)``), ``relational`` matching of
  the in-batch cosine-similarity matrices (``mean_{i != j} (z_i.z_j - t_i.t_j)^2``; needs no
  projection and leaves the student's own space free), or ``both`` (their sum).
- ``DistillObjective``: what the trainer calls on a batch, ``weight * distill + base``
  where the optional base objective is SupCon or a margin-based softmax (ArcFace...) on
  the identity labels; each image's target is looked up by its record index and flip
  (``CachedTargets``), or computed by the teacher on the very view the student sees
  (``facerec.training.online_teacher``, ``online: true``).

The projection and the margin losses' class weights are trainable: the trainer puts
``loss.parameters()`` into the optimizer and the checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerec.errors import ConfigError

log = logging.getLogger(__name__)

DistillMode = Literal["cosine", "relational", "both"]
DISTILL_MODES = ("cosine", "relational", "both")
FlipTargets = Literal["match", "average", "none"]


@dataclass(frozen=True)
class DistillConfig:
    """Distillation settings (``loss.distill``); active when ``teacher`` is set or ``loss.kind: distill``.

    ``teacher``: any ``--model`` spec (``dlib-resnet``, ``onnx:PATH``, a registry name, a model
    directory), with ``pretrained`` for registry names. ``mode``: ``cosine`` | ``relational`` |
    ``both``. ``centre``: subtract the training crops' mean teacher vector. ``flip``: target of a
    mirrored view (``match`` its mirror image's vector, ``average``, or ``none``: mirror images
    not computed, for a slow teacher). ``weight``: of the distillation term next to a metric loss.
    ``cache``: teacher cache folder (default ``$FACEREC_CACHE/teachers``). ``online``: the teacher
    (a torch embedder: registry backbone or model directory) runs on each step's augmented views
    at its own input size, so every view, mirror or mixup blend has its exact target (no cache;
    slower steps; see ``facerec.training.online_teacher``).
    """

    teacher: str | None = None
    pretrained: str | None = None
    mode: DistillMode = "cosine"
    centre: bool = True
    flip: FlipTargets = "match"
    weight: float = 1.0
    cache: str | None = None
    batch_size: int = 32
    online: bool = False


def teacher_targets(
    vectors: np.ndarray, flipped: np.ndarray | None = None, centre: bool = True, flip: FlipTargets = "match"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets (N, 2, D): unit target of each crop [0] and of its mirror image [1], the subtracted mean (D,)).

    ``vectors``/``flipped``: the teacher's vectors of the training crops and of their mirror
    images (``None``: not computed, the crop's own vector serves both views). ``flip``:
    ``match`` gives a mirrored view its mirror image's vector, ``average`` gives both views
    the mean of the two (the teacher with flip test-time augmentation). The mean is estimated
    on exactly these rows, so pass the training crops only (never validation or test crops).
    ``centre=False`` keeps the raw direction (mean = 0).
    """
    v = F.normalize(torch.as_tensor(np.asarray(vectors, dtype=np.float32)), dim=-1)
    f = v if flipped is None else F.normalize(torch.as_tensor(np.asarray(flipped, dtype=np.float32)), dim=-1)
    if flip == "average":
        v = f = F.normalize(v + f, dim=-1)
    pair = torch.stack([v, f], dim=1)
    mean = pair.mean(dim=(0, 1)) if centre else torch.zeros(pair.shape[-1])
    return F.normalize(pair - mean, dim=-1), mean


def off_diagonal_cosines(vectors: torch.Tensor) -> torch.Tensor:
    """Mean cosine between different rows: how much direction the rows share (0 when centred)."""
    z = F.normalize(vectors.float(), dim=-1)
    n = len(z)
    # sum_{i != j} z_i.z_j = |sum_i z_i|^2 - n: no N x N matrix for a whole training set
    return (z.sum(dim=0).pow(2).sum() - n) / max(1, n * (n - 1))


class DistillLoss(nn.Module):
    """Student unit vectors ``z`` (N, Ds) against teacher targets ``t`` (N, Dt), both unit rows."""

    def __init__(self, student_dim: int, teacher_dim: int, mode: DistillMode = "cosine") -> None:
        super().__init__()
        if mode not in DISTILL_MODES:
            raise ValueError(f"unknown distillation mode {mode!r}; expected one of {', '.join(DISTILL_MODES)}")
        self.mode = mode
        # Bias-free: a bias would be a free "mean direction" the student need not learn.
        self.projection = nn.Linear(student_dim, teacher_dim, bias=False) if mode != "relational" else None

    def cosine(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (1.0 - F.cosine_similarity(self.projection(z.float()), t.float(), dim=-1)).mean()

    @staticmethod
    def relational(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        zs, ts = F.normalize(z.float(), dim=-1), F.normalize(t.float(), dim=-1)
        n = len(zs)
        if n < 2:
            return z.sum() * 0.0
        off = ~torch.eye(n, dtype=torch.bool, device=zs.device)
        return ((zs @ zs.T) - (ts @ ts.T))[off].pow(2).mean()

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.mode == "cosine":
            return self.cosine(z, t)
        if self.mode == "relational":
            return self.relational(z, t)
        return self.cosine(z, t) + self.relational(z, t)


class CachedTargets(nn.Module):
    """``batch -> targets``: a table (N, 2, Dt) of each training record's target for the crop and
    its mirror image (``teacher_targets``); a batch picks ``table[batch.index, batch.flipped]``."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        # Not in the state dict: rebuilt from the teacher cache, and large.
        self.register_buffer("table", torch.as_tensor(table, dtype=torch.float32), persistent=False)

    def forward(self, batch) -> torch.Tensor:
        index = batch.index.to(self.table.device)
        side = batch.flipped.to(self.table.device).long()
        return self.table[index, side]


class DistillObjective(nn.Module):
    """Training objective ``(embeddings, batch) -> loss``: ``weight * distill + base``.

    ``targets``: ``batch -> (B, Dt)`` unit targets, a :class:`CachedTargets` (a table given as a
    tensor is wrapped in one) or an ``OnlineTeacher``. ``base``: another objective on the same
    batch (SupCon, ArcFace, ...) or ``None`` for distillation alone.
    """

    def __init__(
        self,
        distill: DistillLoss,
        targets: torch.Tensor | nn.Module,
        weight: float = 1.0,
        base: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"distillation weight must be >= 0, got {weight}")
        self.distill, self.base, self.weight = distill, base, weight
        self.targets = targets if isinstance(targets, nn.Module) else CachedTargets(targets)
        self.last: dict[str, float] = {}  # the parts of the last call, for logging
        self.teacher_info: dict[str, Any] | None = None  # set by build_objective

    @property
    def online_teacher(self):
        """The ``OnlineTeacher`` computing this objective's targets, or None (cached targets)."""
        return None if isinstance(self.targets, CachedTargets) else self.targets

    def forward(self, embeddings: torch.Tensor, batch) -> torch.Tensor:
        part = self.distill(embeddings, self.targets(batch))
        self.last = {"distill_loss": part.item()}
        loss = self.weight * part
        if self.base is not None:
            metric = self.base(embeddings, batch)
            self.last["metric_loss"] = metric.item()
            loss = loss + metric
        return loss


def build_objective(
    config: DistillConfig, base: nn.Module | None, student_dim: int, paths: Sequence[str], progress: bool = True
) -> tuple[DistillObjective, dict[str, Any]]:
    """The distillation objective over the training crops ``paths`` (record order), and what to record
    about the teacher in the model directory (``model.json`` ``teacher``)."""
    from facerec.models import load_model
    from facerec.training.teacher import TeacherCache

    if not config.teacher:
        raise ConfigError("distillation needs loss.distill.teacher (e.g. dlib-resnet or onnx:/path/model.onnx)")
    teacher = load_model(config.teacher, pretrained=config.pretrained)
    if config.online:
        from facerec.training.online_teacher import build_online_objective

        return build_online_objective(config, teacher, base, student_dim)
    cached = TeacherCache(config.cache).vectors(
        teacher, paths, spec=config.teacher, flip=config.flip != "none", batch_size=config.batch_size, progress=progress
    )
    targets, mean = teacher_targets(cached.vectors, cached.flipped, centre=config.centre, flip=config.flip)
    raw = F.normalize(torch.from_numpy(cached.vectors), dim=-1)
    details = {
        "flip": config.flip,
        "training_crops": len(paths),
        "cache_hits": len(paths) - cached.computed,
        "mean_cosine_raw": round(float(off_diagonal_cosines(raw)), 4),
        "mean_cosine_targets": round(float(off_diagonal_cosines(targets[:, 0])), 4),
        "mean_norm": round(float(mean.norm()), 4),
    }
    log.info(
        "teacher %s: %d training crops (%d computed now); mean cosine between crops %.3f raw, %.3f as targets",
        config.teacher,
        len(paths),
        cached.computed,
        details["mean_cosine_raw"],
        details["mean_cosine_targets"],
    )
    return assemble_objective(config, targets, int(targets.shape[-1]), base, student_dim, cached.fingerprint, details)


def assemble_objective(
    config: DistillConfig,
    targets: torch.Tensor | nn.Module,
    teacher_dim: int,
    base: nn.Module | None,
    student_dim: int,
    fingerprint: str,
    details: dict[str, Any],
) -> tuple[DistillObjective, dict[str, Any]]:
    """The objective over ``targets`` (a cached table or an online teacher) and its ``model.json``
    ``teacher`` record: what every teacher records, then ``details`` of this kind of targets."""
    try:
        objective = DistillObjective(DistillLoss(student_dim, teacher_dim, config.mode), targets, config.weight, base)
    except ValueError as exc:
        raise ConfigError(f"loss.distill: {exc}") from exc
    objective.teacher_info = {
        "spec": config.teacher,
        "fingerprint": fingerprint,
        "embedding_dim": teacher_dim,
        "mode": config.mode,
        "centred": config.centre,
        "weight": config.weight,
        **details,
    }
    return objective, objective.teacher_info
