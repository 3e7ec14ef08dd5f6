"""Knowledge distillation: a student embedder learns a teacher's embedding geometry.

The teacher's vectors for every training crop come from ``facerec.training.teacher``
(computed once, cached on disk). This module turns them into targets and losses:

- ``teacher_targets``: one target per crop, the teacher's vector of the crop and of its
  horizontal flip averaged (flip-invariant, so a flipped training view keeps its target),
  then *centred*: the mean target of the training crops is subtracted and the result
  renormalised. Face models put every face in a narrow cone (dlib's unit vectors: mean
  cosine 0.83 between different LFW people, 0.00 once the mean is removed), so an
  uncentred cosine regression spends most of its signal on the shared direction.
- ``DistillLoss``: ``cosine`` regression of a bias-free projection of the student's
  embedding to the teacher's dimension (``1 - cos(P z, t)``), ``relational`` matching of
  the in-batch cosine-similarity matrices (``mean_{i != j} (z_i.z_j - t_i.t_j)^2``; needs no
  projection and leaves the student's own space free), or ``both`` (their sum).
- ``MixedLoss``: ``distill_weight * distill + metric_weight * metric`` where the metric
  loss is SupCon or a margin-based softmax (ArcFace...) on the identity labels.

The projection and the margin losses' class weights are trainable: the trainer puts
``loss.parameters()`` into the optimizer and the checkpoint.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DistillMode = Literal["cosine", "relational", "both"]
DISTILL_MODES = ("cosine", "relational", "both")


def teacher_targets(
    vectors: np.ndarray, flipped: np.ndarray | None = None, centre: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets (N, D) unit rows, the mean that was subtracted (D,)).

    ``vectors``/``flipped``: the teacher's vectors of the training crops and of their mirror
    images. The mean is estimated on exactly these rows, so pass the training crops only
    (never validation or test crops). ``centre=False`` keeps the raw direction (mean = 0).
    """
    v = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
    if flipped is not None:
        v = v + torch.as_tensor(np.asarray(flipped, dtype=np.float32))
    v = F.normalize(v, dim=-1)
    mean = v.mean(dim=0) if centre else torch.zeros(v.shape[1])
    return F.normalize(v - mean, dim=-1), mean


def off_diagonal_cosines(vectors: torch.Tensor) -> torch.Tensor:
    """Mean cosine between different rows: how much direction the rows share (0 when centred)."""
    z = F.normalize(vectors.float(), dim=-1)
    n = len(z)
    return (z @ z.T).sum().sub(n).div(max(1, n * (n - 1)))


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


class MixedLoss(nn.Module):
    """``distill_weight * distill(z, t) + metric_weight * metric(z, labels)``; either part may be absent."""

    def __init__(
        self,
        distill: DistillLoss | None,
        metric: nn.Module | None = None,
        distill_weight: float = 1.0,
        metric_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if distill is None and metric is None:
            raise ValueError("a mixed loss needs a distillation or a metric part")
        if distill_weight < 0 or metric_weight < 0:
            raise ValueError(f"loss weights must be >= 0, got {distill_weight}, {metric_weight}")
        self.distill, self.metric = distill, metric
        self.distill_weight, self.metric_weight = distill_weight, metric_weight
        self.last: dict[str, float] = {}  # the parts of the last call, for logging

    def forward(self, z: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        total = z.sum() * 0.0
        self.last = {}
        if self.distill is not None:
            if targets is None:
                raise ValueError("distillation needs the teacher targets of the batch")
            part = self.distill(z, targets)
            self.last["distill_loss"] = part.item()
            total = total + self.distill_weight * part
        if self.metric is not None:
            part = self.metric(z.float(), labels)
            self.last["metric_loss"] = part.item()
            total = total + self.metric_weight * part
        return total
