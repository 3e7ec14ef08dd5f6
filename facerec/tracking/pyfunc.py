"""The facerec MLflow model flavor: a ``pyfunc`` whose artifact is a facerec model directory.

``mlflow.pyfunc.load_model(uri).predict(frame)`` embeds face crops: ``frame`` has a
``path`` column (image files readable where the model runs) or an ``image`` column
(encoded image bytes; base64 in JSON, as MLflow's scoring server expects for a
binary column), one image per row; the result is a float32 array (N, D) of unit
vectors, the same vectors as ``facerec embed`` on the same crops. ``mlflow models
serve`` answers with them under ``predictions``.

The model is logged as code (``pyfunc_model.py`` calls ``set_model``), not pickled:
loading it imports ``facerec`` (``--env-manager local`` in an environment where facerec
is installed) and reads the model directory with ``facerec.models.load_model``, so any
directory that loader accepts (trained weights, frozen face models) works.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

ARTIFACT_KEY = "model_dir"
#: Name of the logged model in its run (``runs:/RUN/model`` resolves to it).
LOGGED_MODEL_NAME = "model"
MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
INPUT_COLUMNS = ("path", "image")


class FacerecModel(mlflow.pyfunc.PythonModel):
    """Face crops (paths or bytes) -> L2-normalised embeddings."""

    def load_context(self, context: Any) -> None:
        from facerec.models import load_model

        self.embedder = load_model(str(context.artifacts[ARTIFACT_KEY]))

    # No type hints here: MLflow would read them as a (list-typed) signature, but the signature is explicit.
    def predict(self, context, model_input, params=None):
        """Rows of ``model_input`` (``path`` or ``image`` bytes) -> float32 (N, D) unit vectors."""
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from facerec.errors import FacerecError

        try:
            images = read_images(model_input)
        except FacerecError as exc:  # bad input: a 400 with one line from the scoring server, not a 500
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from exc
        return self.embedder.embed_images(images)


def read_images(model_input: Any) -> list[Any]:
    """PIL RGB images from a frame with a ``path`` or ``image`` column, or a list of paths/bytes."""
    import pandas as pd

    from facerec.data.images import load_image
    from facerec.errors import ImageError

    if isinstance(model_input, pd.DataFrame):
        columns = [c for c in INPUT_COLUMNS if c in model_input.columns]
        if not columns:
            raise ImageError(f"model input needs a 'path' or 'image' column, got {list(model_input.columns)}")
        values = model_input[columns].apply(lambda row: next((v for v in row if _present(v)), None), axis=1)
        items = values.tolist()
    else:
        items = list(np.atleast_1d(np.asarray(model_input, dtype=object)))
    images = []
    for i, item in enumerate(items):
        if isinstance(item, (bytes, bytearray, memoryview)):
            images.append(_decode(bytes(item), f"row {i}"))
        elif isinstance(item, (str, Path)) and str(item):
            images.append(load_image(item))
        else:
            raise ImageError(f"row {i}: neither an image path nor image bytes")
    return images


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def _decode(data: bytes, where: str) -> Any:
    """Encoded bytes -> RGB image, read the way ``load_image`` reads files (EXIF orientation, RGB)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from facerec.data.images import to_rgb
    from facerec.errors import ImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return to_rgb(ImageOps.exif_transpose(img))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{where}: cannot read image bytes: {str(exc).splitlines()[0]}") from exc


def signature(embedding_dim: int | None) -> Any:
    """Input: optional ``path`` (string) and ``image`` (binary) columns; output: (N, D) float32."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema, TensorSpec

    inputs = Schema(
        [ColSpec(DataType.string, "path", required=False), ColSpec(DataType.binary, "image", required=False)]
    )
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, embedding_dim or -1))])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example() -> Any:
    """One photo of the embedded sample, as bytes (portable: no path that exists only here)."""
    import pandas as pd

    from facerec.data.datasets import sample_root

    first = sorted(sample_root().rglob("*.jpg"))[0]
    return pd.DataFrame({"image": [first.read_bytes()]})


def requirements() -> list[str]:
    """Pinned to what runs here; facerec itself must be importable (it is not on PyPI)."""
    import PIL
    import torch

    return [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}", f"pillow=={PIL.__version__}"]


def log_model_dir(model_dir: str | Path, name: str = LOGGED_MODEL_NAME, **kwargs: Any) -> Any:
    """Log ``model_dir`` as a facerec pyfunc model to the active run; returns MLflow's ``ModelInfo``."""
    from facerec.models.base import MODEL_FILE

    meta_file = Path(model_dir) / MODEL_FILE
    meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(MODEL_CODE),
        artifacts={ARTIFACT_KEY: str(model_dir)},
        signature=signature(meta.get("embedding_dim")),
        input_example=input_example(),
        pip_requirements=requirements(),
        metadata={"facerec": {k: meta.get(k) for k in ("name", "input_size", "embedding_dim", "fingerprint")}},
        **kwargs,
    )


def logged_model_uri(run_id: str, name: str = LOGGED_MODEL_NAME) -> str | None:
    """``models:/<model id>`` of the facerec model logged to ``run_id``, if any."""
    from mlflow import MlflowClient

    run = MlflowClient().get_run(run_id)
    found = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{name}'",
        output_format="list",
    )
    return f"models:/{found[0].model_id}" if found else None


def model_dir_in(local: str | Path) -> Path | None:
    """The facerec model directory inside a downloaded pyfunc model (``MLmodel`` + artifacts)."""
    candidate = Path(local) / "artifacts" / ARTIFACT_KEY
    return candidate if (Path(local) / "MLmodel").is_file() and candidate.is_dir() else None
