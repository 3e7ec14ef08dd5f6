"""Settings of the evaluation stage (``EvalConfig``) and its choices, as ``Literal`` types.

Light on purpose (no numpy): the CLI reads the protocol choices from here while it
builds ``facerec --help``. The protocols themselves are in ``facerec.evaluation.protocols``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from facerec.config import check_config

#: lfw-view1 (DevTest pairs), lfw-view2 (10-fold pairs.txt), folder (any identity folder).
Protocol = Literal["lfw-view1", "lfw-view2", "folder"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)
#: How the embedding scatter plot projects vectors to 2-D.
Projection = Literal["tsne", "pca"]
PROJECTIONS: tuple[str, ...] = get_args(Projection)


@dataclass(frozen=True)
class EvalConfig:
    """How to evaluate: the protocol, its data and the evaluation options."""

    protocol: Protocol = "folder"
    #: LFW root or identity folder; None: $FACEREC_DATA (LFW) or the embedded sample (folder).
    data: str | None = None
    #: Detect and crop raw photos first (MTCNN, centre fallback); false when ``data`` already holds crops.
    crop: bool = True
    #: Crop cache folder; None: ``.cache/crops/<data-name>-<crop_size>`` in the working directory.
    crops: str | None = None
    crop_size: int = 224
    #: Test-time augmentation: average the embeddings of the image and its mirror.
    flip: bool = False
    batch_size: int = 64
    num_workers: int | None = None
    identification: bool = True
    #: CMC length and number of gallery candidates retrieved per probe.
    max_rank: int = 10
    #: False alarm rate of the open-set operating point (DIR@FAR).
    far: float = 1e-2
    #: Extra distractors: this share of the multi-image identities leave the gallery and
    #: their first image becomes a distractor probe (for data without single-image identities).
    distractor_fraction: float = 0.0
    # folder protocol
    n_pairs: int = 600
    n_folds: int = 10
    seed: int = 0
    #: Evaluate on this share of the identities only (identity-disjoint split with ``split_seed``,
    #: the same split ``facerec.data.split_by_identity`` gives training); 0 = every identity.
    holdout: float = 0.0
    split_seed: int = 0
    # plots
    scatter_identities: int = 8
    scatter_max_images: int = 30
    projection: Projection = "tsne"

    def __post_init__(self) -> None:
        check_config(
            self,
            [
                (self.protocol in PROTOCOLS, f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}"),
                (
                    self.projection in PROJECTIONS,
                    f"projection must be one of {', '.join(PROJECTIONS)}, got {self.projection!r}",
                ),
                (0 < self.far < 1, f"far must lie in (0, 1), got {self.far}"),
                (0 <= self.holdout < 1, f"holdout must lie in [0, 1), got {self.holdout}"),
                (
                    0 <= self.distractor_fraction < 1,
                    f"distractor_fraction must lie in [0, 1), got {self.distractor_fraction}",
                ),
                (self.max_rank >= 1, f"max_rank must be >= 1, got {self.max_rank}"),
                (self.n_folds >= 2, f"n_folds must be >= 2, got {self.n_folds}"),
                (self.n_pairs >= 4, f"n_pairs must be >= 4, got {self.n_pairs}"),
                (self.crop_size >= 8, f"crop_size must be >= 8, got {self.crop_size}"),
                (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            ],
        )
