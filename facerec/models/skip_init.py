"""Building a model whose weights are about to be loaded, without paying for its random initialisation.

``load_model_dir`` rebuilds the architecture, then loads ``weights.pt`` over it; for
CLIP ViT-B/32 the random init it would run first costs more than reading the weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode


class SkipRandomInit(TorchFunctionMode):
    """Within it, random weight initialisation does nothing (the tensors keep their allocated memory).

    Only for building an architecture whose every parameter and persistent buffer is
    overwritten right after by a strict ``load_state_dict``. A torch function mode is
    per thread: other threads building models at the same time are not affected.
    """

    SKIPPED = frozenset(
        {
            torch.Tensor.uniform_,
            torch.Tensor.normal_,
            *(
                getattr(nn.init, f)
                for f in (
                    "uniform_",
                    "normal_",
                    "trunc_normal_",
                    "kaiming_uniform_",
                    "kaiming_normal_",
                    "xavier_uniform_",
                    "xavier_normal_",
                    "orthogonal_",
                    "sparse_",
                )
            ),
        }
    )

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.SKIPPED:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def with_weights(build: Callable[[], nn.Module], state: dict[str, torch.Tensor]) -> nn.Module:
    """``build()`` then a strict ``load_state_dict(state)``, without paying for the random init first.

    For CLIP ViT-B/32 the init costs more than reading the weights. Strict loading
    overwrites every parameter and persistent buffer, so no skipped value survives.
    """
    with SkipRandomInit():
        model = build()
    model.load_state_dict(state)
    return model
