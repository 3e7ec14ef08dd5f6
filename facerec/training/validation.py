"""Validation during training: verification figures on pairs of held-out training identities.

The pairs' images are decoded and resized once (the same pixels ``Embedder.preprocess``
gives) and embedded from memory at every epoch, so validation costs model time only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from facerec.data.datasets import Pair
from facerec.data.sampling import decode_all
from facerec.models import Embedder


class Validator:
    """Scores a model on fixed validation ``pairs`` (10 folds) at ``size`` px (aligned as ``align`` says)."""

    def __init__(
        self,
        pairs: Sequence[Pair],
        size: int,
        batch_size: int = 64,
        num_workers: int = 0,
        align: str | None = None,
    ) -> None:
        self.pairs = list(pairs)
        paths = sorted({p for pair in self.pairs for p in (pair.path1, pair.path2)})
        self.row = {p: i for i, p in enumerate(paths)}
        self.pixels = decode_all([str(p) for p in paths], size, num_workers, progress=False, align=align)
        self.batch_size = batch_size
        self.labels = np.array([p.same for p in self.pairs])
        self.folds = np.array([p.fold for p in self.pairs])

    def embed(self, model: Embedder) -> np.ndarray:
        """float32 (N, D) unit vectors of the validation images, in ``row`` order."""
        chunks = [
            model.embed(self.pixels[i : i + self.batch_size].float().div_(255.0))
            for i in range(0, len(self.pixels), self.batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, model.embedding_dim), np.float32)

    def __call__(self, model: Embedder) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        """(verification metrics, scores, labels) of ``model`` on the validation pairs."""
        from facerec.evaluation.metrics import verification_metrics
        from facerec.evaluation.protocols import pair_scores

        with torch.inference_mode():
            scores = pair_scores(self.embed(model), self.row, self.pairs)
        return verification_metrics(scores, self.labels, folds=self.folds), scores, self.labels
