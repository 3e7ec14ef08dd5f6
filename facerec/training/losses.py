"""Contrastive losses on unit-norm embeddings, as ``nn.Module``s.

- ``ContrastiveLoss``: pairwise (Hadsell et al. 2006) on the cosine distance
  ``d = 1 - cos``: positives pay ``d**2``, negatives pay ``max(0, margin - d)**2``.
- ``InfoNCELoss`` and ``SupConLoss``: in-batch losses for P identities x K images;
  every other sample of the batch is a negative unless it shares the label.
  With several positives per anchor, InfoNCE pools them inside the log
  (``L_in``), SupCon averages the log-terms over them (``L_out``, Khosla et
  al. 2020, Eq. 2); with K = 2 both are the NT-Xent loss of SimCLR.

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


class SupConLoss(_InBatchLoss):
    """``-mean_p log(exp(s_ip / t) / sum_{j != i} exp(s_ij / t))``: supervised contrastive (L_out)."""

    def _reduce(self, log_prob: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        positive_log_prob = torch.where(positives, log_prob, torch.zeros_like(log_prob))
        return -positive_log_prob.sum(dim=1) / positives.sum(dim=1)


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


def make_loss(config: LossConfig) -> nn.Module:
    """The training objective of ``config``: ``objective(embeddings, batch) -> scalar loss``."""
    try:
        if config.kind == "contrastive":
            return PairObjective(ContrastiveLoss(config.margin))
        return LabelObjective((InfoNCELoss if config.kind == "infonce" else SupConLoss)(config.temperature))
    except ValueError as exc:
        raise ConfigError(f"loss: {exc}") from None
