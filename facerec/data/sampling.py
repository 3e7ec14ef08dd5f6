"""Training batches from identity folders: balanced pairs, or P identities x K images.

Both samplers are seeded and keyed on ``(seed, epoch)``: every rank draws the
same global stream and keeps its own share (what ``DistributedSampler`` does
for map-style data), so a run is reproducible, resumable at an epoch boundary,
and shards cleanly under DistributedDataParallel.

Identities with a single image are "topped up" by augmentation: a positive
pair for them is the same photo twice, and two independent augmentations of
it are drawn (so the training augmentation must not be ``none``).

``PixelDataset`` gives an image's pixels by record index, from a uint8 cache
decoded once per run (``decode_all``) or from its file.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, Sequence

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from facerec.data.datasets import ImageRecord
from facerec.data.images import load_image
from facerec.data.transforms import seed_transform
from facerec.errors import ConfigError, DataError
from facerec.faces.chips import input_image

PairKey = tuple[int, int, bool]  # (image index a, image index b, same identity)
LabelledKey = tuple[int, int]  # (image index, identity label)


class IdentityIndex:
    """Record indices grouped by identity, split into single-image and multi-image identities."""

    def __init__(self, records: Sequence[ImageRecord]) -> None:
        by_name: dict[str, list[int]] = defaultdict(list)
        for i, record in enumerate(records):
            by_name[record.identity].append(i)
        self.names = sorted(by_name)
        self.groups = [by_name[name] for name in self.names]
        self.multi = [i for i, g in enumerate(self.groups) if len(g) >= 2]
        self.single = [i for i, g in enumerate(self.groups) if len(g) == 1]

    def __len__(self) -> int:
        return len(self.groups)


class _EpochSampler(Sampler):
    """Common part: ``steps`` batches per epoch, one seeded stream per epoch, a rank's share of it."""

    def __init__(self, steps: int, seed: int, rank: int, world_size: int) -> None:
        if steps < 1:
            raise ConfigError(f"steps per epoch must be >= 1, got {steps}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.steps, self.seed, self.rank, self.world_size = steps, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list]:
        rng = random.Random(f"{type(self).__name__}:{self.seed}:{self.epoch}")
        for _ in range(self.steps):
            batches = [self._batch(rng) for _ in range(self.world_size)]
            yield batches[self.rank]

    def _batch(self, rng: random.Random) -> list:
        raise NotImplementedError


class PairBatchSampler(_EpochSampler):
    """Batches of ``batch_size`` pairs, exactly ``round(batch_size * positive_fraction)`` positive.

    Of the positives, ``round(n_pos * augmented_fraction)`` are one photo twice (taken from
    single-image identities when there are any); the rest are two different photos of an
    identity with 2+ images. Negatives join two different identities. Identities, not images,
    are drawn uniformly, so a few prolific identities do not dominate.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        batch_size: int,
        steps: int,
        positive_fraction: float = 0.5,
        augmented_fraction: float = 0.25,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(steps, seed, rank, world_size)
        if batch_size < 2:
            raise ConfigError(f"batch_size must be >= 2 pairs, got {batch_size}")
        for name, value in (("positive_fraction", positive_fraction), ("augmented_fraction", augmented_fraction)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        self.index = IdentityIndex(records)
        if len(self.index) < 2:
            raise DataError("pair training needs at least 2 identities")
        self.n_pos = round(batch_size * positive_fraction)
        self.n_aug = round(self.n_pos * augmented_fraction)
        if self.n_pos > self.n_aug and not self.index.multi:
            raise DataError("no identity has 2+ images: set augmented_fraction=1 to train on augmented positives")
        self.batch_size = batch_size

    def _batch(self, rng: random.Random) -> list[PairKey]:
        groups = self.index.groups
        batch: list[PairKey] = []
        for k in range(self.batch_size):
            if k < self.n_aug:
                photo = rng.choice(groups[rng.choice(self.index.single or range(len(groups)))])
                batch.append((photo, photo, True))
            elif k < self.n_pos:
                a, b = rng.sample(groups[rng.choice(self.index.multi)], 2)
                batch.append((a, b, True))
            else:
                first, second = rng.sample(range(len(groups)), 2)
                batch.append((rng.choice(groups[first]), rng.choice(groups[second]), False))
        rng.shuffle(batch)
        return batch


class PKBatchSampler(_EpochSampler):
    """Batches of ``P`` distinct identities x ``K`` images for the in-batch losses.

    ``round(P * augmented_fraction)`` of the identities come from single-image identities
    (their K samples are augmentations of one photo); identities with fewer than K images
    repeat photos, each repeat augmented anew. ``K=1`` gives ``P`` photos of ``P`` different
    people: no in-batch positives, for the losses that need none (distillation, margin softmax).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        P: int,
        K: int,
        steps: int,
        augmented_fraction: float = 0.25,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(steps, seed, rank, world_size)
        if P < 2 or K < 1:
            raise ConfigError(f"P x K batches need P >= 2 and K >= 1, got P={P}, K={K}")
        if not 0.0 <= augmented_fraction <= 1.0:
            raise ConfigError(f"augmented_fraction must be in [0, 1], got {augmented_fraction}")
        self.index = IdentityIndex(records)
        self.P, self.K = P, K
        self.n_single = min(round(P * augmented_fraction), len(self.index.single))
        if P - self.n_single > len(self.index.multi):
            raise DataError(
                f"P={P} needs {P - self.n_single} identities with 2+ images, the data has {len(self.index.multi)}"
            )

    def _batch(self, rng: random.Random) -> list[LabelledKey]:
        chosen = rng.sample(self.index.single, self.n_single) + rng.sample(self.index.multi, self.P - self.n_single)
        batch: list[LabelledKey] = []
        for label in chosen:
            photos = list(self.index.groups[label])
            rng.shuffle(photos)
            batch.extend((photos[k % len(photos)], label) for k in range(self.K))
        return batch


class PixelDataset(Dataset):
    """Record index -> float ``(3, S, S)`` in ``[0, 1]``, from the decoded ``cache`` or from the file.

    ``transform`` (albumentations) runs on the uint8 pixels at every access, so a photo drawn
    twice in a batch is augmented twice; without it the pixels are only resized (or taken as cached).
    """

    def __init__(
        self,
        paths: Sequence[str],
        size: int,
        cache: torch.Tensor | None = None,
        transform: A.Compose | None = None,
        align: str | None = None,
    ) -> None:
        self.paths, self.size, self.cache, self.transform, self.align = list(paths), size, cache, transform, align

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        pixels = self.cache[index] if self.cache is not None else decode(self.paths[index], self.size, self.align)
        if self.transform is None:
            return pixels.float().div_(255.0)
        return self.transform(image=pixels.permute(1, 2, 0).numpy())["image"]


class _Decode(Dataset):
    def __init__(self, paths: Sequence[str], size: int, align: str | None) -> None:
        self.paths, self.size, self.align = list(paths), size, align

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return decode(self.paths[index], self.size, self.align)


def decode(path: str, size: int, align: str | None = None) -> torch.Tensor:
    """uint8 ``(3, size, size)``: the pixels ``Embedder.preprocess`` gives (aligned as ``align`` says,
    bicubic resize), before ``/ 255``."""
    image = input_image(load_image(path), size, align)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def decode_all(
    paths: Sequence[str], size: int, num_workers: int = 0, progress: bool = True, align: str | None = None
) -> torch.Tensor:
    """uint8 ``(N, 3, size, size)`` of every image, decoded, aligned and resized once (``num_workers``
    processes)."""
    from tqdm.auto import tqdm

    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    loader = DataLoader(_Decode(paths, size, align), batch_size=64, num_workers=min(num_workers, len(paths) // 64))
    row = 0
    with tqdm(total=len(paths), unit="img", desc=f"decode {size}px", disable=not progress, leave=False) as bar:
        for chunk in loader:
            out[row : row + len(chunk)] = chunk
            row += len(chunk)
            bar.update(len(chunk))
    return out


def seed_worker(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: a distinct, reproducible augmentation stream per worker."""
    info = get_worker_info()
    if getattr(info.dataset, "transform", None) is not None:
        seed_transform(info.dataset.transform, info.seed % 2**32)
