"""Consistent distillation targets: the teacher runs on exactly the view the student sees.

With cached targets (``facerec.training.teacher``) a student sees augmented crops but
learns the teacher's vector of the clean crop (or of its mirror image): every augmentation
is label noise, and the student sees as many input/target pairs as there are crops and
mirrors. On LFW DevTrain's 8,861 crops a ViT-B/32 from random weights stops improving on
validation long before its training loss does. Computing the target online, on the
augmented view itself, gives every step new exact pairs and allows blends of two faces
(mixup, ``data.mixup``), where no cached vector exists ("function matching", Beyer et al.,
*Knowledge distillation: A good teacher is patient and consistent*, CVPR 2022).

The teacher must be a torch embedder (a registry backbone or a trained model directory,
e.g. a student distilled from dlib-resnet at 150 px serving as a teacher assistant): dlib
and ONNX models run on files, not on batches of tensors. The batch source decodes and
augments the training crops at the teacher's input size and hands the student the same
views resized to its own size (``Batch.views``). Each step costs one teacher forward pass
(no gradient, bf16 where the trainer uses it, channels-last).

The teacher is frozen and not part of the objective's state dict: it is named by its spec
and fingerprint in the model directory's ``teacher`` record, and a resumed run loads it again.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from facerec.errors import ConfigError
from facerec.models import Embedder
from facerec.models.frozen import FrozenEmbedder
from facerec.training.distill import DistillConfig, DistillObjective, assemble_objective, off_diagonal_cosines

log = logging.getLogger(__name__)

#: training views the centring mean is estimated on (the mean of 4,096 unit vectors is stable)
CENTRE_SAMPLE = 4096


class OnlineTeacher(nn.Module):
    """``batch -> (B, Dt)`` unit targets: the frozen teacher's vectors of ``batch.views``, centred.

    ``prepare`` moves the teacher to the training device, sets its precision and estimates the
    mean vector of the training views (``centre``) that the targets are centred on.
    """

    def __init__(self, teacher: Embedder, centre: bool = True) -> None:
        super().__init__()
        # Held outside the module tree: frozen, never trained, not checkpointed (named by its fingerprint).
        self.__dict__["teacher"] = teacher.eval().requires_grad_(False)
        self.centre = centre
        self.amp_dtype: torch.dtype | None = None
        self.register_buffer("mean", torch.zeros(teacher.embedding_dim), persistent=False)
        self.mean_cosine: dict[str, float] = {}

    @property
    def input_size(self) -> int:
        return self.teacher.input_size

    @property
    def align(self) -> str | None:
        return self.teacher.input_align

    @torch.no_grad()
    def vectors(self, views: torch.Tensor) -> torch.Tensor:
        """The teacher's unit vectors (fp32) of float views ``(B, 3, S, S)`` in ``[0, 1]``."""
        device = self.mean.device
        views = views.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None):
            return self.teacher(views).float()

    def prepare(self, pixels: torch.Tensor, amp_dtype: torch.dtype | None, batch_size: int = 128) -> None:
        """Teacher on the buffers' device in ``amp_dtype``; the centring mean from ``pixels`` (uint8
        ``(N, 3, S, S)``, clean training views, at most ``CENTRE_SAMPLE`` of them)."""
        self.teacher.to(self.mean.device, memory_format=torch.channels_last)
        self.amp_dtype = amp_dtype
        if not self.centre:
            return
        raw = torch.cat(
            [self.vectors(pixels[i : i + batch_size].float().div_(255.0)) for i in range(0, len(pixels), batch_size)]
        )
        self.mean.copy_(raw.mean(dim=0))
        self.mean_cosine = {
            "mean_cosine_raw": round(float(off_diagonal_cosines(raw)), 4),
            "mean_cosine_targets": round(float(off_diagonal_cosines(raw - self.mean)), 4),
        }
        log.info(
            "online teacher: mean cosine between %d training views %.3f raw, %.3f centred",
            len(raw),
            self.mean_cosine["mean_cosine_raw"],
            self.mean_cosine["mean_cosine_targets"],
        )

    def forward(self, batch) -> torch.Tensor:
        if getattr(batch, "views", None) is None:
            raise RuntimeError("an online teacher needs the batch's views at its input size (Batch.views)")
        return F.normalize(self.vectors(batch.views) - self.mean, dim=-1)


def build_online_objective(
    config: DistillConfig, teacher, base: nn.Module | None, student_dim: int
) -> tuple[DistillObjective, dict[str, Any]]:
    """``build_objective`` for ``online: true``: targets from ``teacher`` on each step's views."""
    if not isinstance(teacher, Embedder) or isinstance(teacher, FrozenEmbedder):
        raise ConfigError(
            f"loss.distill.online needs a torch teacher (a registry backbone or a trained model directory); "
            f"{config.teacher} runs on image files only: use cached targets (online: false)"
        )
    log.info("teacher %s online at %d px: targets computed on every training view", config.teacher, teacher.input_size)
    details = {"online": True, "input_size": teacher.input_size}
    online = OnlineTeacher(teacher, centre=config.centre)
    return assemble_objective(config, online, teacher.embedding_dim, base, student_dim, teacher.fingerprint, details)
