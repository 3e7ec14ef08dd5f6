"""Teacher vectors of training crops, computed once and cached on disk.

A teacher is any embedder ``load_model`` resolves (``dlib-resnet``, ``onnx:PATH``, a
registry name, a model directory). Distillation needs its vector for every training
crop and for the crop's horizontal flip; computing them takes minutes (dlib: a
landmark fit and a ResNet per image), so they are stored once and reused by every
run and every student.

Layout of a cache folder::

    index.json               {"format": 1, "teachers": {fingerprint: {"file", "spec", "dim", "count"}}}
    <sha256(fingerprint)[:24]>.npz    hashes (N,) str, vectors (N, D) float32, flipped (N, D) float32

Mirror vectors not computed yet (``flip=False``, for a slow teacher) are NaN rows.
One ``.npz`` per teacher, keyed by the teacher's fingerprint (its weights hash: a
retrained or replaced teacher gets a new file), each row keyed by the SHA-256 of the
crop file's bytes (a re-cropped image misses and is computed again; a copied tree
hits). Both files are written atomically (``facerec.files``) and read without pickle.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from facerec.data.images import load_image
from facerec.errors import DataError
from facerec.files import atomic_path, atomic_write, cache_dir, file_sha256

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$FACEREC_CACHE/teachers``, else ``~/.cache/facerec/teachers``."""
    return cache_dir("teachers")


def teacher_fingerprint(teacher) -> str:
    """The teacher's identity: ``Embedder.fingerprint`` (changes with its weights)."""
    fingerprint = getattr(teacher, "fingerprint", None)
    if not fingerprint:
        raise DataError(f"teacher {type(teacher).__name__} has no fingerprint: it cannot be cached")
    return str(fingerprint)


@dataclass(frozen=True)
class TeacherVectors:
    """The teacher's vectors of some crops (input order) and of their horizontal flips."""

    vectors: np.ndarray
    flipped: np.ndarray | None  # None when asked without mirror images
    fingerprint: str
    computed: int  # how many crops were missing from the cache and computed now


class TeacherCache:
    """One folder of cached teacher vectors (see the module docstring for the layout)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root else default_cache_dir()

    # ---- files
    def _index(self) -> dict:
        path = self.root / INDEX_FILE
        if not path.is_file():
            return {"format": CACHE_FORMAT, "teachers": {}}
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("teacher cache index %s unreadable (%s): starting a new one", path, exc)
            return {"format": CACHE_FORMAT, "teachers": {}}
        if index.get("format") != CACHE_FORMAT:
            return {"format": CACHE_FORMAT, "teachers": {}}
        return index

    @staticmethod
    def file_name(fingerprint: str) -> str:
        return hashlib.sha256(fingerprint.encode()).hexdigest()[:24] + ".npz"

    def load(self, fingerprint: str) -> dict[str, np.ndarray]:
        """hash -> (vector, flipped vector) rows stored for this teacher; empty when none."""
        entry = self._index()["teachers"].get(fingerprint)
        path = self.root / (entry["file"] if entry else self.file_name(fingerprint))
        if not path.is_file():
            return {}
        try:
            with np.load(path, allow_pickle=False) as data:
                hashes, vectors, flipped = data["hashes"], data["vectors"], data["flipped"]
        except (OSError, ValueError, KeyError) as exc:
            log.warning("teacher cache %s unreadable (%s): recomputing", path, exc)
            return {}
        return {str(h): np.stack([v, f]) for h, v, f in zip(hashes, vectors, flipped, strict=True)}

    def store(self, fingerprint: str, rows: dict[str, np.ndarray], spec: str) -> Path:
        """Write all rows of one teacher (replacing its file), then the index.

        Rows another process stored meanwhile are kept (merged in); a row computed by both is the same.
        """
        rows = {**self.load(fingerprint), **rows}
        hashes = sorted(rows)
        stacked = np.stack([rows[h] for h in hashes]).astype(np.float32)
        path = self.root / self.file_name(fingerprint)
        with atomic_path(path, durable=False) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, hashes=np.array(hashes, dtype="<U64"), vectors=stacked[:, 0], flipped=stacked[:, 1])
        index = self._index()
        index["teachers"][fingerprint] = {
            "file": path.name,
            "spec": spec,
            "dim": int(stacked.shape[-1]),
            "count": len(hashes),
        }
        with atomic_write(self.root / INDEX_FILE) as handle:
            json.dump(index, handle, indent=2)
        return path

    # ---- the one call
    def vectors(
        self,
        teacher,
        paths: Sequence[str | Path],
        spec: str = "",
        flip: bool = True,
        batch_size: int = 32,
        progress: bool = True,
    ) -> TeacherVectors:
        """The teacher's vectors of ``paths`` (and of their mirror images when ``flip``).

        Cached rows are reused, the rest computed and stored. ``flip=False`` halves the cost
        of a slow teacher: mirror vectors not computed are stored as NaN and ``flipped`` is
        ``None``; a later ``flip=True`` call computes just those.
        """
        from tqdm.auto import tqdm

        fingerprint = teacher_fingerprint(teacher)
        paths = [Path(p) for p in paths]
        hashes = [file_sha256(p) for p in tqdm(paths, desc="hashing crops", disable=not progress, leave=False)]
        rows = self.load(fingerprint)
        todo: dict[str, tuple[Path, bool, bool]] = {}  # hash -> (path, needs vector, needs mirror vector)
        for h, p in zip(hashes, paths, strict=True):
            row = rows.get(h)
            need = (row is None, flip and (row is None or bool(np.isnan(row[1]).any())))
            if any(need):
                todo[h] = (p, *need)
        if todo:
            log.info("teacher %s: %d of %d crops not cached, computing", spec or fingerprint, len(todo), len(paths))
            self._compute(teacher, todo, rows, batch_size, desc=f"teacher {spec or fingerprint}", progress=progress)
            self.store(fingerprint, rows, spec)
        table = np.stack([rows[h] for h in hashes]) if hashes else np.zeros((0, 2, 0), np.float32)
        return TeacherVectors(table[:, 0], table[:, 1] if flip else None, fingerprint, len(todo))

    @staticmethod
    def _compute(teacher, todo: dict, rows: dict[str, np.ndarray], batch_size: int, desc: str, progress: bool) -> None:
        """Fill ``rows`` for ``todo`` in batches of images (a crop and/or its mirror image per item)."""
        from tqdm.auto import tqdm

        items = sorted(todo.items())
        with tqdm(total=len(items), desc=desc, unit="crop", disable=not progress) as bar:
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                images, slots = [], []  # slots[k] = (hash, 0 for the crop / 1 for its mirror image)
                for h, (path, need_vector, need_mirror) in chunk:
                    image = load_image(path)
                    if need_vector:
                        images.append(image)
                        slots.append((h, 0))
                    if need_mirror:
                        images.append(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
                        slots.append((h, 1))
                out = np.asarray(teacher.embed_images(images), dtype=np.float32)
                for (h, side), vector in zip(slots, out, strict=True):
                    if h not in rows:
                        rows[h] = np.full((2, out.shape[1]), np.nan, np.float32)
                    rows[h][side] = vector
                bar.update(len(chunk))
