"""Learning-rate schedule: linear warm-up, then cosine decay to 0 (as open_clip's ``scheduler.py``)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warm-up from ~0 to 1, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler for ``optimizer``; ``warmup_fraction`` of ``total_steps`` warm up."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, round(warmup_fraction * total_steps))
    )
