"""The gallery's index choices (``IndexKind``) and build parameters, as an ``IndexConfig``.

Light on purpose (no faiss or numpy): the CLI reads the index kinds from here while it
builds ``facerec --help``. The indexes themselves are built in ``facerec.gallery.index``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from facerec.config import check_config

#: flat (exact), hnsw or ivf (approximate, for large galleries).
IndexKind = Literal["flat", "hnsw", "ivf"]
INDEX_KINDS: tuple[str, ...] = get_args(IndexKind)
#: Default parameters of the approximate indexes (chosen with benchmarks/index_speed.py).
HNSW_DEFAULTS = {"m": 32, "ef_construction": 80, "ef_search": 64}
IVF_DEFAULTS = {"nlist": None, "nprobe": 16}  # nlist None: about 4 * sqrt(n), at most n // 39
#: The parameters each kind accepts.
INDEX_PARAMS: dict[str, dict[str, Any]] = {"flat": {}, "hnsw": HNSW_DEFAULTS, "ivf": IVF_DEFAULTS}


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
