"""Exponential moving average of the weights (model EMA): validated, selected and saved instead of the live weights.

Why: a ViT trained from random weights on a few thousand photos moves noisily from step to
step; the average of its recent weights usually validates better than any one of them (DeiT,
timm's ``ModelEmaV3``). torch's ``AveragedModel`` with ``get_ema_multi_avg_fn`` does the work (one
fused ``lerp`` over all tensors per step; ``benchmarks/train_speed.py --variants trainer ema``:
4% of a ViT-B/32 step at 64 px on 2 cores, nothing measurable for resnet18). Buffers (batch-norm statistics) are averaged too, so the copy is a
complete model.
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from facerec.models import Embedder


class WeightAverage(AveragedModel):
    """``decay``-weighted running average of ``model``'s parameters and buffers; ``.embedder`` is the average."""

    def __init__(self, model: Embedder, decay: float) -> None:
        super().__init__(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.module.requires_grad_(False)  # a copy the optimizer never sees

    @property
    def embedder(self) -> Embedder:
        return self.module

    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current weights into the average (after each optimizer step)."""
        self.update_parameters(model)
        self.module.invalidate_fingerprint()
