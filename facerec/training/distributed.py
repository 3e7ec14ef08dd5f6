"""Distributed set-up: this process's rank, device and process group (torchrun environment).

Under ``torchrun`` every process reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and joins
one group (NCCL on CUDA, gloo on CPU); a plain ``python`` call is a world of one.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from facerec.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def sync_buffers(self, module: nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm statistics) to every rank: DDP syncs them only
        at the start of each forward, so after the last step each rank holds its own."""
        if self.world_size > 1:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def sum(self, *values: float) -> list[float]:
        """Sum scalars over all processes."""
        if self.world_size == 1:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def average_gradients(self, params: list[nn.Parameter]) -> None:
        """Average the gradients of parameters outside the DDP-wrapped model (an objective's own)."""
        if self.world_size > 1:
            for param in params:
                if param.grad is not None:
                    dist.all_reduce(param.grad)
                    param.grad /= self.world_size

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` itself in a world of one, else its DistributedDataParallel wrapper."""
        if self.world_size == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def close(self) -> None:
        """Leave the process group if this process created it."""
        if self.owns_group:
            dist.destroy_process_group()


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` (this rank's GPU) or ``cuda:N``."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} requested but CUDA is not available here")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def init_distributed(device_spec: str) -> Distributed:
    """Read torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; join the process group when > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns = True
    if world_size > 1:
        log.info("distributed: rank %d/%d on %s (%s)", rank, world_size, device, dist.get_backend())
    return Distributed(rank, world_size, local_rank, device, owns)
