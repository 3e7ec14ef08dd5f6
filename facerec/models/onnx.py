"""Any ONNX face model as a frozen embedder: ``--model onnx:/path/model.onnx[?options]``.

For models users bring: ArcFace (insightface ``buffalo_l/w600k_r50.onnx``), OpenCV's
SFace, AdaFace or their own exports, run with onnxruntime (CUDA provider when present,
else CPU). Each setting is taken from, in order: the spec's options, the model's
metadata (``metadata_props`` keys ``size``, ``mean``, ``std``, ``bgr``, ``align``,
``preset``), the model itself (input shape; a graph that starts with Sub and Mul
normalises by itself: mean 0, std 1, as insightface's loader decides), a ``preset``.
What cannot be inferred is a one-line error naming the option to pass.

Options: ``preset`` (``arcface``: 112 px, (x - 127.5) / 127.5, RGB, ArcFace template;
``sface``: 112 px, raw 0-255 RGB, ArcFace template), ``size``, ``mean``, ``std``
(one value or three, comma-separated, on 0-255 pixels), ``bgr`` (1: the model wants
BGR), ``align`` (``landmarks``: MTCNN's five points on our crop, mapped to the ArcFace
112x112 template by a similarity transform; ``crop``: the crop resized as it is).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from facerec.errors import ModelError
from facerec.models.base import ONNX_PREFIX, EmbedderSpec
from facerec.models.frozen import FrozenEmbedder, option_flag

log = logging.getLogger(__name__)

NAME = "onnx"
DEFAULT_CROP_SIZE = 224  # our MTCNN crops, from which the model's input is cut
#: ArcFace's five-point template (left eye, right eye, nose, left and right mouth corner) at 112x112.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
#: Where MTCNN's five points lie in our crops (margin 0.3, eyes levelled), as fractions of the side
#: (median over 27 LFW crops): used when MTCNN finds no face in a crop.
CROP_LANDMARKS = np.array(
    [[0.400, 0.429], [0.623, 0.427], [0.521, 0.544], [0.414, 0.663], [0.613, 0.663]], dtype=np.float32
)
ALIGN_CHOICES = ("landmarks", "crop")
PRESETS: dict[str, dict[str, Any]] = {
    "arcface": {"size": 112, "mean": 127.5, "std": 127.5, "bgr": 0, "align": "landmarks"},
    "sface": {"size": 112, "mean": 0.0, "std": 1.0, "bgr": 0, "align": "landmarks"},
}
SETTINGS = ("size", "mean", "std", "bgr", "align")


class OnnxEmbedder(FrozenEmbedder):
    """Crop -> (five-point alignment) -> model input -> onnxruntime -> unit vectors."""

    def __init__(self, spec: EmbedderSpec, path: Path, session: Any, layout: str) -> None:
        super().__init__(spec, [path], source=f"{ONNX_PREFIX}{path}")
        self._session = session
        self._input = session.get_inputs()[0].name
        self._layout = layout  # "nchw" or "nhwc"
        options = spec.options
        self._mean = np.array(options["mean"], np.float32).reshape(1, 1, -1)
        self._std = np.array(options["std"], np.float32).reshape(1, 1, -1)
        self._detector = None

    def aligned(self, crop: np.ndarray) -> np.ndarray:
        """The model's input image (size x size RGB uint8) cut from one of our crops."""
        import cv2

        size = int(self.spec.options["size"])
        if self.spec.options["align"] == "crop":
            return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        matrix = similarity_transform(self._landmarks(crop), ARCFACE_TEMPLATE * (size / 112.0))
        return cv2.warpAffine(crop, matrix, (size, size), borderValue=0.0)

    def _landmarks(self, crop: np.ndarray) -> np.ndarray:
        from PIL import Image

        from facerec.faces.detect import DetectorConfig, FaceDetector

        if self._detector is None:
            self._detector = FaceDetector(DetectorConfig(image_size=crop.shape[0], policy="central", threads=1))
        face = self._detector.detect([Image.fromarray(crop)])[0].face
        if face is None or face.landmarks is None:
            return CROP_LANDMARKS * crop.shape[0]
        return np.array(face.landmarks, dtype=np.float32)

    def embed_arrays(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, self.embedding_dim), np.float32)
        images = np.stack([self.aligned(c) for c in crops]).astype(np.float32)
        if option_flag(self.spec.options["bgr"]):
            images = images[..., ::-1]
        images = (images - self._mean) / self._std
        if self._layout == "nchw":
            images = images.transpose(0, 3, 1, 2)
        out = self._session.run(None, {self._input: np.ascontiguousarray(images, dtype=np.float32)})[0]
        return np.asarray(out, np.float32).reshape(len(crops), -1)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, scale, shift) from ``source`` to ``target`` points.

    Umeyama's closed form, as insightface's ``norm_crop`` fits its template (skimage's
    ``SimilarityTransform.estimate``); OpenCV's estimator only offers robust fits that
    drop points, which leaves five-point alignments visibly off.
    """
    src, dst = np.asarray(source, np.float64), np.asarray(target, np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    u, singular, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rotation = u @ np.diag(sign) @ vt
    scale = (singular * sign).sum() / src_c.var(axis=0).sum()
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def _channels(value: Any, what: str) -> list[float]:
    if isinstance(value, (int, float)):
        value = [value]
    elif not isinstance(value, (list, tuple)):
        value = str(value).split(",")
    try:
        values = [float(v) for v in value]
    except ValueError as exc:
        raise ModelError(
            f"onnx option {what} must be a number or three comma-separated numbers, got {value!r}"
        ) from exc
    if len(values) not in (1, 3) or (what == "std" and any(v == 0 for v in values)):
        raise ModelError(f"onnx option {what} must be one non-zero value or three, got {value!r}")
    return values


def _normalises_itself(model: Any) -> bool:
    """insightface's rule: a graph whose first nodes subtract and multiply takes raw 0-255 pixels."""
    names = [node.op_type for node in model.graph.node[:8]]
    return "Sub" in names and "Mul" in names


def build_onnx(path: str | Path, device: Any = "cpu", input_size: int | None = None, **options: Any) -> OnnxEmbedder:
    """Open ``path`` with onnxruntime and settle every input setting (options > metadata > model > preset)."""
    import onnx
    import onnxruntime

    path = Path(str(path)).expanduser().resolve()
    if not path.is_file():
        raise ModelError(f"ONNX model {path} does not exist")
    unknown = sorted(set(options) - {*SETTINGS, "preset", "pretrained", "embedding_dim"})
    if unknown:
        raise ModelError(f"unknown onnx option(s) {', '.join(unknown)}; known: preset, {', '.join(SETTINGS)}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own types for a file that is not ONNX
        raise ModelError(f"cannot read {path} as an ONNX model: {str(exc).splitlines()[0]}") from exc
    metadata = {p.key: p.value for p in model.metadata_props if p.key in (*SETTINGS, "preset")}
    settings = {**metadata, **{k: v for k, v in options.items() if k in (*SETTINGS, "preset") and v is not None}}
    preset = settings.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise ModelError(f"unknown onnx preset {preset!r}; known: {', '.join(PRESETS)}")
        settings = {**PRESETS[preset], **settings}  # the lowest rank: options and metadata win

    providers = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers() and str(device).startswith("cuda"):
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = onnxruntime.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0]}") from exc
    shape = session.get_inputs()[0].shape
    if len(shape) != 4:
        raise ModelError(f"{path.name}: expected one image input (N, 3, H, W) or (N, H, W, 3), got shape {shape}")
    layout = "nhwc" if shape[3] == 3 and shape[1] != 3 else "nchw"
    spatial = shape[2:] if layout == "nchw" else shape[1:3]
    fixed = [d for d in spatial if isinstance(d, int)]
    if "size" not in settings:
        if len(fixed) != 2 or fixed[0] != fixed[1]:
            raise ModelError(f"{path.name} does not fix its input size ({shape}): pass ?size=112 (or ?preset=arcface)")
        settings["size"] = fixed[0]
    if ("mean" not in settings or "std" not in settings) and _normalises_itself(model):
        settings = {"mean": 0.0, "std": 1.0, **settings}
    missing = [k for k in ("mean", "std") if k not in settings]
    if missing:
        raise ModelError(
            f"cannot tell how {path.name} normalises its input: pass ?mean=127.5&std=127.5 (ArcFace) "
            "or ?preset=arcface|sface, or store mean/std in the model's metadata"
        )
    size = int(settings["size"])
    if fixed and fixed != [size, size]:
        raise ModelError(f"{path.name} takes {fixed[0]}x{fixed[-1]} px input, not size={size}")
    align = str(settings.get("align", "landmarks"))
    if align not in ALIGN_CHOICES:
        raise ModelError(f"onnx option align must be one of {', '.join(ALIGN_CHOICES)}, got {align!r}")
    resolved = {
        "size": size,
        "mean": _channels(settings["mean"], "mean"),
        "std": _channels(settings["std"], "std"),
        "bgr": int(option_flag(settings.get("bgr", 0))),
        "align": align,
    }
    dim = session.get_outputs()[0].shape[-1]
    if not isinstance(dim, int):
        probe = np.zeros([1, 3, size, size] if layout == "nchw" else [1, size, size, 3], np.float32)
        dim = int(np.prod(session.run(None, {session.get_inputs()[0].name: probe})[0].shape[1:]))
    crop = DEFAULT_CROP_SIZE if input_size is None else int(input_size)
    spec = EmbedderSpec(f"{NAME}:{path.stem}", crop, int(dim), str(path), resolved)
    log.info(
        "%s: %s input %dpx, mean %s, std %s, %s, align %s",
        path.name,
        providers[0],
        size,
        resolved["mean"],
        resolved["std"],
        "BGR" if resolved["bgr"] else "RGB",
        align,
    )
    return OnnxEmbedder(spec, path, session, layout)
