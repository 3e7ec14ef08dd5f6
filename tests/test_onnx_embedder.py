"""``onnx:PATH`` embedder, tested with a tiny model exported from torch inside the test (offline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from facerec.errors import ModelError
from facerec.models import load_model, save_model_dir

SIZE = 32


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.fc = nn.Linear(8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def export(path, dynamic: bool = False, metadata: dict | None = None, normalise_inside: bool = False, size: int = SIZE):
    import onnx

    model = Tiny().eval()
    module = nn.Sequential(Normalise(), model) if normalise_inside else model
    torch.onnx.export(
        module,
        torch.zeros(1, 3, size, size),
        str(path),
        input_names=["input"],
        output_names=["embedding"],
        dynamic_axes={"input": {0: "n", 2: "h", 3: "w"} if dynamic else {0: "n"}},
        dynamo=False,
    )
    if metadata:
        proto = onnx.load(str(path))
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, str(value)
        onnx.save(proto, str(path))
    return model


class Normalise(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 127.5) * (1 / 127.5)


def crop_images(n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)) for _ in range(n)]


def reference(model: nn.Module, images: list[Image.Image]) -> np.ndarray:
    """What the model should give: the crop resized to its input, (x - 127.5) / 127.5, RGB, NCHW."""
    import cv2

    arrays = [cv2.resize(np.asarray(im), (SIZE, SIZE), interpolation=cv2.INTER_AREA) for im in images]
    x = (torch.from_numpy(np.stack(arrays)).float().permute(0, 3, 1, 2) - 127.5) / 127.5
    with torch.no_grad():
        out = model(x).numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_an_exported_model_runs_with_options_given_in_the_spec(tmp_path):
    model = export(tmp_path / "tiny.onnx")
    embedder = load_model(f"onnx:{tmp_path / 'tiny.onnx'}?mean=127.5&std=127.5&align=crop")
    images = crop_images()
    vectors = embedder.embed_images(images)
    assert vectors.shape == (3, 16) and vectors.dtype == np.float32 and embedder.embedding_dim == 16
    np.testing.assert_allclose(vectors, reference(model, images), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_settings_are_read_from_the_model_metadata(tmp_path):
    model = export(tmp_path / "meta.onnx", metadata={"mean": 127.5, "std": 127.5, "align": "crop"})
    images = crop_images(2)
    np.testing.assert_allclose(
        load_model(f"onnx:{tmp_path / 'meta.onnx'}").embed_images(images), reference(model, images), atol=1e-4
    )


def test_a_graph_that_normalises_itself_takes_raw_pixels(tmp_path):
    model = export(tmp_path / "raw.onnx", normalise_inside=True)
    embedder = load_model(f"onnx:{tmp_path / 'raw.onnx'}?align=crop")
    assert embedder.spec.options["mean"] == [0.0] and embedder.spec.options["std"] == [1.0]
    images = crop_images(2)
    np.testing.assert_allclose(embedder.embed_images(images), reference(model, images), atol=1e-4)


def test_what_cannot_be_inferred_is_a_clear_error(tmp_path):
    export(tmp_path / "tiny.onnx")
    with pytest.raises(ModelError, match=r"mean=127.5&std=127.5"):
        load_model(f"onnx:{tmp_path / 'tiny.onnx'}")
    export(tmp_path / "dynamic.onnx", dynamic=True)
    with pytest.raises(ModelError, match=r"\?size=112"):
        load_model(f"onnx:{tmp_path / 'dynamic.onnx'}?mean=127.5&std=127.5")
    with pytest.raises(ModelError, match="does not exist"):
        load_model(f"onnx:{tmp_path / 'missing.onnx'}")
    with pytest.raises(ModelError, match="unknown onnx option"):
        load_model(f"onnx:{tmp_path / 'tiny.onnx'}?colour=1")


def test_landmark_alignment_puts_the_eyes_where_the_arcface_template_wants_them(tmp_path, sample_dir):
    from facerec.data.images import load_image
    from facerec.faces.detect import FaceDetector
    from facerec.models.onnx import ARCFACE_TEMPLATE

    export(tmp_path / "arc.onnx", metadata={"preset": "arcface"}, size=112)
    embedder = load_model(f"onnx:{tmp_path / 'arc.onnx'}")
    detector = FaceDetector()
    crop = detector.center_crop(load_image(sample_dir / "Bob_Hope" / "Bob_Hope_0001.jpg"))
    aligned = embedder.aligned(np.asarray(crop))
    assert aligned.shape == (112, 112, 3)
    face = detector.detect([Image.fromarray(aligned)])[0].face  # MTCNN again, on the model's input
    # eyes and mouth corners within 6 px (5% of the side) of the template: a five-point least-squares
    # fit leaves a few px of residual on a real face; an unaligned crop is 10+ px off
    found = np.array(face.landmarks)[[0, 1, 3, 4]]
    np.testing.assert_allclose(found, ARCFACE_TEMPLATE[[0, 1, 3, 4]], atol=6.0)


def test_an_onnx_model_directory_reloads_the_same_model(tmp_path):
    export(tmp_path / "tiny.onnx")
    embedder = load_model(f"onnx:{tmp_path / 'tiny.onnx'}?mean=127.5&std=127.5&align=crop")
    save_model_dir(embedder, tmp_path / "dir", threshold=0.3)
    loaded = load_model(str(tmp_path / "dir"))
    assert loaded.fingerprint == embedder.fingerprint and loaded.threshold == 0.3
    images = crop_images(2)
    np.testing.assert_array_equal(loaded.embed_images(images), embedder.embed_images(images))
