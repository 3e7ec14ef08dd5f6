"""The gallery's index choices (``IndexKind``) and build parameters, as an ``IndexConfig``.

Light on purpose (no faiss or numpy): the CLI reads the index kinds from here while it
builds ``facerec --help``. The indexes themselves are built in ``facerec.gallery.index``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from facerec.config import check_config

#: flat (exact), hnsw or ivf (approximate, for large galleries); auto picks one from the size and dimension.
IndexKind = Literal["flat", "hnsw", "ivf", "auto"]
INDEX_KINDS: tuple[str, ...] = get_args(IndexKind)
#: Index structures ``build_index`` makes; ``auto`` resolves to one of them.
CONCRETE_KINDS = ("flat", "hnsw", "ivf")
#: Default parameters of the approximate indexes (chosen with benchmarks/index_speed.py).
HNSW_DEFAULTS = {"m": 32, "ef_construction": 80, "ef_search": 64}
IVF_DEFAULTS = {
    "nlist": None,  # None: about 2 * sqrt(n), at most n // 39 (default_nlist)
    "nprobe": 16,
    "quantizer": "flat",  # coarse quantizer over the list centroids: flat (exact) or hnsw (fast past ~1e3 lists)
    # stored vectors: flat (float32); sq8 (one byte per dimension, 4x less memory); pq (4-bit product-quantised
    # codes, dim / 4 bytes, scanned with faiss's SIMD fast-scan; the top k_factor * k re-scored exactly from
    # copies stored as ``refine``; removal rebuilds)
    "encoding": "flat",
    "k_factor": 16,
    "refine": "flat",  # pq's re-scoring copies: flat (float32, exact cosines) or sq8 (a quarter of the memory)
    "train_size": None,  # k-means sample; None: every vector
}
#: ``auto``: ``flat_max`` vectors and more get an IVF index whose nprobe reaches ``recall``
#: (leave-one-out neighbour recall on ``tune_queries`` gallery vectors, see ``index.tune_nprobe``).
AUTO_DEFAULTS = {"flat_max": 50_000, "recall": 0.95, "tune_queries": 500, "tune_k": 3}
#: The parameters each kind accepts.
INDEX_PARAMS: dict[str, dict[str, Any]] = {
    "flat": {},
    "hnsw": HNSW_DEFAULTS,
    "ivf": IVF_DEFAULTS,
    "auto": AUTO_DEFAULTS,
}


@dataclass(frozen=True)
class IndexConfig:
    """Which FAISS index a gallery keeps, and its build/search parameters (unset: the defaults)."""

    kind: IndexKind = "flat"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        known = INDEX_PARAMS.get(self.kind, {})
        check_config(
            self,
            [
                (self.kind in INDEX_KINDS, f"kind must be one of {', '.join(INDEX_KINDS)}, got {self.kind!r}"),
                *(
                    (
                        name in known,
                        f"params.{name} is not a {self.kind} parameter (known: {', '.join(known) or 'none'})",
                    )
                    for name in self.params
                ),
            ],
        )
