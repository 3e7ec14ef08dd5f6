"""torchvision ImageNet baselines as embedders: resnet18/50, mobilenet_v2/v3_large, efficientnet_b0.

The ImageNet classifier's last Linear is removed and a projection head maps the
pooled features to ``embedding_dim`` (512 by default, as CLIP). Weights: a
torchvision weights enum name (``DEFAULT``, ``IMAGENET1K_V1``, ...), a local
torchvision state dict, or ``none``. Default input 112 px (the usual face-crop
size, 4x cheaper than 224 on a CPU); any size >= 32 works (adaptive pooling).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from facerec.errors import ModelError
from facerec.models.base import (
    NO_WEIGHTS,
    Embedder,
    EmbedderSpec,
    error_reason,
    make_head,
    module_group,
    register_embedder,
    seeded,
)
from facerec.models.weights import check_download, load_checkpoint, local_checkpoint, read_checkpoint

log = logging.getLogger(__name__)

ARCHITECTURES = ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0")
DEFAULT_INPUT_SIZE = 112
MIN_INPUT_SIZE = 32
DEFAULT_EMBEDDING_DIM = 512
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TorchvisionEmbedder(Embedder):
    """ImageNet CNN + head; blocks: ResNet stem + layer1..4, or the ``features`` stages (+ classifier MLP)."""

    def blocks(self) -> list[nn.Module]:
        from torchvision.models import ResNet

        model = self.backbone
        if isinstance(model, ResNet):
            return [
                module_group(conv1=model.conv1, bn1=model.bn1),
                model.layer1,
                model.layer2,
                model.layer3,
                model.layer4,
            ]
        blocks = list(model.features.children())
        if any(True for _ in model.classifier.parameters()):  # mobilenet_v3's 960 -> 1280 layer
            blocks.append(model.classifier)
        return blocks


def build_torchvision(
    arch: str,
    pretrained: str = NO_WEIGHTS,
    input_size: int | None = None,
    embedding_dim: int | None = None,
    head: str = "linear",
    seed: int = 0,
) -> TorchvisionEmbedder:
    """Build ``arch`` from torchvision's builder and weights enum; ``seed`` fixes the random init."""
    import torchvision

    size = DEFAULT_INPUT_SIZE if input_size is None else int(input_size)
    if size < MIN_INPUT_SIZE:
        raise ModelError(f"{arch} needs an input size of at least {MIN_INPUT_SIZE} px, got {size}")
    weights, checkpoint = _resolve_weights(arch, pretrained)
    log.info("%s: building at %dpx (seed %d, weights %s)", arch, size, seed, pretrained)
    if weights is not None and not _cached(weights.url):
        check_download(
            weights.url,
            f"torchvision weights {weights} for {arch}",
            "pass --pretrained /path/to/state_dict.pth or --pretrained none for random init",
        )
    with seeded(seed):
        try:
            model = torchvision.models.get_model(arch, weights=weights)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; RuntimeError: bad hash/file
            log.warning("download of torchvision weights %s failed: %s", weights, error_reason(exc))
            raise ModelError(
                f"cannot download torchvision weights {weights} for {arch} (offline?): "
                "pass --pretrained /path/to/state_dict.pth or --pretrained none for random init"
            ) from exc
        removed, feature_dim = _remove_classifier(model)
        dim = (
            feature_dim if head == "identity" and embedding_dim is None else int(embedding_dim or DEFAULT_EMBEDDING_DIM)
        )
        head_module = make_head(head, feature_dim, dim)
    if checkpoint is not None:
        _load_backbone(model, checkpoint, removed)
    spec = EmbedderSpec(arch, size, dim, pretrained, {"head": head, "seed": seed})
    return TorchvisionEmbedder(spec, model, head_module, IMAGENET_MEAN, IMAGENET_STD).eval()


def _register(arch: str) -> None:
    @register_embedder(arch)
    def build(
        pretrained: str = NO_WEIGHTS,
        input_size: int | None = None,
        embedding_dim: int | None = None,
        head: str = "linear",
        seed: int = 0,
    ) -> TorchvisionEmbedder:
        return build_torchvision(arch, pretrained, input_size, embedding_dim, head=head, seed=seed)


for _arch in ARCHITECTURES:
    _register(_arch)


def _cached(url: str) -> bool:
    """Whether torch.hub's checkpoint cache holds the file of ``url`` already."""
    return (Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name).is_file()


def _resolve_weights(arch: str, pretrained: str) -> tuple[Any, Path | None]:  # (WeightsEnum | None, file)
    """``none`` -> no weights; a weights enum name -> the member; a file -> its path."""
    from torchvision.models import get_model_weights

    if pretrained == NO_WEIGHTS:
        return None, None
    enum = get_model_weights(arch)
    try:
        return enum[pretrained], None
    except KeyError as exc:
        path = local_checkpoint(pretrained)
        if path is not None:
            return None, path
        if Path(pretrained).suffix or "/" in pretrained:
            raise ModelError(f"checkpoint file {pretrained} does not exist") from exc
        tags = ", ".join(enum.__members__)
        raise ModelError(
            f"unknown weights {pretrained!r} for {arch}: pass a torchvision weights name ({tags}), "
            "a state dict file, or 'none'"
        ) from exc


def _remove_classifier(model: nn.Module) -> tuple[str, int]:
    """Replace the ImageNet output Linear by Identity; return its state-dict prefix and input size."""
    from torchvision.models import ResNet

    if isinstance(model, ResNet):
        dim = model.fc.in_features
        model.fc = nn.Identity()
        return "fc.", dim
    last = len(model.classifier) - 1
    dim = model.classifier[last].in_features
    model.classifier[last] = nn.Identity()
    return f"classifier.{last}.", dim


def _load_backbone(model: nn.Module, path: Path, removed: str) -> None:
    """Load a torchvision state dict (``weights_only``); keys of the removed classifier are ignored."""
    load_checkpoint(model, read_checkpoint(path), path, type(model).__name__, ignore_unexpected=(removed,))
