"""Frozen pretrained models (dlib-resnet, onnx:PATH): the embedder contract, no training, model dirs."""

from __future__ import annotations

import numpy as np
import pytest

from facerec.data.images import load_image
from facerec.errors import ModelError
from facerec.faces.detect import DetectorConfig, FaceDetector
from facerec.models import create_embedder, is_frozen, load_model, save_model_dir
from facerec.models.base import WEIGHTS_FILE
from facerec.models.calibration import Calibration, read_threshold_records, write_threshold_file
from facerec.models.frozen import THRESHOLDS_DIR


def crops(sample_dir, *names: tuple[str, int]):
    """Face crops of sample photos: LFW photos are centred, so the 0.8 centre crop matches our MTCNN crops."""
    detector = FaceDetector(DetectorConfig(image_size=224))
    return [detector.center_crop(load_image(sample_dir / n / f"{n}_{i:04d}.jpg")) for n, i in names]


@pytest.fixture(scope="module")
def dlib_model():
    return create_embedder("dlib-resnet")


@pytest.fixture(scope="module")
def faces(sample_dir):
    return crops(sample_dir, ("Aaron_Peirsol", 1), ("Aaron_Peirsol", 2), ("Bob_Hope", 1), ("Bob_Hope", 2))


def test_dlib_resnet_gives_deterministic_unit_128d_vectors_that_tell_people_apart(dlib_model, faces):
    first = dlib_model.embed_images(faces)
    second = dlib_model.embed_images(faces)
    assert first.shape == (4, 128) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, second)
    scores = first @ first.T
    assert min(scores[0, 1], scores[2, 3]) > max(scores[0, 2], scores[0, 3], scores[1, 2], scores[1, 3])
    assert dlib_model.fingerprint == create_embedder("dlib-resnet").fingerprint
    assert dlib_model.fingerprint != create_embedder("dlib-resnet", flip=False).fingerprint


def test_dlibs_own_network_gives_the_torch_backends_vectors_and_keeps_the_fingerprint(dlib_model, faces):
    own = create_embedder("dlib-resnet", backend="dlib", workers=1)
    np.testing.assert_allclose(own.embed_images(faces), dlib_model.embed_images(faces), atol=2e-6)
    assert own.fingerprint == dlib_model.fingerprint and dlib_model.backend == "torch"
    assert create_embedder("dlib-resnet", jitter=1).backend == "dlib"  # jittering is dlib's own


def test_dlib_resnet_workers_give_the_same_vectors_as_one_process_and_keep_the_fingerprint(dlib_model, faces):
    one = create_embedder("dlib-resnet", backend="dlib", workers=1)
    two = create_embedder("dlib-resnet", backend="dlib", workers=2)
    try:
        np.testing.assert_array_equal(two.embed_images(faces), one.embed_images(faces))
        assert two._pool is not None  # four faces, flipped: eight passes went to the workers
        assert one.fingerprint == two.fingerprint == dlib_model.fingerprint
    finally:
        two.stop_workers()


def test_dlib_resnet_carries_on_in_process_when_a_worker_dies(faces):
    import os
    import signal

    model = create_embedder("dlib-resnet", backend="dlib", workers=2)
    expected = create_embedder("dlib-resnet", backend="dlib", workers=1).embed_images(faces[:2])
    model.start_workers()
    for pid in list(model._pool._executor._processes):
        os.kill(pid, signal.SIGKILL)
    np.testing.assert_array_equal(model.embed_images(faces[:2]), expected)
    assert model._pool is None  # given up; the next big batch starts fresh workers


def test_dlib_resnet_ships_a_threshold_calibrated_on_view1_train_and_uses_it(dlib_model):
    records = read_threshold_records(THRESHOLDS_DIR / "dlib-resnet.json")
    (record,) = [r for r in records if r["fingerprint"] == dlib_model.fingerprint]
    assert record["pairs"] == "pairsDevTrain.txt" and "calibrate" in record["command"]
    assert dlib_model.threshold == pytest.approx(record["threshold"])
    assert 0 < dlib_model.threshold < 1
    # the fast variant has its own calibration; other options give other vectors, and no threshold is claimed for them
    fast = create_embedder("dlib-resnet", flip=False)
    assert fast.threshold is not None and fast.threshold != dlib_model.threshold
    assert create_embedder("dlib-resnet", box="crop").threshold is None


def test_a_threshold_file_keeps_one_calibration_per_fingerprint(tmp_path):
    def calibration(fingerprint: str, threshold: float) -> Calibration:
        return Calibration("m", fingerprint, threshold, 0.9, 0.9, 0.95, 10, "data", "pairs.txt", "crops", "cmd")

    path = tmp_path / "m.json"
    write_threshold_file(calibration("m/a", 0.5), path)
    write_threshold_file(calibration("m/b", 0.6), path)
    write_threshold_file(calibration("m/a", 0.7), path)  # a recalibration replaces its own record only
    records = read_threshold_records(path)
    assert [(r["fingerprint"], r["threshold"]) for r in records] == [("m/a", 0.7), ("m/b", 0.6)]


def test_verify_without_a_threshold_uses_the_shipped_one(dlib_model, sample_dir, tmp_path):
    from facerec.gallery.recognizer import FaceRecognizer

    photos = [tmp_path / "a.png", tmp_path / "b.png"]
    for path, image in zip(photos, crops(sample_dir, ("Aaron_Peirsol", 1), ("Aaron_Peirsol", 3))):
        image.save(path)
    with FaceRecognizer(dlib_model, gallery=tmp_path / "gallery", detect=False) as recognizer:
        result = recognizer.verify(*photos)
    assert result.threshold == dlib_model.threshold and result.same


def test_fine_tuning_a_frozen_model_is_a_one_line_error(dlib_model):
    from facerec.training.strategies import StrategyConfig, apply_strategy

    assert is_frozen("dlib-resnet")
    with pytest.raises(ModelError, match="cannot be fine-tuned"):
        apply_strategy(dlib_model, StrategyConfig(kind="full"))
    with pytest.raises(ModelError, match="cannot be fine-tuned"):
        dlib_model.train()
    assert not dlib_model.training  # .eval() and .to() still work
    assert dlib_model.to("cpu").eval() is dlib_model


def test_a_frozen_model_directory_stores_no_weights_and_keeps_its_threshold(dlib_model, tmp_path):
    save_model_dir(dlib_model, tmp_path / "m", threshold=0.42)
    assert not (tmp_path / "m" / WEIGHTS_FILE).exists()
    loaded = load_model(str(tmp_path / "m"))
    assert loaded.fingerprint == dlib_model.fingerprint and loaded.threshold == 0.42


def test_dlib_resnet_refuses_other_weights_and_sizes():
    with pytest.raises(ModelError, match="one set of weights"):
        create_embedder("dlib-resnet", pretrained="openai")
    with pytest.raises(ModelError, match="128-d"):
        create_embedder("dlib-resnet", embedding_dim=512)
    with pytest.raises(ModelError, match="box must be"):
        load_model("dlib-resnet?box=cnn")
    with pytest.raises(ModelError, match="backend must be"):
        load_model("dlib-resnet?backend=cuda")


def test_dlib_net_refuses_a_file_that_is_not_dlibs_face_network(tmp_path):
    from facerec.models.dlib_net import DlibFaceNet
    from facerec.models.dlib_resnet import LANDMARK_FILES, weights_dir

    (tmp_path / "noise.dat").write_bytes(b"\x01\x05con_4\x01\x03" + bytes(64))
    for path in (tmp_path / "noise.dat", weights_dir() / LANDMARK_FILES[5]):
        with pytest.raises(ModelError, match="dlib's face descriptor network"):
            DlibFaceNet.from_dat(path)


def test_a_gallery_records_a_frozen_model_with_its_options(sample_dir, tmp_path):
    from facerec.gallery.recognizer import FaceRecognizer

    embedder = create_embedder("dlib-resnet", box="crop")
    with FaceRecognizer(embedder, gallery=tmp_path / "g", detect=False) as recognizer:
        spec = recognizer.model_record().spec
    assert load_model(spec["model"], input_size=spec["input_size"]).fingerprint == embedder.fingerprint


def test_the_hog_detector_is_cached_as_a_binary_file_that_finds_the_same_faces(faces, tmp_path, monkeypatch):
    import dlib

    from facerec.faces.chips import frontal_face_detector

    monkeypatch.setenv("FACEREC_CACHE", str(tmp_path))
    faces = [np.asarray(f) for f in faces]
    built_in = dlib.get_frontal_face_detector()
    assert all(built_in(f, 0) for f in faces)
    first = frontal_face_detector(dlib)  # writes the copy
    (copy,) = (tmp_path / "dlib").glob("frontal_face_detector-*.svm")
    cached = frontal_face_detector(dlib)  # reads it
    for detector in (first, cached):
        assert [list(detector(f, 0)) for f in faces] == [list(built_in(f, 0)) for f in faces]
    copy.write_bytes(b"not a detector")
    assert [list(frontal_face_detector(dlib)(f, 0)) for f in faces] == [list(built_in(f, 0)) for f in faces]
