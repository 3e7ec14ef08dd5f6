"""Settings of the face stage (detector, crop) and its choices, as ``Literal`` types.

Light on purpose (no numpy, torch or PIL): the CLI reads the choices and defaults
from here while it builds ``facerec --help``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal, get_args

from facerec.config import check_config

#: Which face of a photo the crop stage keeps (see ``facerec.faces.detect.choose_face``).
Policy = Literal["central", "largest", "probable"]
POLICIES: tuple[str, ...] = get_args(Policy)
#: Which face the recognition commands use in a photo with several (a subset of ``Policy``).
FaceChoice = Literal["central", "largest"]
FACE_CHOICES: tuple[str, ...] = get_args(FaceChoice)
#: What the crop stage does with a photo without a face: skip it, or write a centre crop.
Fallback = Literal["none", "center"]
FALLBACKS: tuple[str, ...] = get_args(Fallback)
#: Bump when the crop algorithm changes in a way that invalidates existing crops.
CROP_VERSION = 1


@dataclass(frozen=True)
class DetectorConfig:
    """MTCNN settings and crop geometry.

    ``margin`` is the fraction of the face box's longer side added on each side of the
    square crop (0 = tight box, 0.3 = crop side 1.6x the box: forehead, hair, chin).
    ``center_fraction`` is the side of the fallback centre crop relative to the image's
    shorter side (0.8 matches a 0.3-margin face crop on LFW's 250x250 photos).
    """

    image_size: int = 224
    margin: float = 0.3
    policy: Policy = "central"
    align: bool = True
    min_face_size: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = 0.709
    center_fraction: float = 0.8
    device: str = "cpu"
    batch_size: int = 32
    #: torch CPU threads while detecting (0: torch's default). 1 is far faster on an oversubscribed CPU.
    threads: int = 0

    def __post_init__(self) -> None:
        check_config(
            self,
            [
                (self.image_size >= 8, f"image_size must be >= 8, got {self.image_size}"),
                (0 <= self.margin <= 3, f"margin must be in [0, 3], got {self.margin}"),
                (self.policy in POLICIES, f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}"),
                (self.min_face_size >= 12, f"min_face_size must be >= 12, got {self.min_face_size}"),
                (
                    len(self.thresholds) == 3 and all(0 < t < 1 for t in self.thresholds),
                    f"thresholds must be three values in (0, 1), got {self.thresholds}",
                ),
                (0 < self.factor < 1, f"factor must be in (0, 1), got {self.factor}"),
                (0 < self.center_fraction <= 1, f"center_fraction must be in (0, 1], got {self.center_fraction}"),
                (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
                (self.threads >= 0, f"threads must be >= 0, got {self.threads}"),
            ],
        )

    def geometry(self) -> dict:
        """The settings that change the crops (not device, batch size or threads), for cache keys."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("device", "batch_size", "threads")}


@dataclass(frozen=True)
class CropConfig:
    """Detector settings plus what to do without a face and how to encode the crops."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    fallback: Fallback = "none"
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        check_config(
            self,
            [
                (self.fallback in FALLBACKS, f"fallback must be one of {', '.join(FALLBACKS)}, got {self.fallback!r}"),
                (1 <= self.jpeg_quality <= 100, f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}"),
            ],
        )

    def params_hash(self) -> str:
        """Hash of everything that changes the output crops (not device or batch size)."""
        params = {
            "version": CROP_VERSION,
            "detector": self.detector.geometry(),
            "fallback": self.fallback,
            "jpeg_quality": self.jpeg_quality,
        }
        return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
