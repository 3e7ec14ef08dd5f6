"""Training batches: which images (samplers), where their pixels come from, how they are augmented.

``data.decode``: ``once`` decodes and resizes every training crop once per run into a uint8
tensor ``(N, 3, S, S)`` in memory (LFW DevTrain at 64 px: ~120 MB, at 128 px: ~470 MB), so the
CPU spends its time on the model, not on JPEG decoding; ``per_step`` reads the files in
DataLoader workers at every step (data too large for memory).

``data.augment``: ``light`` augments the whole batch in torch in this process (flip, small
affine, colour jitter; see ``facerec.data.transforms.BatchAugment``); ``strong`` runs the
albumentations pipeline per image in DataLoader workers, then flips; ``none`` trains on the
resized crops. Every stream is seeded by (seed, epoch, rank), so a resumed run draws what an
uninterrupted one would.

An online teacher (``loss.distill.online``) sees each view at its own input size: the crops are
decoded and augmented at that size (``view_size``), blended when ``data.mixup`` is set, and the
student gets the same views resized to its input size; ``Batch.views`` keeps the full-size ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from facerec.data.datasets import (
    LFW,
    ImageRecord,
    read_identity_folder,
    resolve_data_root,
    sample_root,
    split_by_identity,
)
from facerec.data.sampling import PairBatchSampler, PixelDataset, PKBatchSampler, decode, decode_all, seed_worker
from facerec.data.transforms import BatchAugment, mixup, one_thread, resize_batch, seed_transform, train_transform
from facerec.errors import DataError
from facerec.training.config import DataConfig, TrainConfig

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """One step's images and targets. Pair batches hold the first images of their pairs, then the second."""

    images: torch.Tensor  # (B, 3, S, S) float in [0, 1]
    index: torch.Tensor  # (B,) record index of each image (for per-image look-ups such as teacher vectors)
    flipped: torch.Tensor  # (B,) bool: mirrored by the augmentation
    labels: torch.Tensor | None = None  # (B,) identity labels of P x K batches
    same: torch.Tensor | None = None  # (B / 2,) 1.0 where a pair shows one identity
    views: torch.Tensor | None = None  # (B, 3, V, V) the same views at an online teacher's input size

    def to(self, device: torch.device) -> Batch:
        moved = {k: v.to(device, non_blocking=True) for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        return replace(self, **moved)


def load_records(config: DataConfig, seed: int) -> tuple[list[ImageRecord], list[ImageRecord], str]:
    """(train records, validation records, a description of the source): identity-disjoint split.

    ``kind: lfw`` reads View 1 ``peopleDevTrain`` only: DevTest and View 2 never reach training,
    validation or threshold calibration.
    """
    crops = Path(config.crops).expanduser() if config.crops else None
    if crops is not None and not crops.is_dir():
        raise DataError(f"crops folder {crops} does not exist (run the crop stage first)")
    if config.kind == "lfw":
        lfw = LFW.at(config.root)
        records = lfw.dev_train(images_dir=crops)
        source = f"LFW peopleDevTrain ({crops or lfw.images_dir})"
    else:
        root = sample_root() if config.kind == "sample" else resolve_data_root(config.root)
        records = read_identity_folder(crops or root)
        source = f"identity folder {crops or root}"
    if crops is None:
        log.warning("no crops folder: training on the photos as they are, resized to the input size")
    train_records, val_records = split_by_identity(records, config.val_fraction, seed)
    if not train_records:
        raise DataError(f"val_fraction={config.val_fraction} leaves no training identities")
    return train_records, val_records, source


def images_per_step(config: TrainConfig) -> int:
    """Images in one process's step: both images of ``batch_size`` pairs, or P x K."""
    return 2 * config.batch_size if config.loss.kind == "contrastive" else config.loss.P * config.loss.K


def make_sampler(
    config: TrainConfig, records: list[ImageRecord], rank: int = 0, world_size: int = 1
) -> PairBatchSampler | PKBatchSampler:
    """Pair batches for the contrastive loss, P x K batches for the in-batch losses."""
    pairs = config.loss.kind == "contrastive"
    steps = config.steps_per_epoch or max(1, len(records) // (images_per_step(config) * world_size))
    common = dict(
        steps=steps,
        augmented_fraction=config.data.augmented_fraction,
        seed=config.seed,
        rank=rank,
        world_size=world_size,
    )
    if pairs:
        return PairBatchSampler(records, config.batch_size, positive_fraction=config.loss.positive_fraction, **common)
    return PKBatchSampler(records, config.loss.P, config.loss.K, **common)


class _Flat:
    """A batch sampler of record indices in ``Batch`` order, from a sampler of pair or labelled keys."""

    def __init__(self, sampler: PairBatchSampler | PKBatchSampler) -> None:
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[int]]:
        return (flat_indices(keys) for keys in self.sampler)


def flat_indices(keys: list[tuple]) -> list[int]:
    if len(keys[0]) == 3:  # pairs (a, b, same): every first image, then every second
        return [k[0] for k in keys] + [k[1] for k in keys]
    return [k[0] for k in keys]


class BatchSource:
    """Epochs of :class:`Batch` es for one rank: sampler + pixels (cached or read) + augmentation."""

    def __init__(
        self,
        records: list[ImageRecord],
        sampler: PairBatchSampler | PKBatchSampler,
        size: int,
        config: TrainConfig,
        rank: int = 0,
        pin_memory: bool = False,
        progress: bool = True,
        cache: torch.Tensor | None = None,
        align: str | None = None,
        view_size: int | None = None,
    ) -> None:
        """``cache``: these records' pixels, already decoded at the pixel size (shared between sources);
        ``align``: the model's ``align`` option (its inputs are the crops' aligned chips);
        ``view_size``: decode and augment at this size (an online teacher's) and keep those views in
        ``Batch.views`` next to the student's ``size`` images."""
        self.sampler, self.config, self.rank, self.pin_memory = sampler, config, rank, pin_memory
        self.size, self.view_size, self.mixup = size, view_size, config.data.mixup
        augment = config.data.augment
        paths = [r.path for r in records]
        size = view_size or size  # the pixels' size from here on
        self.decode_seconds = 0.0
        if config.data.decode == "per_step":
            cache = None
        elif cache is None:
            start = time.perf_counter()
            cache = decode_all(paths, size, config.num_workers, progress, align)
            self.decode_seconds = time.perf_counter() - start
            log.info(
                "decoded %d training crops at %d px once (%.0f MB) in %.1f s",
                len(paths),
                size,
                cache.numel() / 2**20,
                self.decode_seconds,
            )
        self.cache = cache
        transform = train_transform(size, augment) if augment == "strong" else None
        self.dataset = PixelDataset(paths, size, cache, transform, align)
        self.in_process = cache is not None and transform is None  # nothing left for workers to do
        self.augment = BatchAugment.for_augment(augment)

    @property
    def steps(self) -> int:
        return self.sampler.steps

    def __len__(self) -> int:
        return self.sampler.steps

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """This rank's batches of ``epoch``, augmented from a stream keyed on (seed, epoch, rank)."""
        seed = (self.config.seed * 1_000_003 + epoch * 1_009 + self.rank) % 2**32
        self.sampler.set_epoch(epoch)
        generator = torch.Generator().manual_seed(seed)
        blend = np.random.default_rng(seed)
        for keys, images in zip(self.sampler, self._pixels(seed), strict=True):
            images, flipped = self.augment(images, generator)
            if self.mixup:
                images = mixup(images, self.mixup, blend)
            views = None
            if self.view_size is not None:
                views, images = images, resize_batch(images, self.size)
            index = torch.tensor(flat_indices(keys), dtype=torch.int64)
            if len(keys[0]) == 3:
                yield Batch(images, index, flipped, same=torch.tensor([float(k[2]) for k in keys]), views=views)
            else:
                labels = torch.tensor([k[1] for k in keys], dtype=torch.int64)
                yield Batch(images, index, flipped, labels=labels, views=views)

    def sample_pixels(self, limit: int, seed: int = 0) -> torch.Tensor:
        """uint8 pixels of at most ``limit`` training records (a seeded sample), un-augmented."""
        n = len(self.dataset)
        chosen = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(limit, n)].sort().values
        if self.cache is not None:
            return self.cache[chosen]
        return torch.stack(
            [decode(self.dataset.paths[i], self.dataset.size, self.dataset.align) for i in chosen.tolist()]
        )

    def _gather(self, indices: list[int]) -> torch.Tensor:
        with one_thread():
            return self.cache[indices].float().div_(255.0)

    def _pixels(self, seed: int) -> Iterator[torch.Tensor]:
        if self.in_process:
            return (self._gather(indices) for indices in _Flat(self.sampler))
        if self.dataset.transform is not None:
            seed_transform(self.dataset.transform, seed)
        return iter(
            DataLoader(
                self.dataset,
                batch_sampler=_Flat(self.sampler),
                num_workers=self.config.num_workers,
                worker_init_fn=seed_worker,
                generator=torch.Generator().manual_seed(seed),
                pin_memory=self.pin_memory,
            )
        )
