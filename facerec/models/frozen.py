"""Frozen embedders: pretrained face models used as they are (dlib's ResNet, ONNX exports).

They follow the ``Embedder`` contract for inference (``name``, ``input_size``,
``embedding_dim``, a cached ``fingerprint``, ``preprocess`` and ``embed(batch) ->
float32 (N, D)`` unit vectors) but cannot be trained:
``forward``, ``head``, ``blocks`` and ``train()`` raise a one-line ``ModelError``.
Subclasses implement ``embed_arrays`` on uint8 RGB crops. ``.to(device)`` and
``.eval()`` work as for any module (a network held in torch, like dlib's, moves with
it), so code written for trainable embedders keeps working; a model directory never
stores a frozen model's weights, which come with its package.

Optional vector cache (``$FACEREC_VECTOR_CACHE=DIR``): the output for the same
pixels never changes, so vectors are stored in ``DIR/<fingerprint>.sqlite`` keyed
by a hash of the crop's pixels; evaluating or calibrating again, or distilling
from the model, then costs nothing. Off by default.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facerec.errors import ModelError
from facerec.files import hash_file_into
from facerec.models.base import Embedder, EmbedderSpec

log = logging.getLogger(__name__)

CACHE_ENV = "FACEREC_VECTOR_CACHE"
THRESHOLDS_DIR = Path(__file__).with_name("thresholds")


def not_trainable(name: str) -> ModelError:
    return ModelError(
        f"{name} is a frozen pretrained model and cannot be fine-tuned: train a trainable backbone "
        "(clip-vit-b-32, resnet18, ...) or use it as a teacher"
    )


class FrozenEmbedder(Embedder):
    """Base of the pretrained models used as is; subclasses implement ``embed_arrays``."""

    frozen = True

    def __init__(self, spec: EmbedderSpec, weight_files: Sequence[Path], source: str | None = None) -> None:
        nn.Module.__init__(self)  # no backbone, head or normalisation buffers
        self.spec = spec
        #: what ``load_model`` rebuilds it from (with ``spec.options``): a registry name or ``onnx:PATH``
        self.source = source or spec.name
        self.weight_files = [Path(p) for p in weight_files]
        self.threshold: float | None = None
        self._fingerprint: str | None = None
        self._cache: VectorCache | None = None

    # ---- identity
    @property
    def fingerprint(self) -> str:
        """``name/size/dim/hash`` of the weight files and the options that change the outputs."""
        if self._fingerprint is None:
            settings = {"options": self.spec.options, "fixed": self.fixed_settings()}
            digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
            for path in self.weight_files:
                hash_file_into(digest, path)
            self._fingerprint = f"{self.name}/{self.input_size}px/{self.embedding_dim}d/{digest.hexdigest()[:16]}"
        return self._fingerprint

    @property
    def input_align(self) -> str | None:
        return None  # a frozen model aligns inside embed_arrays (its own ``align`` option means its own way)

    def spec_string(self) -> str:
        """``source?option=value&...``: the ``--model`` spec that rebuilds exactly this model."""
        from urllib.parse import urlencode

        def text(value: Any) -> str:
            if isinstance(value, (list, tuple)):
                return ",".join(str(v) for v in value)
            return str(int(value)) if isinstance(value, bool) else str(value)

        options = urlencode({k: text(v) for k, v in sorted(self.spec.options.items())})
        return f"{self.source}?{options}" if options else self.source

    def fixed_settings(self) -> dict[str, Any]:
        """Constants of the pipeline that change the outputs (part of the fingerprint)."""
        return {}

    # ---- not trainable
    @property
    def head(self) -> nn.Module:  # the first thing a training strategy touches
        raise not_trainable(self.name)

    def blocks(self) -> list[nn.Module]:
        raise not_trainable(self.name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise not_trainable(self.name)

    def train(self, mode: bool = True) -> FrozenEmbedder:
        if mode:
            raise not_trainable(self.name)
        return super().train(False)

    # ---- inference
    def embed_arrays(self, crops: list[np.ndarray]) -> np.ndarray:
        """uint8 RGB crops (S, S, 3) -> float32 (N, D); normalised by ``embed``."""
        raise NotImplementedError

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        """Batch (N, 3, S, S) in [0, 1] (``preprocess`` output) -> float32 (N, D) unit vectors."""
        arrays = batch.detach().cpu().mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        crops = [np.ascontiguousarray(a) for a in arrays]
        cache = self._vector_cache()
        if cache is None:
            return unit_rows(self.embed_arrays(crops))
        keys = [hashlib.sha256(c.tobytes() + str(c.shape).encode()).digest() for c in crops]
        found = cache.get(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        out = np.zeros((len(crops), self.embedding_dim), np.float32)
        if missing:
            fresh = unit_rows(self.embed_arrays([crops[i] for i in missing]))
            out[missing] = fresh
            cache.put((keys[i], v) for i, v in zip(missing, fresh))
        for i, key in enumerate(keys):
            if key in found:
                out[i] = found[key]
        return out

    def _vector_cache(self) -> VectorCache | None:
        root = os.environ.get(CACHE_ENV)
        if not root:
            return None
        if self._cache is None or self._cache.root != Path(root):
            self._cache = VectorCache(Path(root), self.fingerprint, self.embedding_dim)
        return self._cache


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
    return np.ascontiguousarray(vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12))


def shipped_threshold(embedder: FrozenEmbedder) -> float | None:
    """The calibrated threshold shipped in ``thresholds/<name>.json`` for this model's fingerprint, if any."""
    from facerec.models.calibration import read_threshold_records

    records = read_threshold_records(THRESHOLDS_DIR / f"{embedder.name}.json")
    for record in records:
        if record.get("fingerprint") == embedder.fingerprint:
            return float(record["threshold"])
    if records:
        log.warning(
            "%s: no shipped threshold for %s (other options or weights; calibrated: %s): none used",
            embedder.name,
            embedder.fingerprint,
            ", ".join(str(r.get("fingerprint")) for r in records),
        )
    return None


class VectorCache:
    """Vectors by content key in one SQLite file per fingerprint (safe for concurrent readers/writers)."""

    def __init__(self, root: Path, fingerprint: str, dim: int) -> None:
        self.root = root
        self.dim = dim
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / (re.sub(r"[^A-Za-z0-9_.-]+", "_", fingerprint) + ".sqlite")
        try:
            self._db = sqlite3.connect(self.path, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL)")
        except sqlite3.Error as exc:
            raise ModelError(f"cannot open the vector cache {self.path}: {exc}") from exc

    def get(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            rows = self._db.execute(
                f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
            found.update({k: np.frombuffer(v, np.float32) for k, v in rows if len(v) == 4 * self.dim})
        return found

    def put(self, items: Iterable[tuple[bytes, np.ndarray]]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?)",
                [(k, np.asarray(v, np.float32).tobytes()) for k, v in items],
            )


def option_flag(value: Any) -> bool:
    """``1``/``true``/``yes`` (any case) or a bool -> True; ``0``/``false``/``no``/None -> False."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ModelError(f"expected a yes/no value, got {value!r}")
