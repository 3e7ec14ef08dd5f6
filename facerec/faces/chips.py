"""dlib's face alignment of a crop: face box, 5-point landmarks, 150 px chip; and the ``align`` model option.

``DlibChipper`` is the front end of ``dlib-resnet``: dlib's HOG detector inside our square MTCNN
crop (the box nearest the centre; the fixed ``CROP_BOX`` where HOG finds none), dlib's landmark
model on that box, then ``dlib.get_face_chip`` (150 px, padding 0.25): the face scaled, rotated
and centred on dlib's five-point template.

Trainable embedders take the same chip with ``align: dlib-chip`` (``--model
'resnet18?align=dlib-chip'``, ``model.options.align`` in a training config): every image the
model sees, in training, validation and inference, is the chip of its crop resized to the input
size. Why: students distilled from ``dlib-resnet`` learn its geometry on the chips it sees. On LFW
View 1, resnet18 at 64 px, one recipe and 1,020 steps: pairsDevTest accuracy 0.877 (AUC 0.940)
on chips against 0.798 (AUC 0.869) on the eye-levelled crops. ``input_image`` is the one place
where a crop becomes a model's input pixels (``Embedder.preprocess`` and training's decode).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facerec.errors import ModelError
from facerec.files import atomic_path, cache_dir

log = logging.getLogger(__name__)

CHIP_SIZE = 150  # dlib's descriptor network's input
CHIP_PADDING = 0.25  # dlib's default around the aligned face
#: Where dlib's HOG detector puts the face in our crops, as fractions of the crop side
#: (left, top, right, bottom): the median HOG box on LFW View 1 train crops (margin 0.3).
#: Measured by benchmarks/dlib_alignment.py (HOG finds a face in 99.6% of those crops).
CROP_BOX = (0.228, 0.29, 0.786, 0.786)
#: dlib's HOG detector finds faces of 80+ px; upsample smaller crops once.
HOG_MIN_CROP = 180
BOX_CHOICES = ("hog", "crop")
#: ``align`` option values: ``none`` (the crop as it is) or ``dlib-chip``.
ALIGNMENTS = ("none", "dlib-chip")
NO_ALIGN = "none"


def import_dlib(user: str = "dlib-resnet"):
    try:
        import dlib
    except ImportError as exc:
        raise ModelError(f"{user} needs dlib: pip install dlib-bin") from exc
    return dlib


def frontal_face_detector(dlib):
    """dlib's HOG face detector, from a binary copy in facerec's cache once one is there.

    ``get_frontal_face_detector`` parses the detector from text built into dlib: ~0.3 s of
    every cold start, a tenth of the CLI's budget. Its own ``save`` writes a binary file that
    loads in ~1 ms; the copy is named by dlib's version, and any failure to write or read it
    falls back to the built-in one.
    """
    path = cache_dir("dlib") / f"frontal_face_detector-{dlib.__version__}.svm"
    if path.is_file():
        try:
            return dlib.fhog_object_detector(str(path))
        except RuntimeError as exc:  # a damaged copy: rebuilt below
            log.warning("ignoring the cached HOG detector %s (%s)", path, exc)
    detector = dlib.get_frontal_face_detector()
    try:
        with atomic_path(path, durable=False) as tmp:
            detector.save(str(tmp))
    except (OSError, RuntimeError) as exc:  # a read-only cache only costs the parse
        log.debug("HOG detector not cached (%s)", exc)
    return detector


class DlibChipper:
    """Crop (uint8 RGB, square) -> face box -> landmarks -> dlib's 150 px aligned chip."""

    def __init__(self, landmark_file: Path, box: str = "hog") -> None:
        """``box``: one of ``BOX_CHOICES`` (checked by the option's owner, ``dlib-resnet``'s builder)."""
        self._dlib = import_dlib()
        self._predictor = self._dlib.shape_predictor(str(landmark_file))
        self.hog = frontal_face_detector(self._dlib) if box == "hog" else None
        self.stats = {"crops": 0, "hog_box": 0}  # how often HOG found the face (the rest: the crop box)

    def face_box(self, crop: np.ndarray):  # -> dlib.rectangle
        """The face in a crop: HOG's box nearest the centre, else the fixed crop box."""
        side = crop.shape[0]
        self.stats["crops"] += 1
        if self.hog is not None:
            found = list(self.hog(crop, 1 if side < HOG_MIN_CROP else 0))
            if found:
                self.stats["hog_box"] += 1
                centre = side / 2
                return min(found, key=lambda r: (r.center().x - centre) ** 2 + (r.center().y - centre) ** 2)
        left, top, right, bottom = (round(f * side) for f in CROP_BOX)
        return self._dlib.rectangle(left, top, right, bottom)

    def chips(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """dlib's aligned 150 px chips (uint8 RGB) of the crops' faces."""
        out = []
        for crop in crops:
            shape = self._predictor(crop, self.face_box(crop))
            out.append(self._dlib.get_face_chip(crop, shape, size=CHIP_SIZE, padding=CHIP_PADDING))
        return out

    def settings(self) -> dict[str, Any]:
        """The constants that shape the chips (part of a frozen model's fingerprint)."""
        return {"crop_box": CROP_BOX, "chip": [CHIP_SIZE, CHIP_PADDING], "hog_min_crop": HOG_MIN_CROP}


# ------------------------------------------------------------------ the align option
def check_align(value: Any) -> str:
    """The ``align`` option's value, checked: ``none`` or ``dlib-chip``."""
    align = NO_ALIGN if value in (None, "") else str(value).strip().lower()
    if align not in ALIGNMENTS:
        raise ModelError(f"align must be one of {', '.join(ALIGNMENTS)}, got {value!r}")
    return align


@functools.cache
def default_chipper() -> DlibChipper:
    """One chipper per process (dlib's 5-point model, HOG box), built at its first use."""
    from facerec.models.dlib_resnet import LANDMARK_FILES, weights_dir

    return DlibChipper(weights_dir() / LANDMARK_FILES[5])


def input_image(image: Image.Image, size: int, align: str | None = None) -> Image.Image:
    """A crop as a model's input: RGB, aligned as ``align`` says, resized (bicubic) to ``size`` px."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    if align not in (None, NO_ALIGN):
        image = Image.fromarray(default_chipper().chips([np.asarray(image)])[0])
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return image
