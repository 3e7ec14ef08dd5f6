"""Image pipelines for training (albumentations augmentation) and plain resizing.

Both return ``(3, S, S)`` float tensors in ``[0, 1]``, the same contract as
``Embedder.preprocess``: mean/std normalisation happens inside the embedder.
The augmentations model what separates two LFW photos of one person (pose,
framing, light, focus, compression, occlusion), so that two augmentations of
one photo can stand in for a positive pair when an identity has one image.
"""

from __future__ import annotations

import random
from typing import Literal

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from PIL import Image

Augment = Literal["none", "light", "strong"]


def _to_tensor() -> list[A.BasicTransform]:
    return [A.ToFloat(max_value=255.0), ToTensorV2()]


def eval_transform(input_size: int) -> A.Compose:
    """Resize to ``input_size`` (bicubic, as ``Embedder.preprocess``) and convert; no randomness."""
    return A.Compose([A.Resize(input_size, input_size, interpolation=cv2.INTER_CUBIC), *_to_tensor()])


def train_transform(input_size: int, augment: Augment = "strong") -> A.Compose:
    """Training pipeline: ``none`` = resize only; ``light`` = flip, framing, colour; ``strong`` adds
    small affine, blur, JPEG re-compression and occlusion."""
    if augment == "none":
        return eval_transform(input_size)
    size = (input_size, input_size)
    ops: list[A.BasicTransform | A.BaseCompose] = [
        A.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.9, 1.1), interpolation=cv2.INTER_CUBIC),
        A.HorizontalFlip(p=0.5),
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
