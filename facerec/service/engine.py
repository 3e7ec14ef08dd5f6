"""The work behind the routes: one model per worker, decode+detect threads, micro-batched embedding,
and one gallery thread.

* The model (and MTCNN) is loaded once, at start-up, through ``FaceRecognizer``: the
  same resolution as the CLI (``--model``, else the gallery's own model).
* Decoding and cropping run in a thread pool; detection (MTCNN) and embedding each
  in one thread fed by a ``MicroBatcher``, so that photos of requests arriving
  together share one model call; the event loop only awaits.
* The gallery (SQLite + FAISS) lives in a single thread of its own (an SQLite
  connection belongs to its thread); across workers its file lock and generation
  counter keep every worker's view consistent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from facerec.errors import GalleryError, ModelError, NoFaceError
from facerec.faces.detect import Detection
from facerec.gallery.gallery import Gallery, ModelRecord, NewImage, check_name
from facerec.gallery.recognizer import (
    NO_THRESHOLD_HINT,
    Candidate,
    EnrollResult,
    FaceRecognizer,
    FaceReport,
    IdentifyResult,
    VerifyResult,
)
from facerec.service.batching import MicroBatcher
from facerec.service.errors import ApiError, IdentityNotFound
from facerec.service.metrics import Metrics
from facerec.service.settings import ServiceSettings
from facerec.service.uploads import Upload, decode

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Face:
    """One upload's face crop and the report the CLI prints for it."""

    crop: Image.Image
    report: FaceReport


class Engine:
    def __init__(self, settings: ServiceSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.recognizer = FaceRecognizer(
            settings.model,
            pretrained=settings.pretrained,
            input_size=settings.input_size,
            device=settings.device,
            gallery=settings.gallery_path,
            face=settings.face,
            detect=settings.detect,
            threshold=settings.threshold,
        )
        self._decode_pool = ThreadPoolExecutor(max(1, settings.detect_threads), thread_name_prefix="facerec-decode")
        self._detect_pool = ThreadPoolExecutor(1, thread_name_prefix="facerec-detect")
        self._embed_pool = ThreadPoolExecutor(1, thread_name_prefix="facerec-embed")
        self._gallery_pool = ThreadPoolExecutor(1, thread_name_prefix="facerec-gallery")
        wait = settings.batch_wait_ms / 1000
        self.detections = MicroBatcher(
            self._detect, self._detect_pool, settings.max_batch, wait, metrics and metrics.observer("detect")
        )
        self.embeddings = MicroBatcher(
            self._embed, self._embed_pool, settings.max_batch, wait, metrics and metrics.observer("embed")
        )
        self.model: ModelRecord | None = None
        self._gallery: Gallery | None = None

    # ------------------------------------------------------------ life cycle
    def load(self) -> None:
        """Blocking start-up: model, detector, a warm-up embedding, the gallery."""
        if self.settings.torch_threads:
            import torch

            torch.set_num_threads(self.settings.torch_threads)
        start = time.perf_counter()
        self.model = self.recognizer.model_record()  # loads the model (from the gallery's record if none given)
        self.recognizer.close()  # its gallery handle belonged to this thread; ours lives in the gallery thread
        embedder = self.recognizer.embedder
        blank = Image.new("RGB", (embedder.input_size, embedder.input_size))
        if self.settings.detect:  # build MTCNN and run it once now, not on the first request
            self._detect_pool.submit(self._detect, [blank]).result()
        embedder.start_workers()  # a model's helper processes (dlib's descriptor workers), before any request
        self._embed_pool.submit(self._embed, [blank]).result()  # warm-up in the thread that embeds
        self._gallery_pool.submit(self._open_gallery).result()
        log.info(
            "model %s ready in %.1f s; gallery %s",
            self.model.fingerprint,
            time.perf_counter() - start,
            self.settings.gallery_path,
        )

    def close(self) -> None:
        if self._gallery is not None:
            self._gallery_pool.submit(self._gallery.close).result()
        for pool in (self._decode_pool, self._detect_pool, self._embed_pool, self._gallery_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        if self.recognizer._embedder is not None:  # a loaded model's helper processes (none loaded: none to load)
            self.recognizer._embedder.stop_workers()

    # ------------------------------------------------------------ threads
    def _embed(self, crops: list[Image.Image]) -> np.ndarray:
        return self.recognizer.embedder.embed_images(crops, batch_size=max(len(crops), 1))

    def _open_gallery(self) -> None:
        self._gallery = Gallery(self.settings.gallery_path, create=True)
        self._gallery.check_model(self.model.fingerprint)  # a server for another model's gallery fails to start

    async def _in_gallery(self, fn: Callable[[Gallery], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._gallery_pool, fn, self._gallery)

    def _detect(self, images: list[Image.Image]) -> list[Detection]:
        return self.recognizer.detector.detect(images, self.settings.face)

    async def start(self) -> None:
        """Start the batching loops (on the running event loop)."""
        self.detections.start()
        self.embeddings.start()

    async def stop(self) -> None:
        await self.detections.stop()
        await self.embeddings.stop()

    async def _faces(self, uploads: Sequence[Upload]) -> list[Face]:
        """Decode uploads (thread pool), detect their faces (one batched MTCNN call) and crop them."""
        loop = asyncio.get_running_loop()
        limit = self.settings.max_pixels
        images = await asyncio.gather(*(loop.run_in_executor(self._decode_pool, decode, u, limit) for u in uploads))
        if not self.settings.detect:
            return [Face(image, FaceReport(u.filename, None, "none")) for u, image in zip(uploads, images)]
        detections = await self.detections.run(images)
        for upload, detection in zip(uploads, detections):
            if detection.face is None:
                raise NoFaceError(f"no face found in {upload.filename}")
        crop = self.recognizer.detector.crop
        crops = await asyncio.gather(
            *(loop.run_in_executor(self._decode_pool, crop, im, d.face) for im, d in zip(images, detections))
        )
        policy = self.settings.face
        return [
            Face(
                cropped,
                FaceReport(
                    u.filename, len(d.faces), policy, tuple(round(v, 1) for v in d.face.box), round(d.face.prob, 4)
                ),
            )
            for u, d, cropped in zip(uploads, detections, crops)
        ]

    def threshold(self, requested: float | None) -> float:
        for value in (requested, self.settings.threshold, getattr(self.recognizer.embedder, "threshold", None)):
            if value is not None:
                return float(value)
        raise ModelError(
            f"model {self.model.fingerprint} has no calibrated threshold; send a 'threshold' form field "
            f"or start the server with --threshold ({NO_THRESHOLD_HINT})"
        )

    # ------------------------------------------------------------ requests
    async def verify(self, first: Upload, second: Upload, threshold: float | None = None) -> dict[str, Any]:
        threshold = self.threshold(threshold)
        faces = await self._faces([first, second])
        v1, v2 = await self.embeddings.run([f.crop for f in faces])
        score = float(np.dot(v1, v2))
        result = VerifyResult(score >= threshold, score, threshold, (faces[0].report, faces[1].report))
        return {**result.to_dict(), "model": self.model.fingerprint}

    async def identify(self, upload: Upload, top_k: int = 5, threshold: float | None = None) -> dict[str, Any]:
        def ready(gallery: Gallery) -> None:  # say so before any work on the image
            if gallery.model() is None:
                raise GalleryError("the gallery is empty: enroll someone first")
            gallery.check_model(self.model.fingerprint)

        await self._in_gallery(ready)
        threshold = self.threshold(threshold)
        (face,) = await self._faces([upload])
        (vector,) = await self.embeddings.run([face.crop])
        matches = await self._in_gallery(lambda g: g.search(vector[None], max(1, top_k))[0])
        candidates = tuple(Candidate(m.identity, m.score) for m in matches)
        best = candidates[0]
        identity = best.identity if best.score >= threshold else None
        return IdentifyResult(identity, best.score, threshold, candidates, face.report).to_dict()

    async def enroll(self, name: str, uploads: Sequence[Upload]) -> dict[str, Any]:
        """All or nothing, like ``facerec enroll NAME IMAGE...``: any bad photo fails the request."""
        start = time.perf_counter()
        name = valid_name(name)
        await self._in_gallery(lambda g: g.check_model(self.model.fingerprint))  # before any embedding
        faces = await self._faces(uploads)
        vectors = await self.embeddings.run([f.crop for f in faces])
        images = [
            NewImage(f"upload:{u.filename}", u.sha256, vector, face.report.to_dict())
            for u, face, vector in zip(uploads, faces, vectors)
        ]
        (outcome,) = await self._in_gallery(lambda g: g.enroll([(name, images)], self.model))
        reasons = dict(outcome.skipped)
        result = EnrollResult(
            outcome.identity,
            outcome.created,
            tuple(face.report for i, face in enumerate(faces) if i not in reasons),
            tuple({"image": uploads[i].filename, "reason": reason} for i, reason in outcome.skipped),
        )
        seconds = time.perf_counter() - start
        return {
            "gallery": str(self.settings.gallery_path),
            "model": self.model.fingerprint,
            "face_policy": self.settings.face if self.settings.detect else "none",
            "identities": [result.to_dict()],
            "added": len(result.added),
            "skipped": len(result.skipped),
            "failed": [],
            "seconds": round(seconds, 3),
            "images_per_second": round(len(uploads) / seconds, 2) if seconds else None,
        }

    async def identities(self) -> dict[str, Any]:
        rows = await self._in_gallery(lambda g: g.identities())
        return {"gallery": str(self.settings.gallery_path), "identities": rows}

    async def show(self, name: str) -> dict[str, Any]:
        name = valid_name(name)
        return await self._in_gallery(lambda g: shown(g, name))

    async def remove(self, name: str) -> dict[str, Any]:
        name = valid_name(name)

        def remove(gallery: Gallery) -> int:
            shown(gallery, name)  # 404 for a name that is not there
            return gallery.remove(name)

        return {"removed": name, "images": await self._in_gallery(remove)}


def valid_name(name: str) -> str:
    try:
        return check_name(name)
    except GalleryError as exc:
        raise ApiError(400, str(exc), "InvalidName") from exc


def shown(gallery: Gallery, name: str) -> dict[str, Any]:
    try:
        return gallery.show(name)
    except GalleryError as exc:
        raise IdentityNotFound(name) from exc
