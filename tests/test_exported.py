"""Trained model directories answered by onnxruntime (facerec.models.exported): same vectors, fingerprint, threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facerec.errors import ModelError
from facerec.gallery.recognizer import FaceRecognizer
from facerec.models import create_embedder, save_model_dir
from facerec.models.exported import ExportedEmbedder, export_path
from facerec.models.resolve import ModelChoice


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FACEREC_EXPORTS", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def model_dir(tmp_path):
    torch.manual_seed(0)
    model = create_embedder("resnet18", pretrained="none", input_size=64, embedding_dim=32)
    return save_model_dir(model, tmp_path / "model", threshold=0.42), model


@pytest.fixture
def crops(sample_dir):
    from PIL import Image

    return [Image.open(p).convert("RGB").resize((64, 64)) for p in sorted(sample_dir.glob("*/*.jpg"))[:6]]


def test_the_second_load_runs_the_onnx_copy_with_the_directorys_vectors_fingerprint_and_threshold(
    cache, model_dir, crops
):
    directory, model = model_dir
    first = ModelChoice(str(directory)).load(exported=True)
    assert not isinstance(first, ExportedEmbedder)  # the torch model answers while the copy is written
    assert export_path(first.fingerprint).is_file()
    second = ModelChoice(str(directory)).load(exported=True)
    assert isinstance(second, ExportedEmbedder)
    assert second.fingerprint == first.fingerprint == model.fingerprint
    assert second.threshold == 0.42 and second.embedding_dim == 32 and second.input_size == 64
    np.testing.assert_allclose(second.embed_images(crops), first.embed_images(crops), atol=1e-5)
    with pytest.raises(ModelError, match="cannot be fine-tuned"):
        second.train()
    assert not isinstance(ModelChoice(str(directory)).load(), ExportedEmbedder)  # training, calibrate: torch


def test_retrained_weights_get_their_own_copy(cache, model_dir, tmp_path):
    directory, model = model_dir
    ModelChoice(str(directory)).load(exported=True)
    with torch.no_grad():
        model.head.weight.mul_(2) if hasattr(model.head, "weight") else next(model.parameters()).mul_(2)
    save_model_dir(model, directory, threshold=0.5)
    again = ModelChoice(str(directory)).load(exported=True)
    assert not isinstance(again, ExportedEmbedder) and again.threshold == 0.5
    assert len(list((cache / "exports").glob("*.onnx"))) == 2


def test_a_damaged_copy_falls_back_to_torch_and_is_made_again(cache, model_dir):
    directory, _ = model_dir
    fingerprint = ModelChoice(str(directory)).load(exported=True).fingerprint
    export_path(fingerprint).write_bytes(b"not onnx")
    assert not isinstance(ModelChoice(str(directory)).load(exported=True), ExportedEmbedder)
    assert not export_path(fingerprint).exists()
    ModelChoice(str(directory)).load(exported=True)
    assert isinstance(ModelChoice(str(directory)).load(exported=True), ExportedEmbedder)


def test_exports_can_be_turned_off(cache, model_dir, monkeypatch):
    directory, _ = model_dir
    monkeypatch.setenv("FACEREC_EXPORTS", "0")
    for _ in range(2):
        assert not isinstance(ModelChoice(str(directory)).load(exported=True), ExportedEmbedder)
    assert not (cache / "exports").exists()


def test_a_gallery_enrolled_with_torch_is_searched_with_the_copy(cache, model_dir, sample_dir, tmp_path):
    directory, _ = model_dir
    photos = sorted((sample_dir / "Bob_Hope").glob("*.jpg"))
    with FaceRecognizer(str(directory), gallery=tmp_path / "g", detect=False) as recognizer:
        recognizer.enroll("Bob Hope", photos[:2])  # first use: torch, copy written
        by_torch = recognizer.identify(photos[2], top_k=1)
    with FaceRecognizer(str(directory), gallery=tmp_path / "g", detect=False) as recognizer:
        assert isinstance(recognizer.embedder, ExportedEmbedder)  # and the gallery accepts its fingerprint
        by_copy = recognizer.identify(photos[2], top_k=1)
    assert by_copy.candidates[0].identity == by_torch.candidates[0].identity == "Bob Hope"
    assert by_copy.score == pytest.approx(by_torch.score, abs=1e-5)
