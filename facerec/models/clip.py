"""CLIP ViT-B/32 image tower (open_clip) as an embedder: ``clip-vit-b-32``.

Weights: an open_clip pretrained tag (``openai``, ``laion2b_s34b_b79k``, ...), a
local checkpoint (a full open_clip/OpenAI CLIP state dict or an image-tower-only
one), or ``none``. Only the image tower is kept. The input size is the main
speed knob: any multiple of 32; position embeddings of a checkpoint made at
another size are interpolated (open_clip's ``resize_pos_embed``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

NAME = "clip-vit-b-32"
ARCH = "ViT-B-32"
PATCH_SIZE = 32
DEFAULT_INPUT_SIZE = 224
CLIP_DIM = 512  # CLIP's own projection


class ClipEmbedder(Embedder):
    """ViT image tower + head; blocks: stem, 12 transformer blocks, ``ln_post``/``proj``."""

    def blocks(self) -> list[nn.Module]:
        visual = self.backbone
        stem = module_group(
            conv1=visual.conv1,
            class_embedding=visual.class_embedding,
            positional_embedding=visual.positional_embedding,
            ln_pre=visual.ln_pre,
        )
        tail = module_group(ln_post=visual.ln_post, proj=visual.proj)
        return [stem, *visual.transformer.resblocks, tail]


@register_embedder(NAME)
def build_clip(
    pretrained: str = NO_WEIGHTS,
    input_size: int | None = None,
    embedding_dim: int | None = None,
    head: str = "identity",
    seed: int = 0,
    quick_gelu: bool | None = None,
) -> ClipEmbedder:
    """Build the image tower. ``quick_gelu``: None = what the tag was trained with (False for files)."""
    import open_clip

    size = DEFAULT_INPUT_SIZE if input_size is None else int(input_size)
    if size < PATCH_SIZE or size % PATCH_SIZE:
        raise ModelError(
            f"{NAME} needs an input size that is a multiple of {PATCH_SIZE} (e.g. 96, 160, 224), got {size}"
        )
    dim = int(embedding_dim or CLIP_DIM)
    checkpoint, tag_cfg = _resolve_weights(pretrained)
    if quick_gelu is None:
        quick_gelu = bool(tag_cfg.get("quick_gelu", False))
        if checkpoint is not None and not tag_cfg:
            log.warning(
                "%s: assuming GELU for %s; OpenAI/laion400m/metaclip weights need quick_gelu=True", NAME, checkpoint
            )
    state = None if checkpoint is None else _read_image_tower(checkpoint)
    log.info(
        "%s: building %s at %dpx (seed %d, quick_gelu=%s, weights %s)", NAME, ARCH, size, seed, quick_gelu, pretrained
    )
    with seeded(seed), _quiet_root_logger():
        head_module = make_head(head, CLIP_DIM, dim)
        model = open_clip.create_model(ARCH, pretrained=None, force_image_size=size, force_quick_gelu=quick_gelu)
        visual = model.visual  # the text tower is dropped with ``model``
        del model
    if state is not None:
        _load_image_tower(visual, state, checkpoint)
    spec = EmbedderSpec(NAME, size, dim, pretrained, {"head": head, "seed": seed, "quick_gelu": quick_gelu})
    embedder = ClipEmbedder(spec, visual, head_module, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    return embedder.eval()


def _resolve_weights(pretrained: str) -> tuple[Path | None, dict[str, Any]]:
    """``none`` -> (None, {}); a tag -> (downloaded file, tag config); a file -> (path, {})."""
    import open_clip

    if pretrained == NO_WEIGHTS:
        return None, {}
    cfg = open_clip.get_pretrained_cfg(ARCH, pretrained)
    if not cfg:
        path = local_checkpoint(pretrained)
        if path is not None:
            return path, {}
        if Path(pretrained).suffix or "/" in pretrained:
            raise ModelError(f"checkpoint file {pretrained} does not exist")
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(ARCH))
        raise ModelError(
            f"unknown weights {pretrained!r} for {NAME}: pass an open_clip tag ({tags}), a checkpoint file, or 'none'"
        )
    hint = "pass --pretrained /path/to/checkpoint.pt or --pretrained none for random init"
    cached = _cached_weights(cfg)
    if cached is not None:
        return cached, cfg
    check_download(_weights_url(cfg), f"open_clip weights {pretrained!r} for {ARCH}", hint)
    try:
        downloaded = open_clip.download_pretrained(cfg)
    except Exception as exc:  # hub/url clients raise many types (OSError, HTTP, offline mode)
        log.warning("download of open_clip weights %s/%s failed: %s", ARCH, pretrained, error_reason(exc))
        downloaded = ""
    if not downloaded:
        raise ModelError(f"cannot download open_clip weights {pretrained!r} for {ARCH} (offline?): {hint}")
    return Path(downloaded), cfg


def _weights_url(cfg: dict[str, Any]) -> str:
    """Where open_clip would download from (the HF hub when it has the weights)."""
    return "https://huggingface.co" if cfg.get("hf_hub") else cfg.get("url", "")


def _cached_weights(cfg: dict[str, Any]) -> Path | None:
    """The weights file when it is in the local HF hub cache already (no network)."""
    hub = cfg.get("hf_hub")
    if not hub:
        return None
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return None
    repo, filename = os.path.split(hub)
    for name in ("open_clip_model.safetensors", filename or "open_clip_pytorch_model.bin"):
        try:
            return Path(hf_hub_download(repo_id=repo, filename=name, local_files_only=True))
        except Exception:  # not cached (LocalEntryNotFoundError) or a bad cache entry
            continue
    return None


def _read_image_tower(path: Path) -> dict[str, Any]:
    """The ``visual.*`` entries of a CLIP state dict, or an image-tower-only state dict prefixed so."""
    state = read_checkpoint(path)
    if any(key.startswith("visual.") for key in state):
        return {key: value for key, value in state.items() if key.startswith("visual.")}
    return {f"visual.{key}": value for key, value in state.items()}


def _load_image_tower(visual: nn.Module, state: dict[str, Any], path: Path) -> None:
    """Load ``visual.*`` weights, interpolating position embeddings to this input size."""
    from open_clip.model import resize_pos_embed

    resize_pos_embed(state, module_group(visual=visual))  # grid of the checkpoint -> this input size
    tower = {key[len("visual.") :]: value for key, value in state.items()}
    load_checkpoint(visual, tower, path, f"the {ARCH} image tower")


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Drop open_clip's root-logger chatter below ERROR (e.g. "initialized randomly" before we load weights)."""
    root = logging.getLogger()

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR

    root.addFilter(keep)  # applies to records logged on the root logger itself only
    try:
        yield
    finally:
        root.removeFilter(keep)
