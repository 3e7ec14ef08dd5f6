"""``FaceRecognizer``: the facade the CLI uses: enroll, verify, identify, remove (+ list/show/stats).

It reads photos with ``load_image``, finds the face with MTCNN (policy ``central``
or ``largest``; a photo without a face is an error), embeds the crop, and talks to
a ``Gallery``. The model and the detector are built on first use, so listing or
removing identities needs neither.

Size: ``FaceRecognizer`` (~270 lines) is a facade: each public method is a few lines over
its collaborators (``models.resolve`` for the model, ``FaceDetector``, ``Gallery``,
``enrollment.FolderEnrollment``); what is left is the photo -> face -> vector path they share.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facerec.data.images import load_image
from facerec.errors import FacerecError, GalleryError, ModelError, NoFaceError
from facerec.faces.config import FACE_CHOICES
from facerec.faces.detect import DetectorConfig, FaceDetector
from facerec.files import file_sha256
from facerec.gallery.enrollment import FolderEnrollment, identity_folders
from facerec.gallery.gallery import (
    DB_FILE,
    EnrollOutcome,
    Gallery,
    ModelRecord,
    NewImage,
    check_name,
    default_gallery_dir,
)

log = logging.getLogger(__name__)

FACE_POLICIES = FACE_CHOICES
NO_THRESHOLD_HINT = "pass --threshold T or use a trained model directory (it stores a calibrated threshold)"


@dataclass(frozen=True)
class FaceReport:
    """Which face of a photo was used: how many were found, the policy, its box and probability."""

    image: str
    faces_found: int | None  # None: detection was skipped (the image is a crop already)
    policy: str
    box: tuple[float, float, float, float] | None = None
    prob: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Candidate:
    identity: str
    score: float


@dataclass(frozen=True)
class VerifyResult:
    same: bool
    score: float
    threshold: float
    faces: tuple[FaceReport, FaceReport]

    def to_dict(self) -> dict[str, Any]:
        return {
            "same": self.same,
            "score": self.score,
            "threshold": self.threshold,
            "faces": [f.to_dict() for f in self.faces],
        }


@dataclass(frozen=True)
class IdentifyResult:
    """``identity`` is None when the best score is under the threshold (open set: a stranger)."""

    identity: str | None
    score: float
    threshold: float
    candidates: tuple[Candidate, ...]
    face: FaceReport

    def to_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "score": self.score,
            "threshold": self.threshold,
            "candidates": [asdict(c) for c in self.candidates],
            "face": self.face.to_dict(),
        }


@dataclass(frozen=True)
class EnrollResult:
    """One identity's enrollment: images added (with their faces) and skipped (with a reason)."""

    identity: str
    created: bool
    added: tuple[FaceReport, ...] = ()
    skipped: tuple[dict[str, str], ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "created": self.created,
            "added": [f.to_dict() for f in self.added],
            "skipped": list(self.skipped),
        }


@dataclass(frozen=True)
class Prepared:
    """A photo turned into a gallery entry, or the error that stopped it."""

    path: Path
    image: NewImage | None = None
    report: FaceReport | None = None
    error: FacerecError | None = None


class FaceRecognizer:
    """Enroll, verify, identify and remove faces.

    ``model``: a registry name (with ``pretrained`` / ``input_size``), a trained model
    directory, an MLflow URI, ``onnx:PATH``, a ``ModelChoice``, a built ``Embedder``, or None:
    the model the gallery was enrolled with, else ``$FACEREC_MODEL``, else dlib-resnet
    (``facerec.models.resolve``). ``gallery``: a gallery directory (default: the per-user
    one). ``face``: which face of a photo with several (``central`` or ``largest``).
    ``detect=False`` treats inputs as face crops already. ``threshold`` overrides the
    model's calibrated one. ``batch_size``: photos per detection/embedding batch;
    ``threads``: torch threads while detecting (0: torch's default).
    """

    def __init__(
        self,
        model: Any = None,
        *,
        pretrained: str | None = None,
        input_size: int | None = None,
        device: str = "cpu",
        gallery: str | Path | None = None,
        face: str = "central",
        detect: bool = True,
        detector: FaceDetector | DetectorConfig | None = None,
        threshold: float | None = None,
        batch_size: int = 32,
        threads: int = 0,
    ) -> None:
        if face not in FACE_POLICIES:
            raise FacerecError(f"unknown face policy {face!r}; choose {' or '.join(FACE_POLICIES)}")
        self.gallery_path = Path(gallery).expanduser() if gallery else default_gallery_dir()
        self.face = face
        self.detect = detect
        self.threshold = threshold
        self.batch_size = batch_size
        self.threads = threads  # torch threads while detecting (0: torch's default)
        self.device = device
        self._model_args = {"pretrained": pretrained, "input_size": input_size}
        self._model = model
        self._embedder: Any = model if hasattr(model, "embed") else None  # a built Embedder
        self._detector_arg = detector
        self._detector: FaceDetector | None = None
        self._gallery: Gallery | None = None

    # ------------------------------------------------------------ parts
    @property
    def embedder(self):  # -> Embedder
        if self._embedder is None:
            self._embedder = self._model_choice().load(self.device, exported=True)  # inference only
        return self._embedder

    def _model_choice(self):  # -> ModelChoice
        """The model to use (``facerec.models.resolve``): the one named, else the gallery's, else the default."""
        from facerec.models.resolve import ModelChoice, resolve_model

        if isinstance(self._model, ModelChoice):
            return self._model
        if isinstance(self._model, str) or self._model_args["pretrained"] or self._model_args["input_size"]:
            return resolve_model(self._model, **self._model_args)
        record = self._open_gallery().model() if self._gallery_exists() else None
        if record is not None:
            log.info("using the gallery's model: %s", record.describe())
        return resolve_model(gallery_spec=record.spec if record is not None else None)

    def _model_spec(self) -> dict[str, Any]:
        """How the model is loaded, as recorded in a gallery (a path is made absolute)."""
        if self._model is None or isinstance(self._model, str) or not hasattr(self._model, "spec"):
            return self._model_choice().record()
        spec = self._model.spec
        if getattr(self._model, "frozen", False):  # its options are part of the model
            return {"model": self._model.spec_string(), "input_size": spec.input_size}
        return {"model": spec.name, "pretrained": spec.pretrained, "input_size": spec.input_size}

    def model_record(self) -> ModelRecord:
        embedder = self.embedder
        spec = self._model_spec()
        if "input_size" in spec:
            spec = {**spec, "input_size": embedder.input_size}
        return ModelRecord(embedder.fingerprint, embedder.embedding_dim, spec)

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            arg = self._detector_arg
            if isinstance(arg, FaceDetector):
                self._detector = arg
            else:
                config = arg or DetectorConfig(
                    image_size=self.embedder.input_size,
                    device=self.device,
                    batch_size=self.batch_size,
                    threads=self.threads,
                )
                self._detector = FaceDetector(config)
        return self._detector

    def _gallery_exists(self) -> bool:
        return (self.gallery_path / DB_FILE).is_file()

    def _open_gallery(self, create: bool = False) -> Gallery:
        if self._gallery is None:
            self._gallery = Gallery(self.gallery_path, create=create)
        return self._gallery

    def close(self) -> None:
        if self._gallery is not None:
            self._gallery.close()
            self._gallery = None

    def __enter__(self) -> FaceRecognizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ photos -> vectors
    def prepare(self, paths: Sequence[str | Path]) -> list[Prepared]:
        """Read, detect, crop and embed photos; a photo that fails carries its error instead."""
        paths = [Path(p) for p in paths]
        done: dict[int, Prepared] = {}
        loaded = []
        for i, path in enumerate(paths):
            try:
                loaded.append((i, load_image(path)))
            except FacerecError as exc:
                done[i] = Prepared(path, error=exc)
        crops = []  # (position, face crop, report)
        if not self.detect:
            crops = [(i, image, FaceReport(str(paths[i]), None, "none")) for i, image in loaded]
        elif loaded:
            for (i, image), detection in zip(loaded, self.detector.detect([im for _, im in loaded], self.face)):
                face = detection.face
                if face is None:
                    done[i] = Prepared(paths[i], error=NoFaceError(f"no face found in {paths[i]}"))
                    continue
                box = tuple(round(v, 1) for v in face.box)
                report = FaceReport(str(paths[i]), len(detection.faces), self.face, box, round(face.prob, 4))
                crops.append((i, self.detector.crop(image, face), report))
        if crops:
            vectors = self.embedder.embed_images([crop for _, crop, _ in crops], batch_size=self.batch_size)
            for (i, _, report), vector in zip(crops, vectors):
                entry = NewImage(str(paths[i].resolve()), file_sha256(paths[i]), vector, report.to_dict())
                done[i] = Prepared(paths[i], entry, report)
        return [done[i] for i in range(len(paths))]

    def embed(self, path: str | Path) -> tuple[np.ndarray, FaceReport]:
        """One photo's embedding and face report; errors raise."""
        prepared = self.prepare([path])[0]
        if prepared.error is not None:
            raise prepared.error
        return prepared.image.embedding, prepared.report

    def _threshold(self, threshold: float | None) -> float:
        for value in (threshold, self.threshold, getattr(self.embedder, "threshold", None)):
            if value is not None:
                return float(value)
        raise ModelError(f"model {self.embedder.name} has no calibrated threshold; {NO_THRESHOLD_HINT}")

    # ------------------------------------------------------------ verification
    def verify(self, image1: str | Path, image2: str | Path, threshold: float | None = None) -> VerifyResult:
        """Whether two photos show the same person: cosine score against the threshold."""
        threshold = self._threshold(threshold)
        first, second = self.prepare([image1, image2])  # one detection and one embedding batch
        for prepared in (first, second):
            if prepared.error is not None:
                raise prepared.error
        score = float(np.dot(first.image.embedding, second.image.embedding))
        return VerifyResult(score >= threshold, score, threshold, (first.report, second.report))

    # ------------------------------------------------------------ gallery
    def _checked_gallery(self) -> Gallery:
        """The existing gallery, after checking (before any embedding) that our model fits it."""
        gallery = self._open_gallery()
        gallery.check_model(self.embedder.fingerprint)
        return gallery

    def identify(self, image: str | Path, top_k: int = 5, threshold: float | None = None) -> IdentifyResult:
        """Who the photo shows: the best identity if its score reaches the threshold, else None."""
        if self._open_gallery().model() is None:  # say so before loading any model
            raise GalleryError(f"gallery {self.gallery_path} is empty: enroll someone first")
        gallery = self._checked_gallery()
        threshold = self._threshold(threshold)
        vector, face = self.embed(image)
        matches = gallery.search(vector[None], max(1, top_k))[0]
        candidates = tuple(Candidate(m.identity, m.score) for m in matches)
        best = candidates[0]
        identity = best.identity if best.score >= threshold else None
        return IdentifyResult(identity, best.score, threshold, candidates, face)

    def enroll(
        self, name: str, images: Sequence[str | Path], progress: Callable[[int], None] | None = None
    ) -> EnrollResult:
        """Enroll photos of one person, all or nothing: any bad photo is an error and nothing is stored."""
        name = check_name(name)
        if not images:
            raise FacerecError(f"no images given for {name!r}")
        if self._gallery_exists():
            self._checked_gallery()
        prepared: list[Prepared] = []
        for start in range(0, len(images), self.batch_size):
            chunk = self.prepare(images[start : start + self.batch_size])
            for item in chunk:
                if item.error is not None:
                    raise item.error
            prepared.extend(chunk)
            if progress:
                progress(len(chunk))
        return self._commit([(name, prepared)])[0]

    def enroll_folder(
        self,
        root: str | Path,
        skip_errors: bool = False,
        progress: Callable[[int], None] | None = None,
        limit: int | None = None,
    ) -> tuple[list[EnrollResult], list[dict[str, str]]]:
        """Enroll ``root/<identity>/*`` (one subfolder per identity); each identity is one transaction.

        Photos are detected and embedded in batches across identities (see ``enrollment``); an
        identity is committed as soon as all its photos are done. A bad photo stops the run
        (identities committed before it stay), unless ``skip_errors``: then it is skipped and
        reported. ``progress(n)`` is called per batch. Returns the per-identity results and the
        skipped photos.
        """
        folders = identity_folders(root, limit)
        if self._gallery_exists():
            self._checked_gallery()
        return FolderEnrollment(
            self.prepare,
            lambda name, items: self._commit([(name, items)], defer_index=True)[0],
            self._flush_index,
            self.batch_size,
            skip_errors,
            progress,
        ).run(folders)

    def _flush_index(self) -> None:
        if self._gallery is not None:
            self._gallery.flush_index()

    def _commit(self, batches: list[tuple[str, list[Prepared]]], defer_index: bool = False) -> list[EnrollResult]:
        outcomes: list[EnrollOutcome] = self._open_gallery(create=True).enroll(
            [(name, [item.image for item in items]) for name, items in batches], self.model_record(), defer_index
        )
        results = []
        for (_, items), outcome in zip(batches, outcomes):
            reasons = dict(outcome.skipped)
            results.append(
                EnrollResult(
                    outcome.identity,
                    outcome.created,
                    tuple(item.report for i, item in enumerate(items) if i not in reasons),
                    tuple({"image": str(items[i].path), "reason": reason} for i, reason in outcome.skipped),
                )
            )
        return results

    def remove(self, name: str) -> int:
        """Erase an identity (rows, embeddings, index vectors); returns the number of images removed."""
        return self._open_gallery().remove(name)

    def identities(self) -> list[dict[str, Any]]:
        return self._open_gallery().identities()

    def show(self, name: str) -> dict[str, Any]:
        return self._open_gallery().show(name)

    def stats(self) -> dict[str, Any]:
        return self._open_gallery().stats()

    def rebuild_index(self, kind: str | None = None, **params: Any) -> dict[str, Any]:
        return self._open_gallery().rebuild_index(kind, **params)
