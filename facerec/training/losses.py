"""Metric losses on unit-norm embeddings, as ``nn.Module``s.

- ``ContrastiveLoss``: pairwise (Hadsell et al. 2006) on the cosine distance
  ``d = 1 - cos``: positives pay ``d**2``, negatives pay ``max(0, margin - d)**2``.
  Kept by hand: pytorch-metric-learning's ``ContrastiveLoss`` is the unsquared
  hinge on all in-batch pairs, a different loss from this one on given pairs.
- ``InfoNCELoss`` and ``SupConLoss``: in-batch losses for P identities x K images;
  every other sample of the batch is a negative unless it shares the label.
  With several positives per anchor, InfoNCE pools them inside the log
  (``L_in``), SupCon averages the log-terms over them (``L_out``, Khosla et
  al. 2020, Eq. 2); with K = 2 both are the NT-Xent loss of SimCLR.
  SupCon is pytorch-metric-learning's; InfoNCE's ``L_in`` has no counterpart
  there (its ``NTXentLoss`` takes one positive per term), so it stays here.
- ``margin_loss``: the margin-based softmax losses used to train face
  embedders (ArcFace, CosFace, sub-center ArcFace), from pytorch-metric-learning.
  They hold a trainable class-weight matrix, so the optimizer must get
  ``loss.parameters()`` too (the trainer adds them as a parameter group).

The trainer calls an *objective*: ``objective(embeddings, batch) -> loss`` on a whole
``facerec.training.batches.Batch`` (images' record indices, flips, labels or pair flags), so
a loss that needs more than labels (e.g. a teacher's vectors looked up by ``batch.index``
and ``batch.flipped``) plugs in without touching the loop. ``make_loss`` builds it from
``LossConfig``; parameters of an objective (a projection, class centres) are optimised at
``head_lr`` and checkpointed with the model.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from torch import nn

from facerec.errors import ConfigError

if TYPE_CHECKING:
    from facerec.training.batches import Batch
    from facerec.training.config import LossConfig

log = logging.getLogger(__name__)


class ContrastiveLoss(nn.Module):
    """Margin loss on the cosine distance of pairs ``(a[i], b[i])`` with ``same[i]`` in {0, 1}."""

    def __init__(self, margin: float = 0.5) -> None:
        super().__init__()
        if not 0.0 < margin <= 2.0:
            raise ValueError(f"margin must be in (0, 2] for a cosine distance, got {margin}")
        self.margin = margin

    def forward(self, a: torch.Tensor, b: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        distance = 1.0 - F.cosine_similarity(a.float(), b.float(), dim=-1)
        same = same.to(distance.dtype)
        positive = same * distance.pow(2)
        negative = (1.0 - same) * F.relu(self.margin - distance).pow(2)
        return (positive + negative).mean()


class _InBatchLoss(nn.Module):
    """Shared part of the in-batch losses: temperature-scaled similarities and positive masks."""

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def _log_prob(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Row-wise log-softmax over all other samples, and the mask of positives (self excluded)."""
        z = F.normalize(embeddings.float(), dim=-1)
        logits = z @ z.T / self.temperature
        eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(eye, float("-inf"))
        positives = (labels[:, None] == labels[None, :]) & ~eye
        return F.log_softmax(logits, dim=1), positives

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean loss over the anchors that have at least one positive in the batch."""
        log_prob, positives = self._log_prob(embeddings, labels)
        anchors = positives.any(dim=1)
        if not anchors.any():  # no anchor has a positive in this batch: nothing to learn from
            return embeddings.sum() * 0.0
        return self._reduce(log_prob[anchors], positives[anchors]).mean()

    def _reduce(self, log_prob: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class InfoNCELoss(_InBatchLoss):
    """``-log(sum_p exp(s_ip / t) / sum_{j != i} exp(s_ij / t))``: positives pooled inside the log."""

    def _reduce(self, log_prob: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        return -torch.logsumexp(log_prob.masked_fill(~positives, float("-inf")), dim=1)


class SupConLoss(nn.Module):
    """``-mean_p log(exp(s_ip / t) / sum_{j != i} exp(s_ij / t))``: supervised contrastive (L_out),
    pytorch-metric-learning's implementation behind facerec's ``(embeddings, labels)`` call."""

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.loss = pml_losses.SupConLoss(temperature=temperature)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(embeddings.float(), labels)


#: Margin-based softmax losses: name -> (pytorch-metric-learning class, default margin, default scale).
#: ArcFace's margin is an angle in degrees (28.6 deg = 0.5 rad, the paper's m); CosFace's is a cosine.
MARGIN_LOSSES: dict[str, tuple[type[nn.Module], float, float]] = {
    "arcface": (pml_losses.ArcFaceLoss, 28.6, 64.0),
    "cosface": (pml_losses.CosFaceLoss, 0.35, 64.0),
    "subcenter-arcface": (pml_losses.SubCenterArcFaceLoss, 28.6, 64.0),
}


def margin_loss(
    kind: str, num_classes: int, embedding_dim: int, margin: float | None = None, scale: float | None = None
) -> nn.Module:
    """A margin-based softmax loss over ``num_classes`` training identities (labels 0..num_classes-1).

    ``margin``/``scale``: ``None`` takes the paper's values (``MARGIN_LOSSES``). The returned module
    owns the class weights ``W`` (embedding_dim x classes[x sub-centres]): train them with the model.
    """
    if kind not in MARGIN_LOSSES:
        raise ValueError(f"unknown margin loss {kind!r}; expected one of {', '.join(MARGIN_LOSSES)}")
    if num_classes < 2:
        raise ValueError(f"a softmax loss needs at least 2 classes, got {num_classes}")
    cls, default_margin, default_scale = MARGIN_LOSSES[kind]
    margin = default_margin if margin is None else margin
    scale = default_scale if scale is None else scale
    if margin < 0 or scale <= 0:
        raise ValueError(f"{kind} needs margin >= 0 and scale > 0, got margin={margin}, scale={scale}")
    return cls(num_classes=num_classes, embedding_size=embedding_dim, margin=margin, scale=scale)


class PairObjective(nn.Module):
    """A pair loss on a pair batch: the first half of the embeddings against the second half."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, embeddings: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.loss(*embeddings.chunk(2), batch.same)


class LabelObjective(nn.Module):
    """An in-batch loss on a P x K batch: embeddings and identity labels."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, embeddings: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.loss(embeddings, batch.labels)


#: Loss kinds that take P x K batches with identity labels (all but ``contrastive``).
MARGIN_KINDS = tuple(MARGIN_LOSSES)


def _base_objective(config: LossConfig, embedding_dim: int | None, num_classes: int | None) -> nn.Module | None:
    """The metric part of the objective (None for distillation alone)."""
    if config.kind == "distill":
        return None
    if config.kind == "contrastive":
        return PairObjective(ContrastiveLoss(config.margin))
    if config.kind in MARGIN_LOSSES:
        if embedding_dim is None or num_classes is None:
            raise ValueError(f"{config.kind} needs the embedding size and the number of training identities")
        loss = margin_loss(config.kind, num_classes, embedding_dim, config.softmax_margin, config.scale)
        return LabelObjective(loss)
    return LabelObjective((InfoNCELoss if config.kind == "infonce" else SupConLoss)(config.temperature))


def make_loss(
    config: LossConfig,
    embedding_dim: int | None = None,
    num_classes: int | None = None,
    train_paths: list[str] | None = None,
    progress: bool = True,
) -> nn.Module:
    """The training objective of ``config``: ``objective(embeddings, batch) -> scalar loss``.

    Margin losses need ``embedding_dim`` and ``num_classes`` (training identities; the P x K
    labels index them). Distillation (``kind: distill``, or any kind with ``distill.teacher``)
    needs ``train_paths``, the training crops in record order: their teacher vectors come
    from the teacher cache; the objective's ``teacher_info`` says what the teacher was.
    """
    try:
        base = _base_objective(config, embedding_dim, num_classes)
        if config.kind != "distill" and not config.distill.teacher:
            return base
    except ValueError as exc:
        raise ConfigError(f"loss: {exc}") from exc
    from facerec.training.distill import build_objective

    if embedding_dim is None or train_paths is None:
        raise ConfigError("loss: distillation needs the student's embedding size and the training crops")
    objective, _ = build_objective(config.distill, base, embedding_dim, train_paths, progress=progress)
    return objective
