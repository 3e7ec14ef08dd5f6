"""FAISS indexes over unit vectors: builders (Flat / HNSW / IVF / auto), search, atomic persistence.

Every index holds the caller's 64-bit ids (gallery row ids, record numbers) and
scores are cosine similarities of L2-normalised vectors. Flat, HNSW and IVF-PQ with
re-scoring sit in an ``IndexIDMap2``; plain IVF keeps ids in its inverted lists
natively (an ``IndexIDMap`` around IVF would renumber wrongly on removal, since IVF
does not compact). ``flat`` is exact; ``hnsw`` and ``ivf`` are approximate, for large
galleries. ``auto`` picks from the gallery's size and dimension (``auto_index``):
flat below ``AUTO_DEFAULTS["flat_max"]`` vectors; above, IVF (an HNSW coarse
quantizer past ~16k lists; from 64-d, lists of 4-bit fast-scan PQ codes re-scored from
float copies), k-means
trained on a sample, ``nprobe`` tuned at build time for a leave-one-out recall
target (``tune_nprobe``). The structure and its search parameters live in the faiss
file itself; ``describe_index`` reads them back. Files are written with faiss's own
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
from facerec.gallery.config import (  # noqa: F401  (re-exported)
    AUTO_DEFAULTS,
    CONCRETE_KINDS,
    HNSW_DEFAULTS,
    INDEX_KINDS,
    IVF_DEFAULTS,
    IndexKind,
)

log = logging.getLogger(__name__)

#: IVF lists from which the coarse quantizer is an HNSW graph rather than a flat scan. A flat
#: scan of 4096 centroids (128-d) took less time than the graph search that must find
#: nprobe = 256 of them (0.5 vs 1.2 ms per query, benchmarks/index_speed.py exploration at 1e6).
AUTO_HNSW_QUANTIZER_LISTS = 16_384
#: k-means trains on this many vectors per list (faiss wants >= 39, caps at 256; its cost is
#: samples x lists x dim, so 50 keeps a 1e6 x 512 build within minutes on 2 cores).
AUTO_TRAIN_PER_LIST = 50
#: nprobe values ``tune_nprobe`` tries, smallest first (steps of ~1.5x: doubling overshoots the latency).
NPROBE_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
#: IVF lists per sqrt(n) vectors. k-means costs samples x lists x dim, i.e. ~lists^2 x dim,
#: so 2 (not faiss's usual 4-16) keeps training within minutes at 1e6 on 2 cores; a
#: gallery retrains its IVF index once it holds 4x the vectors it was trained for.
LISTS_PER_SQRT_N = 2
#: Dimensions from which ``auto`` stores the lists as 4-bit fast-scan PQ codes re-scored from
#: float copies: at 1e6 vectors it scanned 256 of 4096 lists in 0.5 ms where float32 lists
#: took 2.4 ms for 128 (synthetic 128-d, one thread), and the exact re-scoring of the top
#: ``k_factor`` x k keeps recall at that of the lists probed.
AUTO_PQ_MIN_DIM = 64
#: faiss wants about 39 training points per IVF list.
MIN_POINTS_PER_LIST = 39
_SQ8 = faiss.ScalarQuantizer.QT_8bit
#: Beam width of an HNSW coarse quantizer (it must find ``nprobe`` lists, so at least that).
QUANTIZER_EF_SEARCH = 64


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
    """IVF list count for ``n`` vectors: about 2 sqrt(n), with enough training points per list."""
    return max(1, min(int(LISTS_PER_SQRT_N * math.sqrt(max(n, 1))), n // MIN_POINTS_PER_LIST))


def auto_index(n: int, dim: int, flat_max: int | None = None) -> tuple[str, dict[str, Any]]:
    """The index kind and build parameters ``auto`` uses for ``n`` vectors of ``dim`` dimensions.

    Exact search scans n * dim floats per query; below ``flat_max`` vectors that is
    within a few milliseconds on one core, so nothing is approximated. Above it, IVF
    visits nprobe of ~2 sqrt(n) lists (an HNSW graph finds them faster than a scan of
    every centroid only past ~16k lists) and, for vectors of 64+ dimensions, scans 4-bit
    PQ codes and re-scores the best exactly. ``nprobe`` is left to ``tune_nprobe``.
    """
    flat_max = AUTO_DEFAULTS["flat_max"] if flat_max is None else int(flat_max)
    if n < max(flat_max, 1):
        return "flat", {}
    nlist = default_nlist(n)
    return "ivf", {
        "nlist": nlist,
        "nprobe": None,
        "quantizer": "hnsw" if nlist >= AUTO_HNSW_QUANTIZER_LISTS else "flat",
        "encoding": "pq" if dim >= AUTO_PQ_MIN_DIM and dim % 4 == 0 else "flat",
        "train_size": min(n, nlist * AUTO_TRAIN_PER_LIST),
    }


def build_index(vectors: np.ndarray, ids: np.ndarray, kind: str = "flat", **params: Any) -> faiss.Index:
    """Index ``vectors`` (N, D) under int64 ``ids`` (N,) for inner-product search.

    ``kind``: ``flat`` (exact), ``hnsw`` (params ``m``, ``ef_construction``, ``ef_search``),
    ``ivf`` (params ``nlist``, ``nprobe``, ``quantizer``, ``encoding``, ``k_factor``, ``train_size``;
    trained on ``vectors`` or a random sample of ``train_size`` of them), or ``auto``
    (params ``flat_max``, ``recall``, ``tune_queries``, ``tune_k``: the kind from ``auto_index``,
    then ``nprobe`` from ``tune_nprobe``). Vectors are normalised, so scores are cosine
    similarities. An IVF index built from no vectors is untrained: build it again once
    there are vectors to train on. ``describe_index`` tells what was built.
    """
    vectors = as_unit_vectors(vectors)
    ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    if len(ids) != len(vectors):
        raise ValueError(f"{len(vectors)} vectors but {len(ids)} ids")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("ids must be unique")
    dim = vectors.shape[1]
    tune: dict[str, Any] | None = None
    if kind == "auto":
        tune = _check_params(kind, params, AUTO_DEFAULTS)
        kind, params = auto_index(len(vectors), dim, tune["flat_max"])
    inner = _make_inner(kind, dim, len(vectors), params)
    # faiss's python wrapper keeps ``inner`` alive inside the IndexIDMap2
    index = inner if isinstance(inner, faiss.IndexIVF) else faiss.IndexIDMap2(inner)
    if not index.is_trained and len(vectors):
        index.train(_training_sample(vectors, params.get("train_size")))
    if len(vectors):
        index.add_with_ids(vectors, ids)
    if tune is not None and kind == "ivf" and len(vectors):
        nprobe, recall = tune_nprobe(index, vectors, ids, tune["recall"], tune["tune_queries"], tune["tune_k"])
        log.info("auto index: ivf over %d vectors, nprobe %d (neighbour recall %.3f)", len(ids), nprobe, recall)
    return index


def _training_sample(vectors: np.ndarray, size: int | None) -> np.ndarray:
    """``size`` distinct vectors drawn with a fixed seed (so a rebuild trains the same lists), or all."""
    if not size or size >= len(vectors):
        return vectors
    rows = np.sort(np.random.default_rng(0).choice(len(vectors), int(size), replace=False))
    return vectors[rows]


def tune_nprobe(
    index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, recall: float, n_queries: int = 500, k: int = 3
) -> tuple[int, float]:
    """Set the smallest ``nprobe`` (from ``NPROBE_LADDER``) whose neighbour recall reaches ``recall``.

    Queries are ``n_queries`` gallery vectors. A query is a hit when the index's best
    hit other than the query itself scores at least as high as its exact ``k``-th
    nearest other vector. Identification needs the top hit to be the right person,
    not the single nearest photo: with several photos per person, any of the nearest
    few is as good, and exact-vector recall@1 (``k`` = 1) understates what the search
    delivers (benchmarks/index_speed.py measures both). Returns (nprobe, measured
    recall); nprobe = nlist is exhaustive search.
    """
    inner = ivf_of(index)
    if len(vectors) < 2:  # no neighbours to find: keep the default
        return int(inner.nprobe), 1.0
    rows = np.random.default_rng(1).choice(len(vectors), min(int(n_queries), len(vectors)), replace=False)
    queries, own = vectors[rows], ids[rows]
    k = max(1, min(int(k), len(vectors) - 1))
    scores, found = faiss.knn(queries, vectors, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    found = ids[found]
    # the k-th best score among hits other than the query's own vector
    kth = np.sort(np.where(found != own[:, None], scores, -np.inf), axis=1)[:, -k]
    ladder = [p for p in NPROBE_LADDER if p < inner.nlist] + [inner.nlist]
    measured = 0.0
    with single_thread():  # the identify case: one query at a time
        for nprobe in ladder:
            set_search_params(index, nprobe=nprobe)
            scores, found = index.search(queries, 2)
            measured = float((_best_other(scores, found, own) >= kth - 1e-5).mean())
            if measured >= recall:
                break
    return int(inner.nprobe), measured


def _best_other(scores: np.ndarray, found: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Per query, the best score of a hit other than the query's own vector (-inf if none)."""
    other = (found != own[:, None]) & (found >= 0)
    return np.where(other, scores, -np.inf).max(axis=1)


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
        return _make_ivf(dim, n, _check_params(kind, params, IVF_DEFAULTS))
    raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")


def _make_ivf(dim: int, n: int, p: dict[str, Any]) -> faiss.IndexIVF:
    nlist = int(p["nlist"]) if p["nlist"] else default_nlist(n)
    if n and nlist > n:
        log.warning("ivf: %d lists for %d vectors; using %d", nlist, n, n)
        nlist = n
    nlist = max(nlist, 1)
    if p["quantizer"] == "flat":
        quantizer = faiss.IndexFlatIP(dim)
    elif p["quantizer"] == "hnsw":
        quantizer = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"unknown ivf quantizer {p['quantizer']!r}; choose flat or hnsw")
    if p["encoding"] == "flat":
        inner = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    elif p["encoding"] == "sq8":
        inner = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, _SQ8, faiss.METRIC_INNER_PRODUCT)
    elif p["encoding"] == "pq":
        if dim % 4 or 0 < n < 256:  # 4-bit codes over pairs of dimensions, in blocks of 2; 16 centroids each
            raise ValueError(f"ivf encoding pq needs a dimension divisible by 4 and 256 vectors, not {dim}-d x {n}")
        pq = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, dim // 2, 4, faiss.METRIC_INNER_PRODUCT)
        set_search_params(pq, nprobe=int(p["nprobe"] or IVF_DEFAULTS["nprobe"]))
        if p["refine"] not in ("flat", "sq8"):
            raise ValueError(f"unknown pq refine store {p['refine']!r}; choose flat or sq8")
        store = (
            faiss.IndexFlatIP(dim)
            if p["refine"] == "flat"
            else faiss.IndexScalarQuantizer(dim, _SQ8, faiss.METRIC_INNER_PRODUCT)
        )
        # ids are positions in the re-scoring store, so this one goes inside an IndexIDMap2
        refine = faiss.IndexRefine(pq, store)
        refine.k_factor = float(p["k_factor"])
        return refine
    else:
        raise ValueError(f"unknown ivf encoding {p['encoding']!r}; choose flat, sq8 or pq")
    set_search_params(inner, nprobe=int(p["nprobe"] or IVF_DEFAULTS["nprobe"]))
    return inner


def ivf_of(index: faiss.Index) -> faiss.IndexIVF | None:
    """The IVF structure of an index (also inside a re-scoring ``IndexRefine``), or None."""
    inner = inner_index(index)
    if isinstance(inner, faiss.IndexRefine):
        inner = faiss.downcast_index(inner.base_index)
    return inner if isinstance(inner, faiss.IndexIVF) else None


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
    if isinstance(inner_index(index), faiss.IndexHNSW):
        return "hnsw"
    return "ivf" if ivf_of(index) is not None else "flat"


def set_search_params(index: faiss.Index, ef_search: int | None = None, nprobe: int | None = None) -> None:
    """Tune the speed/recall trade-off of an approximate index in place (ignored for flat).

    faiss writes ``efSearch`` and ``nprobe`` into the index file, so the setting persists.
    """
    inner, ivf = inner_index(index), ivf_of(index)
    if ef_search is not None and isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = int(ef_search)
    if nprobe is not None and ivf is not None:
        ivf.nprobe = min(int(nprobe), ivf.nlist)
        quantizer = faiss.downcast_index(ivf.quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):  # the graph must find nprobe lists
            quantizer.hnsw.efSearch = max(QUANTIZER_EF_SEARCH, 2 * ivf.nprobe)


def describe_index(index: faiss.Index) -> dict[str, Any]:
    """The structure and search parameters of an index, read from faiss (so also after ``read_index``)."""
    inner, ivf = inner_index(index), ivf_of(index)
    info: dict[str, Any] = {"kind": index_kind(index), "vectors": int(index.ntotal), "dim": int(index.d)}
    if isinstance(inner, faiss.IndexHNSW):
        hnsw = inner.hnsw
        info |= {"m": int(hnsw.nb_neighbors(1)), "ef_construction": hnsw.efConstruction, "ef_search": hnsw.efSearch}
    elif ivf is not None:
        quantizer = faiss.downcast_index(ivf.quantizer)
        pq_types = (faiss.IndexIVFPQFastScan, faiss.IndexIVFPQ)  # the second: galleries built before fast-scan
        encoding = (
            "sq8" if isinstance(ivf, faiss.IndexIVFScalarQuantizer) else "pq" if isinstance(ivf, pq_types) else "flat"
        )
        info |= {
            "nlist": int(ivf.nlist),
            "nprobe": int(ivf.nprobe),
            "quantizer": "hnsw" if isinstance(quantizer, faiss.IndexHNSW) else "flat",
            "encoding": encoding,
        }
        if isinstance(quantizer, faiss.IndexHNSW):
            info["quantizer_ef_search"] = int(quantizer.hnsw.efSearch)
        if isinstance(inner, faiss.IndexRefine):
            store = faiss.downcast_index(inner.refine_index)
            refine = "sq8" if isinstance(store, faiss.IndexScalarQuantizer) else "flat"
            info |= {"pq_bytes": int(ivf.code_size), "refine": refine, "k_factor": float(inner.k_factor)}
    return info


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
    """Whether ``remove_vectors`` works in place (HNSW and PQ with re-scoring cannot delete: rebuild)."""
    return not isinstance(inner_index(index), (faiss.IndexHNSW, faiss.IndexRefine))


def remove_vectors(index: faiss.Index, ids: np.ndarray) -> int:
    """Delete ``ids`` in place; returns how many were removed."""
    if not supports_removal(index):
        raise ValueError("this index (HNSW, or PQ with re-scoring) cannot delete vectors in place; rebuild it")
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
