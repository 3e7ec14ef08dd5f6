"""Which model a command uses: the one resolver behind the CLI, ``FaceRecognizer`` and galleries.

Order: what the caller names (``--model`` / ``--pretrained`` / ``--input-size``), else the
model a gallery was enrolled with (gallery commands), else ``$FACEREC_MODEL`` /
``$FACEREC_PRETRAINED``, else ``dlib-resnet``: a real face model that works offline, with a
calibrated threshold. ``--pretrained`` left unset means the model's usual weights
(``openai`` for CLIP, the shipped files for frozen models, random init otherwise).

Light on purpose (no torch at import): the CLI builds its parsers from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL_ENV = "FACEREC_MODEL"
PRETRAINED_ENV = "FACEREC_PRETRAINED"
DEFAULT_MODEL = "dlib-resnet"
#: Weights used when a registry model is named without ``--pretrained``.
DEFAULT_WEIGHTS = {"clip-vit-b-32": "openai"}
URI_PREFIXES = ("models:/", "runs:/")


@dataclass(frozen=True)
class ModelChoice:
    """A model to load: a spec (registry name[?options], model directory, MLflow URI, onnx:PATH)."""

    model: str
    pretrained: str | None = None
    input_size: int | None = None

    def load(self, device: Any = "cpu", exported: bool = False):  # -> Embedder
        """The embedder; ``exported``: for inference only, a trained directory's ONNX copy (``models.exported``)."""
        from facerec.models import load_model  # through the package: tests may wrap it
        from facerec.models.base import is_model_dir

        options = {"input_size": self.input_size} if self.input_size else {}
        if exported and not options and str(device) == "cpu" and is_model_dir(self.model):
            from facerec.models.exported import load_exported  # trained directories only

            fast = load_exported(self.model)
            if fast is not None:
                return fast
        return load_model(self.model, pretrained=self.pretrained, device=device, **options)

    def record(self) -> dict[str, Any]:
        """How a gallery stores it: a directory as an absolute path; a URI or onnx model as is."""
        from facerec.models.base import ONNX_PREFIX, is_model_dir

        if self.model.startswith(URI_PREFIXES):
            return {"model": self.model}
        if self.model.startswith(ONNX_PREFIX):
            path, sep, query = self.model[len(ONNX_PREFIX) :].partition("?")
            spec = f"{ONNX_PREFIX}{Path(path).expanduser().resolve()}{sep}{query}"
            return {"model": spec, **({"input_size": self.input_size} if self.input_size else {})}
        if is_model_dir(self.model):
            return {"model": str(Path(self.model).resolve())}
        return {"model": self.model, "pretrained": self.pretrained, "input_size": self.input_size}

    def describe(self) -> str:
        flags = [f"--model {self.model}"]
        flags += [f"--pretrained {self.pretrained}"] if self.pretrained else []
        flags += [f"--input-size {self.input_size}"] if self.input_size else []
        return " ".join(flags)


def default_weights(model: str) -> str | None:
    """``$FACEREC_PRETRAINED``, else the usual weights of a registry name (None: the builder's default)."""
    env = os.environ.get(PRETRAINED_ENV)
    if env:
        return env
    return DEFAULT_WEIGHTS.get(model.partition("?")[0])


def resolve_model(
    model: str | None = None,
    pretrained: str | None = None,
    input_size: int | None = None,
    gallery_spec: dict[str, Any] | None = None,
) -> ModelChoice:
    """The model to use. ``gallery_spec``: the spec a gallery recorded (used when nothing is named)."""
    named = model is not None or pretrained is not None or input_size is not None
    if not named and gallery_spec:
        return ModelChoice(gallery_spec["model"], gallery_spec.get("pretrained"), gallery_spec.get("input_size"))
    model = model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL
    if pretrained is None:
        pretrained = default_weights(model)
    return ModelChoice(model, pretrained, input_size)


def model_help() -> dict[str, str]:
    """Help texts of ``--model`` and ``--pretrained`` (the CLI shows where defaults come from)."""
    return {
        "model": "registry name (dlib-resnet, clip-vit-b-32, resnet18, ...; options as NAME?key=value), "
        "trained model directory, MLflow URI (models:/NAME@ALIAS) or onnx:PATH.onnx "
        f"[${MODEL_ENV}, else {DEFAULT_MODEL}]",
        "pretrained": "for registry names: weights tag (openai, laion2b_s34b_b79k, DEFAULT), local checkpoint "
        f"path, or 'none' for random init [${PRETRAINED_ENV}, else the model's usual weights: "
        "openai for CLIP, the shipped ones for dlib-resnet]",
    }
