"""LoRA on attention projections via ``torch.nn.utils.parametrize``.

open_clip's ViT blocks use ``nn.MultiheadAttention``, whose q/k/v projection is
one packed ``in_proj_weight`` (3D x D) read directly in ``forward`` and whose
``out_proj.weight`` is passed as a raw tensor to the functional kernel, so
wrapping sub-modules (what peft does for ``nn.Linear``) does not reach them.
A parametrization does: the module keeps reading ``W`` and gets
``W + (alpha / rank) * B @ A`` with ``B`` initialised to zero, so training
starts exactly at the pretrained function. ``merge_lora`` folds the update
into plain weights, leaving the original architecture and state-dict keys.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from torch.nn.utils import parametrize

log = logging.getLogger(__name__)

#: Weight tensors that get an adapter in every attention module (by attribute path).
LORA_TARGETS = ("in_proj_weight", "out_proj.weight")


class LoRA(nn.Module):
    """Parametrization ``W -> W + scale * B @ A`` with rank ``rank`` and ``scale = alpha / rank``."""

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.lora_B @ self.lora_A).to(weight.dtype)


def attention_modules(root: nn.Module) -> list[nn.Module]:
    """Attention modules with a packed ``in_proj_weight`` and an ``out_proj`` (MHA, open_clip ``Attention``)."""
    return [
        m
        for m in root.modules()
        if isinstance(getattr(m, "in_proj_weight", None), torch.Tensor)
        and isinstance(getattr(m, "out_proj", None), nn.Linear)
    ]


def add_lora(root: nn.Module, rank: int, alpha: float) -> int:
    """Add LoRA adapters to every attention projection under ``root``; freeze the base weights.

    Returns the number of attention modules adapted (0 when ``root`` has none).
    """
    count = 0
    for attention in attention_modules(root):
        for target in LORA_TARGETS:
            owner_path, _, name = target.rpartition(".")
            owner = attention.get_submodule(owner_path) if owner_path else attention
            weight = getattr(owner, name)
            if parametrize.is_parametrized(owner, name):
                raise ValueError(f"{type(owner).__name__}.{name} already carries a parametrization")
            weight.requires_grad_(False)
            adapter = LoRA(weight.shape[0], weight.shape[1], rank, alpha).to(weight.device)
            parametrize.register_parametrization(owner, name, adapter)
        count += 1
    log.info("LoRA rank %d alpha %g on %d attention modules", rank, alpha, count)
    return count


def lora_parameters(root: nn.Module) -> list[nn.Parameter]:
    return [p for m in root.modules() if isinstance(m, LoRA) for p in m.parameters()]


def merge_lora(root: nn.Module) -> int:
    """Fold every adapter into its weight (``W <- W + scale * B @ A``); returns how many were merged."""
    merged = 0
    for module in list(root.modules()):
        if not parametrize.is_parametrized(module):
            continue
        for name in list(module.parametrizations.keys()):
            if any(isinstance(p, LoRA) for p in module.parametrizations[name]):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
                merged += 1
    return merged
