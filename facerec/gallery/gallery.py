"""The gallery: a directory holding an SQLite database (the truth) and a FAISS index (a cache).

Layout of a gallery directory::

    gallery.sqlite   identities, images (source path, sha256, face, float32 embedding), meta
    index.faiss      faiss index over image row ids, written with faiss.write_index
    index.json       sidecar: the database generation the index was built from
    gallery.lock     fcntl.flock target that serialises writers across processes

``Gallery`` is a thin facade over collaborators with one job each:
``store.GalleryStore`` (the SQLite file: schema, migrations, the file lock,
transactions, meta), ``rows.GalleryRows`` (the identities and images tables) and
``index_cache.IndexCache`` (the FAISS file kept in step with the store). The facade
holds the order of a change: one transaction that also bumps the generation, then
the index update; it checks the model and aggregates search hits per identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facerec import faults
from facerec.errors import GalleryError, ModelMismatchError
from facerec.gallery import index as faiss_index
from facerec.gallery.index_cache import INDEX_FILE, INDEX_META_FILE, IndexCache
from facerec.gallery.records import MAX_NAME_LENGTH, EnrollOutcome, Match, ModelRecord, NewImage, check_name
from facerec.gallery.rows import GalleryRows
from facerec.gallery.store import (
    APPLICATION_ID,
    DB_FILE,
    HOME_ENV,
    LOCK_FILE,
    LOCK_TIMEOUT_S,
    MIGRATIONS,
    SCHEMA_VERSION,
    GalleryStore,
    default_gallery_dir,
    now,
)

__all__ = [
    "APPLICATION_ID",
    "DB_FILE",
    "HOME_ENV",
    "INDEX_FILE",
    "INDEX_META_FILE",
    "LOCK_FILE",
    "LOCK_TIMEOUT_S",
    "MAX_NAME_LENGTH",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "EnrollOutcome",
    "Gallery",
    "Match",
    "ModelRecord",
    "NewImage",
    "check_name",
    "default_gallery_dir",
    "now",
]


class Gallery:
    """One gallery directory; see the module docstring. Use as a context manager."""

    def __init__(self, path: str | Path, create: bool = False, lock_timeout: float = LOCK_TIMEOUT_S) -> None:
        self.store = GalleryStore(path, create, lock_timeout)
        self.rows = GalleryRows(self.store)
        self.index = IndexCache(self.store, self.rows)

    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def lock_timeout(self) -> float:
        return self.store.lock_timeout

    @property
    def db_path(self) -> Path:
        return self.store.db_path

    @property
    def index_path(self) -> Path:
        return self.index.path

    @property
    def index_meta_path(self) -> Path:
        return self.index.meta_path

    def close(self) -> None:
        self.store.close()
        self.index.forget()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def generation(self) -> int:
        """The database generation: bumped by every committed change."""
        with self.store.guard():
            return self.store.generation()

    # ------------------------------------------------------------ model
    def model(self) -> ModelRecord | None:
        """The model this gallery was enrolled with (None before the first enrollment)."""
        with self.store.guard():
            return self.store.model()

    def check_model(self, fingerprint: str) -> None:
        """Raise ModelMismatchError unless embeddings of model ``fingerprint`` belong in this gallery."""
        record = self.model()
        if record is not None and record.fingerprint != fingerprint:
            raise ModelMismatchError(
                f"gallery {self.path} was enrolled with model {record.fingerprint} ({record.describe()}); "
                f"the model in use is {fingerprint}: use that model or another --gallery"
            )

    # ------------------------------------------------------------ writing
    def enroll(
        self, batches: Sequence[tuple[str, Sequence[NewImage]]], model: ModelRecord, defer_index: bool = False
    ) -> list[EnrollOutcome]:
        """Add identities' images in ONE transaction (all or nothing); an image already enrolled is skipped.

        ``defer_index``: update the index in memory only (bulk enrollment); ``flush_index`` writes it.
        Until then the file is stale, which is safe: a reader rebuilds it from the database.
        """
        batches = [(check_name(name), list(images)) for name, images in batches]
        for _, images in batches:
            for image in images:
                if np.shape(image.embedding) != (model.embedding_dim,):
                    raise ValueError(f"embedding of {image.source} has shape {np.shape(image.embedding)}")
        store = self.store
        with store.lock(exclusive=True), store.guard():
            previous = store.generation()
            with store.transaction():
                self.check_model(model.fingerprint)
                if store.model() is None:
                    store.set_model(model)
                results = [self.rows.insert_identity(name, images) for name, images in batches]
                ids = [i for outcome, _ in results for i in outcome.added]
                if ids:
                    store.bump_generation(previous)
                faults.point("enroll-in-transaction")
            if ids:
                faults.point("enroll-committed")
                vectors = np.stack([v for _, vs in results for v in vs])
                self.index.update(
                    previous, lambda index: self.index.add(index, vectors, np.array(ids)), write=not defer_index
                )
        return [outcome for outcome, _ in results]

    def remove(self, name: str) -> int:
        """Erase an identity: its rows, embeddings and index vectors. Returns the number of images removed."""
        name = check_name(name)
        store = self.store
        with store.lock(exclusive=True), store.guard():
            previous = store.generation()
            with store.transaction():
                ids = self.rows.delete_identity(name)
                store.bump_generation(previous)
                faults.point("remove-in-transaction")
            store.checkpoint()  # the erased (zeroed) pages leave the write-ahead log
            self.index.update(previous, lambda index: faiss_index.remove_vectors(index, np.array(ids)))
        return len(ids)

    def rebuild_index(self, kind: str | None = None, **params: Any) -> dict[str, Any]:
        """Rebuild the index from SQLite, optionally switching its kind (flat, hnsw, ivf) and parameters."""
        with self.store.lock(exclusive=True), self.store.guard():
            return self.index.rebuild(kind, **params)

    def flush_index(self) -> None:
        """Write the index kept in memory by ``enroll(defer_index=True)`` (rebuild it if others wrote since)."""
        with self.store.lock(exclusive=True), self.store.guard():
            self.index.flush()

    def index_is_fresh(self) -> bool:
        with self.store.guard():
            return self.index.is_fresh()

    # ------------------------------------------------------------ reading
    def search(self, queries: np.ndarray, top_k: int = 5) -> list[list[Match]]:
        """For each query, the ``top_k`` identities by their best image's cosine score, best first."""
        index = self.index.current()
        if index is None or index.ntotal == 0:
            raise GalleryError(f"gallery {self.path} is empty: enroll someone first")
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != index.d:
            raise ModelMismatchError(
                f"queries are {queries.shape[1]}-d but gallery {self.path} holds {index.d}-d vectors"
            )
        with self.store.guard():
            per_identity = self.rows.most_images_per_identity()
            # the k-th best identity's best image ranks at most (k - 1) * per_identity + 1: exact aggregation
            k = min(int(index.ntotal), max(1, top_k) * per_identity)
            scores, ids = faiss_index.search(index, queries, k)
            names = self.rows.names_of(np.unique(ids[ids >= 0]))
        results = []
        for row_scores, row_ids in zip(scores, ids):
            best: dict[str, Match] = {}
            for score, image_id in zip(row_scores, row_ids):
                name = names.get(int(image_id))
                if name is not None and name not in best:
                    best[name] = Match(name, float(score), int(image_id))
            results.append(sorted(best.values(), key=lambda m: -m.score)[:top_k])
        return results

    def identities(self) -> list[dict[str, Any]]:
        """Every identity with its image count and timestamps, by name."""
        with self.store.guard():
            return self.rows.identities()

    def show(self, name: str) -> dict[str, Any]:
        """One identity and its images (source path, sha256, face details, time)."""
        name = check_name(name)
        with self.store.guard():
            return self.rows.show(name)

    def embeddings(self, name: str) -> np.ndarray:
        """The stored (N, D) float32 embeddings of one identity."""
        name = check_name(name)
        with self.store.guard():
            return self.rows.embeddings(name)

    def stats(self) -> dict[str, Any]:
        """Counts, model, index state, schema version, timestamps and sizes on disk."""
        store = self.store
        with store.guard():
            record = store.model()
            identities, images = self.rows.counts()
            stats = {
                "gallery": str(self.path),
                "identities": identities,
                "images": images,
                "embedding_dim": record.embedding_dim if record else None,
                "model_fingerprint": record.fingerprint if record else None,
                "model": record.spec if record else None,
                "index_kind": store.meta("index_kind"),
                "index_params": store.meta("index_params", {}),
                "generation": store.generation(),
                "index_fresh": self.index.is_fresh(),
                "schema_version": int(store.meta("schema_version")),
                "created_at": store.meta("created_at"),
                "updated_at": store.meta("updated_at"),
            }
        stats["bytes"] = {p.name: p.stat().st_size for p in sorted(self.path.iterdir()) if p.is_file()}
        return stats
