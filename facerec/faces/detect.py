"""Face detection (MTCNN with facenet-pytorch's weights, ``faces.mtcnn``), the choice of the face a photo is about, and crop geometry.

``FaceDetector.detect`` runs MTCNN in batches of equal-sized images and returns every
face it finds; ``choose_face`` (a pure function) picks the one the photo is about;
``FaceDetector.crop`` cuts a square, eye-levelled crop with a margin around it.
torch is imported on first use only; torchvision never (see ``faces.mtcnn``).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from facerec.errors import ConfigError, NoFaceError
from facerec.faces.config import POLICIES, DetectorConfig, Policy  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from facerec.faces.mtcnn import Cascade

log = logging.getLogger(__name__)

#: Weight of the squared centre offset against the face area in the "central" policy
#: (score = w*h - CENTER_WEIGHT * offset**2, both in pixels**2, so it is scale-free).
CENTER_WEIGHT = 2.0


Point = tuple[float, float]


@dataclass(frozen=True)
class Face:
    """One detected face: box (x1, y1, x2, y2) in pixels, probability, 5 landmarks or None.

    Landmarks are MTCNN's: left eye, right eye, nose, left and right mouth corner (image left/right).
    """

    box: tuple[float, float, float, float]
    prob: float
    landmarks: tuple[Point, Point, Point, Point, Point] | None = None

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def center(self) -> Point:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    def eye_angle(self) -> float:
        """Angle (degrees) of the line from the left to the right eye; 0 when level or unknown."""
        if self.landmarks is None:
            return 0.0
        (lx, ly), (rx, ry) = self.landmarks[0], self.landmarks[1]
        return math.degrees(math.atan2(ry - ly, rx - lx))


@dataclass(frozen=True)
class Detection:
    """All faces found in one image and the index of the chosen one (None: no face)."""

    faces: tuple[Face, ...] = ()
    chosen: int | None = None

    @property
    def face(self) -> Face | None:
        return None if self.chosen is None else self.faces[self.chosen]


def choose_face(faces: Sequence[Face], image_size_wh: tuple[int, int], policy: str = "central") -> int | None:
    """Index of the face the image is about, or None when there is none.

    - ``central``: large and near the centre: ``area - CENTER_WEIGHT * offset**2`` (LFW photos are
      centred on their subject; a bigger but off-centre bystander loses, so does a tiny central one);
    - ``largest``: the largest box; ``probable``: the highest detection probability.
    Ties go to the earlier face.
    """
    if not faces:
        return None
    if policy == "largest":
        scores = [f.width * f.height for f in faces]
    elif policy == "probable":
        scores = [f.prob for f in faces]
    elif policy == "central":
        cx, cy = image_size_wh[0] / 2, image_size_wh[1] / 2
        scores = [
            f.width * f.height - CENTER_WEIGHT * ((f.center[0] - cx) ** 2 + (f.center[1] - cy) ** 2) for f in faces
        ]
    else:
        raise ConfigError(f"unknown face-selection policy {policy!r}; choose from {', '.join(POLICIES)}")
    return int(np.argmax(scores))


def crop_square(image: Image.Image, center: Point, side: float, angle: float, out_size: int) -> Image.Image:
    """An ``out_size`` square crop of ``image``: side ``side`` px around ``center``, rotated by ``angle`` degrees.

    The crop's x axis follows direction ``angle`` in the image (so a face whose eyes lie at
    ``angle`` comes out level); parts outside the image are black. The rotation is sampled at
    source resolution, then resized with antialiasing.
    """
    side_px = max(1, int(round(side)))
    theta = math.radians(angle)
    cos, sin = math.cos(theta), math.sin(theta)
    scale = side / side_px
    half = side_px / 2
    # output (u, v) -> input (x, y) = center + R(theta) @ ((u, v) - half) * scale
    a, b = cos * scale, -sin * scale
    d, e = sin * scale, cos * scale
    c = center[0] - a * half - b * half
    f = center[1] - d * half - e * half
    patch = image.transform(
        (side_px, side_px), Image.Transform.AFFINE, (a, b, c, d, e, f), resample=Image.Resampling.BILINEAR
    )
    if side_px != out_size:
        patch = patch.resize((out_size, out_size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return patch


class FaceDetector:
    """MTCNN (facenet-pytorch's shipped weights, run by ``faces.mtcnn``) plus face choice and crop geometry."""

    def __init__(self, config: DetectorConfig = DetectorConfig()) -> None:
        self.config = config
        self._mtcnn: Cascade | None = None

    @property
    def mtcnn(self) -> Cascade:
        """The MTCNN cascade, built on first use."""
        if self._mtcnn is None:
            import torch

            from facerec.faces.mtcnn import Cascade

            try:
                device = torch.device(self.config.device)
            except RuntimeError as exc:
                raise ConfigError(f"bad device {self.config.device!r}: {exc}") from exc
            if device.type == "cuda" and not torch.cuda.is_available():
                raise ConfigError(f"device {self.config.device!r} requested but CUDA is not available")
            config = self.config
            self._mtcnn = Cascade(config.min_face_size, config.thresholds, config.factor, device)
            log.debug("built MTCNN on %s", device)
        return self._mtcnn

    # ------------------------------------------------------------ detection
    def detect(self, images: Sequence[Image.Image], policy: str | None = None) -> list[Detection]:
        """Every face in each RGB image, with the chosen one; batches group images of equal size."""
        results: list[Detection | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, image in enumerate(images):
            if min(image.size) < self.config.min_face_size:
                results[i] = Detection()  # MTCNN's image pyramid is empty below min_face_size
            else:
                by_size[image.size].append(i)
        step = self.config.batch_size
        with self._torch_threads():
            for size, indices in by_size.items():
                for start in range(0, len(indices), step):
                    chunk = indices[start : start + step]
                    for i, faces in zip(chunk, self._detect_batch([images[i] for i in chunk])):
                        results[i] = Detection(faces, choose_face(faces, size, policy or self.config.policy))
        return results  # type: ignore[return-value]

    @contextlib.contextmanager
    def _torch_threads(self) -> Iterator[None]:
        """Use ``config.threads`` torch threads for the duration (restored afterwards)."""
        import torch

        previous = torch.get_num_threads()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        try:
            yield
        finally:
            if self.config.threads:
                torch.set_num_threads(previous)

    def _detect_batch(self, images: list[Image.Image]) -> list[tuple[Face, ...]]:
        """MTCNN on equal-sized images; a batch MTCNN cannot handle is retried one image at a time."""
        try:
            found = self.mtcnn.detect(images)
        except RuntimeError as exc:  # MTCNN fails on some degenerate inputs
            if len(images) > 1:
                return [faces for image in images for faces in self._detect_batch([image])]
            log.warning("MTCNN failed on a %dx%d image (%s); treating it as faceless", *images[0].size, exc)
            return [()]
        return [_faces(boxes, points) for boxes, points in found]

    # ------------------------------------------------------------ cropping
    def crop(self, image: Image.Image, face: Face) -> Image.Image:
        """``image_size`` square RGB crop around ``face`` with the margin, eyes levelled when ``align``."""
        side = max(face.width, face.height) * (1 + 2 * self.config.margin)
        angle = face.eye_angle() if self.config.align else 0.0
        return crop_square(image.convert("RGB"), face.center, side, angle, self.config.image_size)

    def center_crop(self, image: Image.Image) -> Image.Image:
        """The fallback when no face is found: the central square (``center_fraction`` of the shorter side)."""
        width, height = image.size
        side = min(width, height) * self.config.center_fraction
        return crop_square(image.convert("RGB"), (width / 2, height / 2), side, 0.0, self.config.image_size)

    def crop_face(self, image: Image.Image, policy: str | None = None) -> tuple[Image.Image, Detection]:
        """Detect, choose and crop the face of one photo; NoFaceError when there is none."""
        image = image.convert("RGB")
        detection = self.detect([image], policy)[0]
        if detection.face is None:
            raise NoFaceError(f"no face found in the {image.width}x{image.height} image")
        return self.crop(image, detection.face), detection


def _faces(boxes: np.ndarray, points: np.ndarray) -> tuple[Face, ...]:
    """One image's MTCNN output (boxes (k, 5) with the probability last, landmarks (k, 5, 2)) as Face records."""
    return tuple(
        Face(
            box=tuple(float(v) for v in box[:4]),
            prob=float(box[4]),
            landmarks=tuple((float(x), float(y)) for x, y in marks),
        )
        for box, marks in zip(boxes, points)
    )
