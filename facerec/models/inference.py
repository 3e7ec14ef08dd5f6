"""Embed image files in batches: DataLoader workers decode while the model runs.

``embed_paths`` is all-or-error (evaluation needs every vector); ``embed_files``
skips unreadable files and reports them (``facerec embed``). Both keep the
input order and read every image through ``facerec.images.load_image``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from facerec.data.images import is_image_file, load_image
from facerec.errors import DataError, ImageError
from facerec.models.base import Embedder

log = logging.getLogger(__name__)

#: (row index, preprocessed tensor or None, error message or None)
Item = tuple[int, torch.Tensor | None, str | None]


class ImageFileDataset(Dataset):
    """Files -> ``preprocess(load_image(path))``; an unreadable file yields its error instead of a tensor."""

    def __init__(self, paths: Sequence[str | Path], preprocess: Callable[[Image.Image], torch.Tensor]) -> None:
        self.paths = [Path(p) for p in paths]
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Item:
        try:
            return index, self.preprocess(load_image(self.paths[index])), None
        except ImageError as exc:
            return index, None, str(exc)


def collate_items(items: list[Item]) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    """Stack the readable images of a batch; keep (index, error) for the others."""
    good = [(index, tensor) for index, tensor, _ in items if tensor is not None]
    failed = [(index, error) for index, tensor, error in items if tensor is None]
    batch = torch.stack([tensor for _, tensor in good]) if good else None
    return [index for index, _ in good], batch, failed


@dataclass(frozen=True)
class EmbeddingResult:
    """Vectors of the readable files (input order) and the files that could not be read."""

    vectors: np.ndarray
    paths: list[Path]
    failed: list[tuple[Path, str]] = field(default_factory=list)


# ------------------------------------------------------------------ threads
def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(cores: int | None = None, device: str | torch.device = "cpu") -> int:
    """Decoding processes. On a CPU a crop decodes in ~2 ms against ~100+ ms of model time, so one
    worker keeps up on small machines (one per 4 cores, at most 4, on larger ones); a GPU embeds
    faster than one core decodes, so there every core but one decodes (at most 8)."""
    cores = cores or available_cores()
    if torch.device(device).type == "cuda":
        return max(1, min(8, cores - 1))
    return max(1, min(4, cores // 4))


def configure_threads(num_workers: int) -> int:
    """Set torch's intra-op threads for inference next to ``num_workers`` decoders; return the count.

    Workers sleep once their prefetch queue is full (decoding is ~2% of the model's CPU
    time for ViT-B/32 at 224 px), so on up to 4 cores the model keeps every core; a core
    kept for the decoder would sit idle most of the time. On larger machines each worker
    gets a core of its own. ``$OMP_NUM_THREADS`` wins when set.
    """
    cores = available_cores()
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = max(1, int(os.environ["OMP_NUM_THREADS"]))
    else:
        threads = cores if cores <= 4 else max(1, cores - num_workers)
    torch.set_num_threads(threads)
    log.info("torch threads: %d (%d cores, %d decoding workers)", threads, cores, num_workers)
    return threads


# ------------------------------------------------------------------ embedding
def embed_files(
    embedder: Embedder,
    paths: Sequence[str | Path],
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = True,
    flip: bool = False,
) -> EmbeddingResult:
    """Embed ``paths``; unreadable files are skipped and listed in ``failed``.

    ``flip``: average each embedding with its horizontally flipped image's, renormalised.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")
    paths = [Path(p) for p in paths]
    device = embedder.device
    workers = default_workers(device=device) if num_workers is None else max(0, int(num_workers))
    workers = min(workers, -(-len(paths) // batch_size))  # no idle processes for a small job
    loader = DataLoader(
        ImageFileDataset(paths, embedder.preprocess),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_items,
        pin_memory=device.type == "cuda",
    )
    vectors = np.zeros((len(paths), embedder.embedding_dim), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    failed: list[tuple[Path, str]] = []
    with tqdm(total=len(paths), unit="img", desc=f"embed {embedder.name}", disable=not progress) as bar:
        for indices, batch, errors in loader:
            failed.extend((paths[index], error) for index, error in errors)
            if batch is not None:
                vectors[indices] = _embed_batch(embedder, batch, flip)
                ok[indices] = True
            bar.update(len(indices) + len(errors))
    return EmbeddingResult(vectors[ok], [p for p, good in zip(paths, ok) if good], failed)


def embed_paths(
    embedder: Embedder,
    paths: Sequence[str | Path],
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = True,
    flip: bool = False,
) -> np.ndarray:
    """float32 (N, D) unit vectors for ``paths`` in input order; ImageError if any file is unreadable."""
    result = embed_files(embedder, paths, batch_size, num_workers, progress, flip)
    if result.failed:
        shown = "; ".join(error for _, error in result.failed[:3])
        more = f" (and {len(result.failed) - 3} more)" if len(result.failed) > 3 else ""
        raise ImageError(f"{len(result.failed)} of {len(paths)} images are unreadable: {shown}{more}")
    return result.vectors


def _embed_batch(embedder: Embedder, batch: torch.Tensor, flip: bool) -> np.ndarray:
    if not flip:
        return embedder.embed(batch)
    both = embedder.embed(torch.cat([batch, batch.flip(-1)]))
    mean = both[: len(batch)] + both[len(batch) :]
    return (mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def list_images(root: str | Path) -> list[Path]:
    """Image files under ``root`` (recursive, sorted, hidden files and folders skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a directory")
    return sorted(
        path
        for path in root.rglob("*")
        if is_image_file(path)
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )
