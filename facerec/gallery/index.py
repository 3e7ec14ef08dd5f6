"""FAISS indexes over unit vectors: builders (Flat / HNSW / IVF), search, atomic persistence.

Every index holds the caller's 64-bit ids (gallery row ids, record numbers) and
scores are cosine similarities of L2-normalised vectors. Flat and HNSW sit in an
``IndexIDMap2``; IVF keeps ids in its inverted lists natively (an ``IndexIDMap``
around IVF would renumber wrongly on removal, since IVF does not compact). ``flat`` is exact; ``hnsw`` and ``ivf`` are
approximate, for large galleries. Files are written with faiss's own
``write_index`` to a temporary file that is renamed over the target, so a reader
sees either the old or the new index, never half of one.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from facerec.errors import GalleryError
from facerec.files import atomic_path
from facerec.gallery.config import HNSW_DEFAULTS, INDEX_KINDS, IVF_DEFAULTS, IndexKind  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

#: faiss wants about 39 training points per IVF list.
MIN_POINTS_PER_LIST = 39


def as_unit_vectors(vectors: np.ndarray, dim: int | None = None) -> np.ndarray:
    """A C-contiguous float32 copy of ``vectors`` (N, D) with rows scaled to unit length."""
    array = np.array(vectors, dtype=np.float32, copy=True, order="C")
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"expected a 2-d array of vectors, got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"expected {dim}-d vectors, got {array.shape[1]}-d")
    if not np.isfinite(array).all():
        raise ValueError("vectors contain NaN or infinite values")
    if len(array):
        faiss.normalize_L2(array)
    return array


def default_nlist(n: int) -> int:
    """IVF list count for ``n`` vectors: about 4 sqrt(n), with enough training points per list."""
    return max(1, min(int(4 * math.sqrt(max(n, 1))), n // MIN_POINTS_PER_LIST))


def build_index(vectors: np.ndarray, ids: np.ndarray, kind: str = "flat", **params: Any) -> faiss.Index:
    """Index ``vectors`` (N, D) under int64 ``ids`` (N,) for inner-product search.

    ``kind``: ``flat`` (exact), ``hnsw`` (params ``m``, ``ef_construction``, ``ef_search``)
    or ``ivf`` (params ``nlist``, ``nprobe``; trained on ``vectors``). Vectors are
    normalised, so scores are cosine similarities. An IVF index built from no
    vectors is untrained: build it again once there are vectors to train on.
    """
    vectors = as_unit_vectors(vectors)
    ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    if len(ids) != len(vectors):
        raise ValueError(f"{len(vectors)} vectors but {len(ids)} ids")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("ids must be unique")
    dim = vectors.shape[1]
    inner = _make_inner(kind, dim, len(vectors), params)
    # faiss's python wrapper keeps ``inner`` alive inside the IndexIDMap2
    index = inner if isinstance(inner, faiss.IndexIVF) else faiss.IndexIDMap2(inner)
    if not index.is_trained and len(vectors):
        index.train(vectors)
    if len(vectors):
        index.add_with_ids(vectors, ids)
    return index


def _make_inner(kind: str, dim: int, n: int, params: dict[str, Any]) -> faiss.Index:
    if kind == "flat":
        _check_params(kind, params, {})
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        p = _check_params(kind, params, HNSW_DEFAULTS)
        inner = faiss.IndexHNSWFlat(dim, int(p["m"]), faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = int(p["ef_construction"])
        inner.hnsw.efSearch = int(p["ef_search"])
        return inner
    if kind == "ivf":
        p = _check_params(kind, params, IVF_DEFAULTS)
        nlist = int(p["nlist"]) if p["nlist"] else default_nlist(n)
        if n and nlist > n:
            log.warning("ivf: %d lists for %d vectors; using %d", nlist, n, n)
            nlist = n
        quantizer = faiss.IndexFlatIP(dim)
        inner = faiss.IndexIVFFlat(quantizer, dim, max(nlist, 1), faiss.METRIC_INNER_PRODUCT)
        inner.nprobe = min(int(p["nprobe"]), inner.nlist)
        return inner
    raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")


def _check_params(kind: str, params: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        known = ", ".join(defaults) or "none"
        raise ValueError(f"unknown {kind} index parameter {unknown[0]!r}; known: {known}")
    return {**defaults, **{k: v for k, v in params.items() if v is not None}}


def inner_index(index: faiss.Index) -> faiss.Index:
    """The index inside an ``IndexIDMap``/``IndexIDMap2`` wrapper, as its concrete class."""
    base = faiss.downcast_index(index)
    if isinstance(base, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        return faiss.downcast_index(base.index)
    return base


def index_kind(index: faiss.Index) -> str:
    """``flat``, ``hnsw`` or ``ivf`` for an index made by ``build_index``."""
    inner = inner_index(index)
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(inner, faiss.IndexIVF):
        return "ivf"
    return "flat"


def set_search_params(index: faiss.Index, ef_search: int | None = None, nprobe: int | None = None) -> None:
    """Tune the speed/recall trade-off of an approximate index in place (ignored for flat)."""
    inner = inner_index(index)
    if ef_search is not None and isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = int(ef_search)
    if nprobe is not None and isinstance(inner, faiss.IndexIVF):
        inner.nprobe = min(int(nprobe), inner.nlist)


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, ids), each (Q, k), best first; missing neighbours have id -1 and score -inf."""
    queries = as_unit_vectors(queries, index.d)
    k = int(k)
    if k < 1:
        raise ValueError("k must be at least 1")
    if index.ntotal == 0 or not index.is_trained:
        return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
    if len(queries) == 1:  # one query cannot use several threads; OpenMP's barrier costs ms on a busy CPU
        with single_thread():
            scores, ids = index.search(queries, k)
    else:
        scores, ids = index.search(queries, k)
    scores[ids < 0] = -np.inf
    return scores, ids


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run faiss on one OpenMP thread inside the block."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def add_vectors(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> None:
    """Append vectors under new ``ids`` to a trained index."""
    if not index.is_trained:
        raise ValueError("the index is not trained; build it again with build_index")
    index.add_with_ids(as_unit_vectors(vectors, index.d), np.ascontiguousarray(ids, dtype=np.int64).reshape(-1))


def supports_removal(index: faiss.Index) -> bool:
    """Whether ``remove_vectors`` works in place (HNSW cannot delete: rebuild it instead)."""
    return not isinstance(inner_index(index), faiss.IndexHNSW)


def remove_vectors(index: faiss.Index, ids: np.ndarray) -> int:
    """Delete ``ids`` in place; returns how many were removed."""
    if not supports_removal(index):
        raise ValueError("an HNSW index cannot delete vectors; rebuild it without them")
    return int(index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)))


def index_ids(index: faiss.Index) -> np.ndarray:
    """The ids an index holds (sorted)."""
    base = faiss.downcast_index(index)
    if isinstance(base, faiss.IndexIVF):
        lists = base.invlists
        chunks = [
            faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
            for i in range(base.nlist)
            if lists.list_size(i)
        ]
        ids = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
    else:
        ids = faiss.vector_to_array(base.id_map)
    return np.sort(ids.astype(np.int64))


def write_index(index: faiss.Index, path: str | Path) -> Path:
    """Write with ``faiss.write_index`` to a temporary file, fsync, then rename over ``path``."""
    path = Path(path)
    from facerec import faults  # crash tests kill the process here: temporary file written, not renamed

    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
        faults.point("index-save")
    return path


def read_index(path: str | Path) -> faiss.Index:
    """Read an index written by ``write_index``; an unreadable file is a GalleryError."""
    path = Path(path)
    if not path.is_file():
        raise GalleryError(f"no index file at {path}")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()
        raise GalleryError(f"cannot read faiss index {path}: {reason[-1] if reason else 'unreadable'}") from exc
