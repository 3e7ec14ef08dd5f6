"""Mixed precision: the autocast dtype a run trains in on its device, or ``None`` for fp32.

``amp: true`` asks for the fastest precision the hardware computes natively:

- CUDA: bf16 where the GPU supports it, else fp16 (with a grad scaler, see the trainer);
- CPU: bf16 when the CPU has native bf16 instructions (AVX512-BF16 or AMX). On the 2-core
  AVX512-BF16 build machine the trainer runs resnet18 at 64 px at 281 images/s in bf16
  against 200 in fp32, CLIP ViT-B/32 at 64 px at 107 against 44
  (``benchmarks/train_speed.py --variants trainer amp``). Without those instructions bf16
  is emulated, so such CPUs stay in fp32.

Only the network runs under autocast; the loss is computed in fp32 from its output
(bf16 keeps ~3 significant digits: too coarse for the relational distillation term,
which compares cosine similarities that differ in the third decimal).
"""

from __future__ import annotations

import torch


def native_cpu_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX tiles)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The dtype ``torch.autocast`` trains in on ``device`` when ``amp`` is asked for; None: fp32."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and native_cpu_bf16():
        return torch.bfloat16
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    """``bf16`` / ``fp16`` / ``fp32``: how a run logs its precision."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
