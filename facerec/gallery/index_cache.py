"""The FAISS index of a gallery, kept as a cache derived from its SQLite store.

    index.faiss   faiss index over image row ids, written with faiss.write_index
    index.json    sidecar: the store generation (and settings, vector count) the index matches

A change is committed to the store first (bumping its generation); the index is then
updated and renamed into place, and its sidecar last: the sidecar vouches for the
index. A reader uses the file only when the sidecar names the store's current
generation, settings and vector count; otherwise (a process killed between commit
and index write, a deleted or corrupt file) the index is rebuilt from the store and
saved. Every method that writes runs under the store's exclusive lock.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facerec import faults
from facerec.errors import GalleryError
from facerec.files import atomic_write
from facerec.gallery import index as faiss_index
from facerec.gallery.rows import GalleryRows
from facerec.gallery.store import GalleryStore, now

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
INDEX_META_FILE = "index.json"


class IndexCache:
    """The index file of ``store``'s directory (built from ``rows``), plus the copy in memory of its generation."""

    def __init__(self, store: GalleryStore, rows: GalleryRows) -> None:
        self.store = store
        self.rows = rows
        self._index: Any = None
        self._generation: int | None = None

    @property
    def path(self) -> Path:
        return self.store.path / INDEX_FILE

    @property
    def meta_path(self) -> Path:
        return self.store.path / INDEX_META_FILE

    def forget(self) -> None:
        self._index, self._generation = None, None

    # ------------------------------------------------------------ file
    def read(self, generation: int) -> Any:
        """The index file if its sidecar says it matches ``generation`` and the current settings, else None."""
        try:
            sidecar = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        expected = {"generation": generation, **self.store.index_settings()}
        if not isinstance(sidecar, dict) or any(sidecar.get(k) != v for k, v in expected.items()):
            return None
        try:
            index = faiss_index.read_index(self.path)
        except GalleryError as exc:
            log.warning("%s; rebuilding it from the database", exc)
            return None
        return index if index.ntotal == sidecar.get("count") else None

    def write(self, index: Any, generation: int) -> None:
        """Save ``index`` as the one of ``generation``: the index file first, then its sidecar."""
        for name in (INDEX_FILE, INDEX_META_FILE):  # left by a killed writer; we hold the exclusive lock
            for stale in self.store.path.glob(f".{name}.*.tmp"):
                stale.unlink(missing_ok=True)
        faiss_index.write_index(index, self.path)
        faults.point("index-sidecar")
        sidecar = {
            "generation": generation,
            **self.store.index_settings(),
            "count": int(index.ntotal),
            "written_at": now(),
        }
        with atomic_write(self.meta_path) as f:
            json.dump(sidecar, f)
        self._index, self._generation = index, generation

    def build(self, settings: dict[str, Any] | None = None) -> Any:
        """An index of every stored vector (None while the gallery has no model yet)."""
        settings = settings or self.store.index_settings()
        dim = self.store.meta("embedding_dim")
        ids, vectors = self.rows.vectors()
        log.info("gallery %s: building a %s index over %d vectors", self.store.path, settings["kind"], len(ids))
        index = faiss_index.build_index(vectors.reshape(-1, int(dim or 1)), ids, settings["kind"], **settings["params"])
        return None if dim is None else index

    def is_fresh(self) -> bool:
        return self.read(self.store.generation()) is not None

    # ------------------------------------------------------------ following changes (exclusive lock held)
    def update(self, previous: int, change: Callable[[Any], None], write: bool = True) -> None:
        """With the change committed: apply it to the index of generation ``previous``, or rebuild.

        ``write=False`` keeps the result in memory only (bulk enrollment; ``flush`` saves it).
        """
        if self._index is not None and self._generation == previous:
            index = self._index  # ours, and nobody committed since
        else:
            index = self.read(previous)
        if index is not None:
            try:
                change(index)
            except ValueError as exc:  # HNSW cannot delete, IVF untrained or outgrown
                log.info("gallery %s: rebuilding the index (%s)", self.store.path, exc)
                index = None
        if index is None:
            index = self.build()
        generation = self.store.generation()
        if index is not None and write:
            self.write(index, generation)
        else:
            self._index, self._generation = index, generation

    def add(self, index: Any, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Append vectors; an IVF index whose list count the gallery has outgrown asks to be rebuilt."""
        faiss_index.add_vectors(index, vectors, ids)
        inner = faiss_index.inner_index(index)
        if (
            isinstance(inner, faiss_index.faiss.IndexIVF)
            and not self.store.meta("index_params", {}).get("nlist")
            and faiss_index.default_nlist(index.ntotal) >= 2 * inner.nlist
        ):
            raise ValueError("the gallery outgrew its IVF lists: retrain")

    def flush(self) -> None:
        """Write the index kept in memory by ``update(write=False)`` (rebuild it if others wrote since)."""
        generation = self.store.generation()
        if self.read(generation) is not None:
            return
        index = self._index if self._generation == generation else self.build()
        if index is not None:
            self.write(index, generation)

    def rebuild(self, kind: str | None = None, **params: Any) -> dict[str, Any]:
        """Rebuild from the store, optionally switching kind and parameters (recorded in the store)."""
        settings = self.store.index_settings()
        if kind is not None:
            if kind not in faiss_index.INDEX_KINDS:
                raise GalleryError(f"unknown index kind {kind!r}; choose {', '.join(faiss_index.INDEX_KINDS)}")
            settings = {**settings, "kind": kind, "params": params}
        start = time.perf_counter()
        try:  # bad parameters fail here, before anything is saved
            index = self.build(settings)
        except ValueError as exc:
            raise GalleryError(str(exc)) from exc
        if kind is not None:
            with self.store.transaction():
                self.store.set_meta(index_kind=kind, index_params=params)
        if index is not None:
            self.write(index, self.store.generation())
        return {
            "kind": settings["kind"],
            "params": settings["params"],
            "vectors": 0 if index is None else int(index.ntotal),
            "seconds": round(time.perf_counter() - start, 3),
            # what was built (``auto`` resolves to a concrete kind, lists and nprobe), read back from faiss
            "index": None if index is None else faiss_index.describe_index(index),
        }

    # ------------------------------------------------------------ reading
    def current(self) -> Any:
        """The index of the store's current generation: in memory, read from disk, or rebuilt (and saved)."""
        store = self.store
        with store.guard():
            generation = store.generation()
        if self._index is not None and self._generation == generation:
            return self._index
        with store.lock(exclusive=False), store.guard():
            generation = store.generation()
            index = self.read(generation)
        if index is None:
            with store.lock(exclusive=True), store.guard():
                generation = store.generation()
                index = self.read(generation)
                if index is None:
                    log.info("gallery %s: index missing or stale; rebuilding it from the database", store.path)
                    index = self.build()
                    if index is not None:
                        self.write(index, generation)
        self._index, self._generation = index, generation
        return index
