"""The embedder protocol, its registry, and the trained-model directory format.

An embedder is an ``nn.Module`` (backbone + optional projection head) that maps
a batch of face crops to L2-normalised float32 vectors. Backbones register a
builder under a name (``@register_embedder("resnet18")``); ``create_embedder``
builds one by name and ``load_model`` resolves any ``--model SPEC``: a registry
name, a trained model directory or an MLflow ``models:/`` / ``runs:/`` URI.

Size (~430 lines): the protocol, the registry and the model-directory format are one
contract (a directory is read back through the registry); weight files and downloads are
in ``weights``, fingerprints in ``fingerprint``, the model choice in ``resolve``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from facerec.errors import ModelError
from facerec.faces.chips import NO_ALIGN, check_align, input_image
from facerec.files import atomic_path, atomic_write
from facerec.models import fingerprint as fingerprints
from facerec.models.skip_init import with_weights

log = logging.getLogger(__name__)

NO_WEIGHTS = "none"
WEIGHTS_FILE = "weights.pt"
MODEL_FILE = "model.json"
CONFIG_FILE = "config.yaml"
#: Head kinds: ``identity`` keeps the backbone output, ``linear`` projects it (trainable).
HEADS = ("identity", "linear")
#: ``--model onnx:/path/model.onnx[?options]``: any ONNX face model through onnxruntime.
ONNX_PREFIX = "onnx:"


@dataclass(frozen=True)
class EmbedderSpec:
    """Everything needed to rebuild an embedder's architecture (weights aside)."""

    name: str
    input_size: int
    embedding_dim: int
    pretrained: str = NO_WEIGHTS
    options: dict[str, Any] = field(default_factory=dict)


class Embedder(nn.Module):
    """Backbone + head -> unit vectors. ``forward`` is for training, ``embed`` for inference."""

    def __init__(
        self,
        spec: EmbedderSpec,
        backbone: nn.Module,
        head: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        self.head = head
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.threshold: float | None = None  # calibrated verification threshold, if any
        self._fingerprint: str | None = None

    # ---- identity
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    @property
    def embedding_dim(self) -> int:
        return self.spec.embedding_dim

    @property
    def device(self) -> torch.device:
        """Where the model runs: its first parameter's or buffer's device (CPU for a model without tensors)."""
        tensor = next(itertools.chain(self.parameters(), self.buffers()), None)
        return torch.device("cpu") if tensor is None else tensor.device

    @property
    def fingerprint(self) -> str:
        """``name/size/dim/weights-hash``: changes whenever the outputs would change."""
        if self._fingerprint is None:  # cached by load_model_dir / create_embedder (see models/fingerprint.py)
            self._fingerprint = fingerprints.hash_state(self)
        return self._fingerprint

    def invalidate_fingerprint(self) -> None:
        """Call after changing weights (training, loading)."""
        self._fingerprint = None

    # ---- structure (partial fine-tuning)
    def blocks(self) -> list[nn.Module]:
        """Backbone blocks in order, input -> output (train "the last N blocks").

        Blocks are disjoint and together hold every backbone parameter; the head
        (``self.head``) is not among them. Default: the backbone's children that
        hold parameters; backbone families override it.
        """
        return [m for m in self.backbone.children() if any(True for _ in m.parameters())]

    # ---- computation
    @property
    def input_align(self) -> str | None:
        """How ``preprocess`` aligns a crop before resizing it: the ``align`` option (``dlib-chip``) or None."""
        return self.spec.options.get("align")

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """PIL crop -> float tensor (3, S, S) in [0, 1], aligned as ``input_align`` says (see
        ``facerec.faces.chips``); normalisation happens in ``forward``."""
        image = input_image(image, self.input_size, self.input_align)
        array = np.asarray(image, dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features of a normalised batch."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Batch (N, 3, S, S) in [0, 1] -> unit vectors (N, D), differentiable."""
        x = (x - self.mean) / self.std
        # eps = smallest normal float: scale-free, e.g. random-init EfficientNet features are ~1e-13 in eval mode
        return F.normalize(self.head(self.features(x)).float(), dim=-1, eps=torch.finfo(torch.float32).tiny)

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        """Inference: batch in [0, 1] -> float32 array (N, D), L2-normalised."""
        was_training = self.training
        self.eval()
        with torch.inference_mode():
            out = self(batch.to(self.device)).float().cpu().numpy()
        self.train(was_training)
        return np.ascontiguousarray(out, dtype=np.float32)

    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """Convenience: PIL crops -> (N, D) float32."""
        chunks = [
            self.embed(torch.stack([self.preprocess(im) for im in images[i : i + batch_size]]))
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.embedding_dim), np.float32)

    def start_workers(self) -> None:
        """Start any helper processes now (a server's start-up) rather than at the first big batch (none here)."""

    def stop_workers(self) -> None:
        """Stop the helper processes ``start_workers`` or a big batch started (none here)."""


# ------------------------------------------------------------ building blocks
def module_group(**parts: nn.Module | nn.Parameter) -> nn.Module:
    """One module presenting existing submodules/parameters as a block.

    Made on demand (by ``blocks()``) and never attached to the embedder, so no
    parameter is registered twice in its state dict.
    """
    group = nn.Module()
    for name, part in parts.items():
        setattr(group, name, part)
    return group


def make_head(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    """``identity`` (needs ``out_dim == in_dim``) or a bias-free ``linear`` projection.

    No bias and no BatchNorm: outputs are L2-normalised, so a random bias-free
    projection keeps cosine geometry (Johnson-Lindenstrauss) before training,
    and the head behaves the same in train and eval mode and at batch size 1.
    """
    if kind == "identity":
        if out_dim != in_dim:
            raise ModelError(f"head=identity keeps the backbone's {in_dim}-d output; use head=linear for {out_dim}-d")
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(in_dim, out_dim, bias=False)
    raise ModelError(f"unknown head {kind!r}; expected one of {', '.join(HEADS)}")


def error_reason(exc: BaseException) -> str:
    """A one-line reason for ``exc`` (its first line, plus the next one when the first ends in ':')."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Reproducible random init: ``torch.manual_seed(seed)`` in a forked RNG (global state untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# --------------------------------------------------------------------- registry
Builder = Callable[..., Embedder]
_REGISTRY: dict[str, Builder] = {}
_FROZEN: set[str] = set()


def register_embedder(name: str, frozen: bool = False) -> Callable[[Builder], Builder]:
    """Decorator: ``@register_embedder("resnet18") def build(pretrained, input_size, ...) -> Embedder``.

    ``frozen``: a pretrained model used as is (no random init, no training; see ``frozen.py``).
    """

    def wrap(builder: Builder) -> Builder:
        _REGISTRY[name] = builder
        if frozen:
            _FROZEN.add(name)
        return builder

    return wrap


def available_embedders(trainable: bool | None = None) -> list[str]:
    """Registered names; ``trainable=True``/``False``: only the trainable backbones / only the frozen models."""
    _import_backbones()
    return sorted(n for n in _REGISTRY if trainable is None or (n not in _FROZEN) == trainable)


def is_frozen(name: str) -> bool:
    """Whether registry name ``name`` is a frozen pretrained model."""
    _import_backbones()
    return name in _FROZEN


def create_embedder(
    name: str,
    pretrained: str | None = NO_WEIGHTS,
    input_size: int | None = None,
    embedding_dim: int | None = None,
    **options: Any,
) -> Embedder:
    """Build a registered embedder. ``pretrained``: a weights tag, a local file, or ``none``.

    ``none`` means random initialisation; it is always logged, never a fallback.
    """
    builder = _builder(name)  # an unknown name fails before the warning below
    check_options(name, builder, options)
    if name in _FROZEN:  # its own weights; the builder refuses any other
        return builder(pretrained=pretrained, input_size=input_size, embedding_dim=embedding_dim, **options)
    pretrained = (pretrained or NO_WEIGHTS).strip()
    if pretrained.lower() == NO_WEIGHTS:
        pretrained = NO_WEIGHTS
        log.warning("%s: no pretrained weights requested (pretrained=none): random initialisation", name)
    embedder = build_trainable(builder, pretrained, input_size, embedding_dim, options)
    if isinstance(embedder, Embedder):  # fixed weights (a tag or a file): fingerprint from the cache
        fingerprints.attach(embedder, fingerprints.registry_key(embedder.spec, builder.__module__))
    return embedder


def build_trainable(
    builder: Builder, pretrained: str, input_size: int | None, embedding_dim: int | None, options: dict[str, Any]
) -> Embedder:
    """A trainable backbone from its builder; ``align`` is every trainable model's option, kept in its
    spec (and so in its directory) when set, never passed to the builder."""
    options = dict(options)
    align = check_align(options.pop("align", None))
    embedder = builder(pretrained=pretrained, input_size=input_size, embedding_dim=embedding_dim, **options)
    if align != NO_ALIGN:
        embedder.spec = replace(embedder.spec, options={**embedder.spec.options, "align": align})
    return embedder


def check_options(name: str, builder: Builder, options: dict[str, Any]) -> None:
    """A one-line ModelError naming the options ``name`` does not take (a typo in ``?key=value``)."""
    import inspect

    accepted = [
        p for p in inspect.signature(builder).parameters if p not in ("pretrained", "input_size", "embedding_dim")
    ]
    if name not in _FROZEN:
        accepted.append("align")  # every trainable model's, see build_trainable
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ModelError(f"{name} has no option {', '.join(unknown)}; its options: {', '.join(sorted(accepted))}")


def _builder(name: str) -> Builder:
    """The registered builder of ``name``; ModelError when there is none."""
    _import_backbones()
    if name not in _REGISTRY:
        raise ModelError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def _import_backbones() -> None:
    # Importing the modules registers their builders.
    from facerec.models import clip, dlib_resnet, torchvision_models  # noqa: F401


# ------------------------------------------------------------- model directory
def save_model_dir(
    embedder: Embedder,
    path: str | Path,
    *,
    threshold: float | None = None,
    config: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write a trained model directory: ``weights.pt``, ``model.json`` and ``config.yaml``."""
    import yaml

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    embedder.invalidate_fingerprint()
    stamp = None
    if not getattr(embedder, "frozen", False):  # a frozen model's weights come with its package
        state = {k: v.detach().cpu() for k, v in embedder.state_dict().items()}
        with atomic_path(path / WEIGHTS_FILE) as tmp:
            torch.save(state, tmp)
        stamp = fingerprints.file_stamp(path / WEIGHTS_FILE)  # vouches for the fingerprint below
    meta = {
        "name": embedder.name,
        "input_size": embedder.input_size,
        "embedding_dim": embedder.embedding_dim,
        "start_weights": embedder.spec.pretrained,
        "options": embedder.spec.options,
        "fingerprint": embedder.fingerprint,
        "weights_stamp": stamp,
        "threshold": threshold,
        **({"frozen": True, "source": embedder.source} if getattr(embedder, "frozen", False) else {}),
        **(info or {}),
    }
    with atomic_write(path / MODEL_FILE) as f:
        f.write(json.dumps(meta, indent=2, default=str))
    (path / CONFIG_FILE).write_text(yaml.safe_dump(config or {}, sort_keys=False), encoding="utf-8")
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    """A model directory's ``model.json``; OSError or ValueError when it is missing or damaged."""
    return json.loads((Path(path) / MODEL_FILE).read_text(encoding="utf-8"))


def is_model_dir(path: str | Path) -> bool:
    return (Path(path) / MODEL_FILE).is_file()


def spec_from_meta(meta: dict[str, Any]) -> EmbedderSpec:
    """The spec a model directory's ``model.json`` records (its start weights, ``none`` if unrecorded)."""
    return EmbedderSpec(
        meta["name"],
        meta["input_size"],
        meta["embedding_dim"],
        meta.get("start_weights", NO_WEIGHTS),
        meta.get("options", {}),
    )


def load_model_dir(path: str | Path, device: str | torch.device = "cpu") -> Embedder:
    """Rebuild an embedder from a model directory (weights read with ``weights_only=True``)."""
    path = Path(path)
    try:
        meta = read_meta(path)
        if meta.get("frozen") or is_frozen(meta["name"]):
            return _load_frozen_dir(path, meta, device)
        builder = _builder(meta["name"])
        before = fingerprints.file_stamp(path / WEIGHTS_FILE)
        state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        after = fingerprints.file_stamp(path / WEIGHTS_FILE)
        # Architecture only (no random-init warning): the trained weights replace every parameter.
        embedder = with_weights(
            lambda: build_trainable(
                builder, NO_WEIGHTS, meta["input_size"], meta["embedding_dim"], meta.get("options", {})
            ),
            state,
        )
    except ModelError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot load model directory {path}: {str(exc).splitlines()[0]}") from exc
    embedder.spec = spec_from_meta(meta)
    embedder.invalidate_fingerprint()
    stored = fingerprints.stored_dir_fingerprint(meta, before, after)
    if stored is not None:
        embedder._fingerprint = stored
    elif before == after:  # no stamp (older directory) or a changed file: hash once, cache per user
        fingerprints.attach(embedder, fingerprints.dir_key(meta, path / WEIGHTS_FILE, after))
    embedder.threshold = meta.get("threshold")
    return embedder.to(device).eval()


def _load_frozen_dir(path: Path, meta: dict[str, Any], device: str | torch.device) -> Embedder:
    """A frozen model's directory: where the model comes from, its options and calibrated threshold."""
    options = {**meta.get("options", {}), "input_size": meta["input_size"]}
    embedder = load_model(meta.get("source") or meta["name"], device=device, **options)
    if meta.get("fingerprint") not in (None, embedder.fingerprint):
        raise ModelError(
            f"model directory {path} was made with {meta['fingerprint']}, but its model now gives "
            f"{embedder.fingerprint}: calibrate it again (facerec calibrate)"
        )
    embedder.threshold = meta.get("threshold")
    return embedder


def _download_mlflow_model(uri: str) -> Path:
    try:
        import mlflow

        from facerec.tracking.runs import configure_tracking

        configure_tracking()
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except Exception as exc:  # mlflow raises many types for a bad URI
        raise ModelError(f"cannot fetch {uri} from MLflow: {str(exc).splitlines()[0]}") from exc
    from facerec.tracking.pyfunc import model_dir_in

    inner = model_dir_in(local)  # a facerec pyfunc model: the model directory is its artifact
    if inner is not None:
        return inner
    found = [local] if is_model_dir(local) else [p.parent for p in sorted(local.rglob(MODEL_FILE))]
    if not found:
        raise ModelError(f"{uri} holds no facerec model directory ({MODEL_FILE} not found)")
    return found[0]


def load_model(
    spec: str,
    pretrained: str | None = NO_WEIGHTS,
    device: str | torch.device = "cpu",
    **options: Any,
) -> Embedder:
    """Resolve ``--model SPEC``: a model directory, an MLflow URI, ``onnx:PATH``, or a registry name.

    Registry names and ``onnx:`` paths take options as a query string:
    ``dlib-resnet?flip=0``, ``onnx:/models/w600k_r50.onnx?size=112``; keyword ``options`` win.
    """
    if spec.startswith(("models:/", "runs:/")):
        return load_model_dir(_download_mlflow_model(spec), device)
    if spec.startswith(ONNX_PREFIX):
        from facerec.models.onnx import build_onnx

        path, query = split_options(spec[len(ONNX_PREFIX) :])
        return build_onnx(path, device=device, **{**query, **options}).eval()
    if is_model_dir(spec):
        return load_model_dir(spec, device)
    name, query = split_options(spec)
    if not query and (Path(spec).exists() or "/" in spec):
        raise ModelError(f"{spec} is not a facerec model directory ({MODEL_FILE} missing)")
    return create_embedder(name, pretrained=pretrained, **{**query, **options}).to(device).eval()


def split_options(spec: str) -> tuple[str, dict[str, Any]]:
    """``name?a=1&b=x`` -> (``name``, {a: 1, b: "x"}); numbers become int/float."""
    from urllib.parse import parse_qsl

    base, _, query = spec.partition("?")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise ModelError(f"bad options {query!r} in {spec!r}: expected key=value&key=value") from exc
    return base, {key: _number(value) for key, value in pairs}


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
