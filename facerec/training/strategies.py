"""Fine-tuning strategies: what trains, and at which learning rate.

- ``linear``: frozen backbone, the head (projection) trains: a linear probe.
- ``last_n``: the head and the last ``n_blocks`` of ``embedder.blocks()`` train.
- ``lora``: frozen backbone with LoRA adapters on the attention projections
  (ViT only; a CNN has none and is refused), plus the head.
- ``full``: everything trains.

The head always trains at ``head_lr``, the rest at ``lr``; biases and norm
weights get no weight decay. Frozen BatchNorm layers stay in eval mode while
training so that their running statistics are not silently changed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from facerec.errors import ConfigError
from facerec.models import Embedder
from facerec.models.lora import add_lora

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StrategyConfig:
    """Which weights train. ``lora_blocks``: adapters in the last N blocks only (0 = every block)."""

    kind: Literal["linear", "last_n", "lora", "full"] = "full"
    n_blocks: int = 2
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_blocks: int = 0


def _blocks(embedder: Embedder, strategy: str) -> list[nn.Module]:
    blocks = embedder.blocks() if hasattr(embedder, "blocks") else []
    if not blocks:
        raise ConfigError(f"strategy {strategy} needs the model's blocks; {embedder.name} exposes none")
    return list(blocks)


def _last(blocks: list[nn.Module], n: int, what: str, name: str) -> list[nn.Module]:
    if not 1 <= n <= len(blocks):
        raise ConfigError(f"{what} must be between 1 and {len(blocks)} for {name}, got {n}")
    return blocks[-n:]


def apply_strategy(embedder: Embedder, config: StrategyConfig) -> None:
    """Freeze / unfreeze / adapt ``embedder`` in place (before building the optimizer or DDP)."""
    head_params = list(embedder.head.parameters())
    if config.kind == "full":
        embedder.requires_grad_(True)
        return
    embedder.requires_grad_(False)
    if config.kind == "linear" and not head_params:
        raise ConfigError(
            f"strategy linear trains the head only, and {embedder.name}'s head has no parameters: "
            "give it one (model.options.head=linear) or pick last_n, lora or full"
        )
    if config.kind == "last_n":
        for block in _last(_blocks(embedder, "last_n"), config.n_blocks, "strategy.n_blocks", embedder.name):
            block.requires_grad_(True)
    elif config.kind == "lora":
        roots = (
            _last(_blocks(embedder, "lora"), config.lora_blocks, "strategy.lora_blocks", embedder.name)
            if config.lora_blocks
            else [embedder.backbone]
        )
        if sum(add_lora(root, config.lora_rank, config.lora_alpha) for root in roots) == 0:
            raise ConfigError(
                f"strategy lora adapts attention projections and {embedder.name} has no attention layers "
                "(a CNN): pick linear, last_n or full"
            )
    for p in head_params:
        p.requires_grad_(True)


def param_groups(embedder: Embedder, lr: float, head_lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups over trainable parameters: head vs rest, decayed (matrices) vs not (biases, norms)."""
    head_ids = {id(p) for p in embedder.head.parameters()}
    groups: dict[str, dict[str, Any]] = {}
    for p in embedder.parameters():
        if not p.requires_grad:
            continue
        part = "head" if id(p) in head_ids else "backbone"
        decay = p.ndim >= 2
        key = part + ("" if decay else "_no_decay")
        group = groups.setdefault(
            key,
            {
                "name": key,
                "params": [],
                "lr": head_lr if part == "head" else lr,
                "weight_decay": weight_decay if decay else 0.0,
            },
        )
        group["params"].append(p)
    if not groups:
        raise ConfigError("the strategy leaves no trainable parameters")
    return list(groups.values())


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameter counts (shared tensors counted once)."""
    unique = {id(p): p for p in model.parameters()}.values()
    return {
        "trainable": sum(p.numel() for p in unique if p.requires_grad),
        "total": sum(p.numel() for p in unique),
    }


def set_train_mode(model: nn.Module) -> None:
    """``model.train()``, except BatchNorm layers whose weights are frozen stay in eval mode."""
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if isinstance(module, _BatchNorm) and params and not any(p.requires_grad for p in params):
            module.eval()
