"""Trained model directories answered by onnxruntime: how inference commands start fast.

Why: rebuilding a trained CLIP ViT-B/32 for inference imports open_clip, which imports
torchvision, whose ``ops`` import ``torch._dynamo``: 2-4 s of every cold ``facerec
verify`` before any work (issue 12's target for a CLIP directory is 4 s in all). The
first time a model directory is used by the recognizer (CLI ``enroll``/``verify``/
``identify``/``gallery``, ``facerec serve``, ``FaceRecognizer``), its network (crop in
[0, 1] -> normalised, embedded, unit vector) is exported with ``torch.onnx.export`` to
``$FACEREC_CACHE/exports/<fingerprint>.onnx``; later processes run that file with
onnxruntime and never build the torch model. The copy is named by the directory's
weight fingerprint (vouched for by ``weights.pt``'s size and mtime), so retrained
weights get a new export, and the embedder keeps the directory's fingerprint and
threshold: galleries and thresholds hold for both paths. Vectors agree with torch's to
~1e-5 (tests/test_exported.py). Training, ``calibrate``, ``evaluate`` and ``embed``
load the torch model as before; any failure to export or to load the copy falls back to
torch with a warning. ``FACEREC_EXPORTS=0`` turns the fast path off.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facerec.files import atomic_path, cache_dir
from facerec.models import fingerprint as fingerprints
from facerec.models.base import WEIGHTS_FILE, Embedder, EmbedderSpec, load_model_dir, read_meta, spec_from_meta
from facerec.models.frozen import FrozenEmbedder

log = logging.getLogger(__name__)

ENV = "FACEREC_EXPORTS"
OPSET = 17


def export_path(fingerprint: str) -> Path:
    return cache_dir("exports") / (fingerprint.replace("/", "_") + ".onnx")


def export(embedder: Embedder, path: Path) -> None:
    """Write ``embedder``'s inference network to ``path`` (ONNX, batch size free)."""
    dummy = torch.zeros(1, 3, embedder.input_size, embedder.input_size)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's inference fast path is one fused op that ONNX has no export for
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with atomic_path(path, durable=False) as tmp, torch.no_grad():
            torch.onnx.export(
                embedder.eval(),  # forward: crops in [0, 1] -> normalised, embedded, unit vectors
                (dummy,),
                str(tmp),
                input_names=["crops"],
                output_names=["vectors"],
                dynamic_axes={"crops": {0: "batch"}, "vectors": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,  # the TorchScript exporter: needs no onnxscript
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


class ExportedEmbedder(FrozenEmbedder):
    """A trained model directory's network run by onnxruntime; same spec, fingerprint and threshold."""

    def __init__(self, spec: EmbedderSpec, directory: Path, onnx: Path, session, fingerprint: str) -> None:
        super().__init__(spec, [onnx], source=str(directory))
        self._session = session
        self._fingerprint = fingerprint

    @property
    def input_align(self) -> str | None:
        return self.spec.options.get("align")  # the trained directory's: its network expects those pixels

    def spec_string(self) -> str:
        return self.source  # the directory: its options belong to its builder, not to this copy

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        """Batch (N, 3, S, S) in [0, 1] (``preprocess`` output) -> float32 (N, D) unit vectors."""
        crops = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        (vectors,) = self._session.run(None, {"crops": crops})
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def embed_arrays(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, self.embedding_dim), np.float32)
        return self.embed(torch.stack([self.preprocess(Image.fromarray(c)) for c in crops]))  # unit rows


def load_exported(directory: str | Path) -> Embedder | None:
    """A trained model directory for inference: its ONNX copy when there is one (made now if not).

    None when the fast path does not apply (a frozen model's directory, weights that no
    longer match ``model.json``, ``FACEREC_EXPORTS=0``): the caller loads the torch model.
    """
    directory = Path(directory)
    if os.environ.get(ENV, "1") == "0":
        return None
    try:
        meta = read_meta(directory)
    except (OSError, ValueError):
        return None  # load_model_dir gives the one-line error
    stamp = fingerprints.file_stamp(directory / WEIGHTS_FILE)
    fingerprint = None if meta.get("frozen") else fingerprints.stored_dir_fingerprint(meta, stamp, stamp)
    if fingerprint is None:
        return None
    path = export_path(fingerprint)
    if not path.is_file():
        embedder = load_model_dir(directory)
        try:
            log.info("writing an ONNX copy of %s for fast starts (once): %s", directory, path)
            export(embedder, path)
        except Exception as exc:  # an exporter failure must not stop inference
            log.warning("could not export %s to ONNX (%s); it loads with torch each time", directory, exc)
        return embedder
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # a damaged copy: torch, and the copy is made again
        log.warning("ignoring the ONNX copy %s (%s)", path, str(exc).splitlines()[0])
        path.unlink(missing_ok=True)
        return None
    embedder = ExportedEmbedder(spec_from_meta(meta), directory, path, session, fingerprint)
    embedder.threshold = meta.get("threshold")
    return embedder
