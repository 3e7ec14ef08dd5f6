"""The ``align`` option of trainable models (facerec.faces.chips): every path a crop takes into a model
(inference, training's decode, a saved directory, its ONNX copy) gives the model dlib's aligned chip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from facerec.data.sampling import decode
from facerec.errors import ModelError
from facerec.faces.chips import CHIP_SIZE, default_chipper, input_image
from facerec.faces.detect import DetectorConfig, FaceDetector
from facerec.models import create_embedder, load_model, load_model_dir, save_model_dir
from facerec.models.exported import ExportedEmbedder
from facerec.models.resolve import ModelChoice


@pytest.fixture(scope="module")
def crop_files(sample_dir, tmp_path_factory):
    """224 px centre crops of four sample photos, as files (what the crop stage writes)."""
    folder = tmp_path_factory.mktemp("crops")
    detector = FaceDetector(DetectorConfig(image_size=224))
    paths = []
    for name in ("Aaron_Peirsol_0001", "Aaron_Peirsol_0002", "Bob_Hope_0001", "Bob_Hope_0002"):
        photo = Image.open(sample_dir / name.rsplit("_", 1)[0] / f"{name}.jpg").convert("RGB")
        path = folder / f"{name}.png"  # lossless: a file's pixels are the crop's
        detector.center_crop(photo).save(path)
        paths.append(path)
    return paths


def aligned_model(**kwargs):
    torch.manual_seed(0)
    return create_embedder("resnet18", pretrained="none", input_size=64, embedding_dim=32, align="dlib-chip", **kwargs)


def test_an_aligned_model_sees_dlibs_chip_of_the_crop_resized_to_its_input(crop_files):
    crop = Image.open(crop_files[0])
    chip = default_chipper().chips([np.asarray(crop)])[0]
    assert chip.shape == (CHIP_SIZE, CHIP_SIZE, 3)
    model = aligned_model()
    expected = np.asarray(Image.fromarray(chip).resize((64, 64), Image.Resampling.BICUBIC), np.float32) / 255
    np.testing.assert_array_equal(model.preprocess(crop).permute(1, 2, 0).numpy(), expected)
    plain = create_embedder("resnet18", pretrained="none", input_size=64, embedding_dim=32)
    assert not torch.equal(plain.preprocess(crop), model.preprocess(crop))
    assert model.spec.options["align"] == "dlib-chip" and "align" not in plain.spec.options


def test_training_decodes_the_pixels_inference_sees(crop_files):
    model = aligned_model()
    for path in crop_files:
        pixels = decode(str(path), 64, "dlib-chip").float().div(255)
        torch.testing.assert_close(pixels, model.preprocess(Image.open(path)), atol=1e-7, rtol=0)
    assert not torch.equal(decode(str(crop_files[0]), 64), decode(str(crop_files[0]), 64, "dlib-chip"))


def test_alignment_is_part_of_the_fingerprint_and_unset_alignment_keeps_old_fingerprints():
    torch.manual_seed(0)
    plain = create_embedder("resnet18", pretrained="none", input_size=64, embedding_dim=32)
    model = aligned_model()
    assert model.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in model.state_dict().items())  # same weights
    assert model.fingerprint != plain.fingerprint
    none = create_embedder("resnet18", pretrained="none", input_size=64, embedding_dim=32, align="none")
    assert "align" not in none.spec.options  # align=none is the model as before the option


def test_a_saved_aligned_model_reloads_aligned_with_the_same_vectors(crop_files, tmp_path):
    model = aligned_model()
    directory = save_model_dir(model, tmp_path / "model", threshold=0.3)
    again = load_model_dir(directory)
    assert again.spec.options["align"] == "dlib-chip" and again.fingerprint == model.fingerprint
    crops = [Image.open(p) for p in crop_files]
    np.testing.assert_allclose(again.embed_images(crops), model.embed_images(crops), atol=1e-6)


def test_the_onnx_copy_of_an_aligned_directory_aligns_too(crop_files, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FACEREC_EXPORTS", raising=False)
    model = aligned_model()
    directory = save_model_dir(model, tmp_path / "model")
    ModelChoice(str(directory)).load(exported=True)  # writes the copy
    copy = ModelChoice(str(directory)).load(exported=True)
    assert isinstance(copy, ExportedEmbedder)
    crops = [Image.open(p) for p in crop_files]
    np.testing.assert_allclose(copy.embed_images(crops), model.embed_images(crops), atol=1e-5)


def test_an_unknown_alignment_is_a_one_line_model_error():
    with pytest.raises(ModelError, match="align must be one of none, dlib-chip, got 'eyes'"):
        load_model("resnet18?align=eyes")


def test_input_image_without_alignment_only_converts_and_resizes(crop_files):
    crop = Image.open(crop_files[0]).convert("L")
    out = input_image(crop, 32)
    assert out.mode == "RGB" and out.size == (32, 32)
