"""Image pipelines for training: cheap batch augmentation in torch, strong per-image augmentation
with albumentations, and plain resizing.

All return float tensors in ``[0, 1]``, the same contract as ``Embedder.preprocess``:
mean/std normalisation happens inside the embedder. The augmentations model what
separates two LFW photos of one person (pose, framing, light, focus, compression,
occlusion), so that two augmentations of one photo can stand in for a positive pair
when an identity has one image.

- ``light``: :class:`BatchAugment` on a whole ``(B, 3, S, S)`` batch at the input size
  (flip, small affine, colour jitter): a few milliseconds per step at 64-128 px.
- ``strong``: :func:`train_transform` per image (framing, colour, affine, grey, blur,
  JPEG re-compression, occlusion), then the batch flip; costs CPU time per image.
- :func:`mixup` blends each image of a batch with another one; only for a target computed on
  the blend itself (an online teacher), as no identity label or cached vector describes it.

The horizontal flip is always the batch stage's, so the trainer knows which images are
mirrored (a teacher's vector of the mirrored crop can be looked up).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Literal

import albumentations as A
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from albumentations.pytorch import ToTensorV2
from PIL import Image

Augment = Literal["none", "light", "strong"]


def _to_tensor() -> list[A.BasicTransform]:
    return [A.ToFloat(max_value=255.0), ToTensorV2()]


def eval_transform(input_size: int) -> A.Compose:
    """Resize to ``input_size`` (bicubic, as ``Embedder.preprocess``) and convert; no randomness."""
    return A.Compose([A.Resize(input_size, input_size, interpolation=cv2.INTER_CUBIC), *_to_tensor()])


def train_transform(input_size: int, augment: Augment = "strong") -> A.Compose:
    """Per-image training pipeline: ``none`` = resize only; ``light`` = framing, colour; ``strong`` adds
    small affine, grey, blur, JPEG re-compression and occlusion. No flip: :class:`BatchAugment` flips."""
    if augment == "none":
        return eval_transform(input_size)
    size = (input_size, input_size)
    ops: list[A.BasicTransform | A.BaseCompose] = [
        A.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.9, 1.1), interpolation=cv2.INTER_CUBIC),
        A.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.2, hue=0.03, p=0.8),
    ]
    if augment == "strong":
        ops += [
            A.Affine(
                scale=(0.92, 1.08),
                translate_percent=(-0.05, 0.05),
                rotate=(-12, 12),
                border_mode=cv2.BORDER_REFLECT_101,
                p=0.6,
            ),
            A.ToGray(p=0.05),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 7))], p=0.25),
            A.ImageCompression(quality_range=(35, 95), p=0.4),
            A.CoarseDropout(
                num_holes_range=(1, 2),
                hole_height_range=(0.1, 0.3),
                hole_width_range=(0.1, 0.3),
                fill="random_uniform",
                p=0.3,
            ),
        ]
    return A.Compose([*ops, *_to_tensor()])


def apply(transform: A.Compose, image: Image.Image) -> torch.Tensor:
    """PIL RGB image -> ``(3, S, S)`` float tensor in ``[0, 1]``."""
    return transform(image=np.asarray(image.convert("RGB")))["image"]


def seed_transform(transform: A.Compose, seed: int) -> None:
    """Give the pipeline one fresh random stream (shared by all its steps) from ``seed``.

    Needed per epoch and per DataLoader worker: forked workers otherwise inherit
    identical generator states and would augment identically.
    """
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run small tensor ops on one intra-op thread: on a busy CPU, splitting a 64 px batch op over
    threads costs several times more (measured: ``grid_sample`` of 64 x 3 x 64 x 64, 10 ms on one
    thread, 97 ms on two under load). Switching the thread count costs microseconds."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class BatchAugment:
    """Augmentation of a float batch ``(B, 3, S, S)`` in ``[0, 1]``, each image drawn independently.

    ``flip``: horizontal mirror with p = 0.5. ``affine``: zoom ``scale``, shift up to ``translate``
    of the side, rotation up to ``rotate`` degrees, reflected borders: one ``grid_sample`` for the
    batch, the flip folded into it. ``jitter``: brightness, contrast and saturation factors in
    ``1 +- value`` with p = 0.8, composed into one per-image linear map of the pixels and their grey
    level. Runs on one thread (:func:`one_thread`). Returns the images and the mask of mirrored ones.
    """

    def __init__(
        self,
        flip: bool = True,
        affine: bool = True,
        jitter: bool = True,
        scale: tuple[float, float] = (0.95, 1.12),
        translate: float = 0.05,
        rotate: float = 10.0,
        brightness: float = 0.25,
        contrast: float = 0.25,
        saturation: float = 0.2,
    ) -> None:
        self.flip, self.affine, self.jitter = flip, affine, jitter
        self.scale, self.translate, self.rotate = scale, translate, rotate
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    @classmethod
    def for_augment(cls, augment: Augment) -> BatchAugment:
        """``light``: the whole batch stage; ``strong``: the flip only (albumentations did the rest)."""
        return cls(flip=augment != "none", affine=augment == "light", jitter=augment == "light")

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(images)

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, generator=generator)

        flipped = torch.rand(n, generator=generator) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
        with one_thread():
            if self.affine:
                images = self._affine(images, uniform, flipped)
            elif flipped.any():
                images = torch.where(flipped[:, None, None, None], images.flip(-1), images)
            if self.jitter:
                images = self._jitter(images, uniform, torch.rand(n, generator=generator) < 0.8)
        return images, flipped

    def _affine(self, images: torch.Tensor, uniform, flipped: torch.Tensor) -> torch.Tensor:
        angle = torch.deg2rad(uniform(-self.rotate, self.rotate))
        zoom = uniform(*self.scale)
        shift = torch.stack([uniform(-self.translate, self.translate), uniform(-self.translate, self.translate)], 1)
        # output -> input sampling grid in [-1, 1] coordinates: zoom > 1 samples a smaller region;
        # a mirrored image reads its input at -x, i.e. the x column of the map changes sign
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        mirror = 1.0 - 2.0 * flipped.to(cos.dtype)
        theta = torch.stack([torch.stack([cos * mirror, -sin], 1), torch.stack([sin * mirror, cos], 1)], 1)
        theta = torch.cat([theta, 2 * shift[:, :, None]], 2).to(images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _jitter(self, images: torch.Tensor, uniform, apply: torch.Tensor) -> torch.Tensor:
        """Brightness b, then contrast c around the mean grey m, then saturation s around the grey g:
        ``s*b*c * x + b*c*(1-s) * g(x) + b*(1-c) * m(x)``, one pass over the pixels."""

        def factor(value: float) -> torch.Tensor:
            f = uniform(1 - value, 1 + value).to(images.dtype)
            return torch.where(apply, f, torch.ones_like(f))[:, None, None, None]

        b, c, s = factor(self.brightness), factor(self.contrast), factor(self.saturation)
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype)[None, :, None, None]
        grey = (images * weights).sum(1, keepdim=True)
        mean = grey.mean((2, 3), keepdim=True)
        out = images * (s * b * c)
        return out.add_(grey * (b * c * (1 - s)) + b * (1 - c) * mean).clamp_(0.0, 1.0)


def mixup(images: torch.Tensor, alpha: float, rng: np.random.Generator) -> torch.Tensor:
    """Each image blended with a random other of the batch: ``lam * x_i + (1 - lam) * x_j``, one
    ``lam ~ Beta(alpha, alpha)`` per image (small ``alpha``: mostly near 0 or 1, i.e. mild blends)."""
    n = len(images)
    lam = torch.from_numpy(rng.beta(alpha, alpha, n).astype(np.float32)).to(images.dtype)[:, None, None, None]
    partner = torch.from_numpy(rng.permutation(n))
    with one_thread():
        return images * lam + images[partner] * (1.0 - lam)


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """A float batch in ``[0, 1]`` resized to ``size`` (bicubic with antialiasing, as a PIL resize
    does); the batch itself when it already has that size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    with one_thread():
        out = F.interpolate(images, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        return out.clamp_(0.0, 1.0)
