"""Which model a command uses (one resolver), offline CLIP weights failing fast, and ``facerec calibrate``."""

from __future__ import annotations

import json

import pytest

from facerec.cli import build_parser, main
from facerec.cli.commands import model_choice
from facerec.errors import ModelError
from facerec.models import load_model
from facerec.models.resolve import DEFAULT_MODEL, MODEL_ENV, PRETRAINED_ENV, resolve_model


@pytest.fixture()
def clean_env(monkeypatch):
    monkeypatch.delenv(MODEL_ENV, raising=False)
    monkeypatch.delenv(PRETRAINED_ENV, raising=False)
    return monkeypatch


@pytest.mark.parametrize("command", [["verify", "a.jpg", "b.jpg"], ["identify", "a.jpg"], ["enroll", "Ann", "a.jpg"]])
def test_recognition_commands_default_to_dlib_resnet(clean_env, command):
    args = build_parser().parse_args(command)
    assert DEFAULT_MODEL == "dlib-resnet"
    assert model_choice(args).model == "dlib-resnet" and model_choice(args).pretrained is None


def test_the_environment_and_flags_override_the_default_in_that_order(clean_env):
    clean_env.setenv(MODEL_ENV, "clip-vit-b-32")
    assert resolve_model() == resolve_model("clip-vit-b-32", "openai")  # CLIP's usual weights
    clean_env.setenv(PRETRAINED_ENV, "none")
    assert resolve_model().pretrained == "none"
    assert resolve_model("resnet18", input_size=64).model == "resnet18"
    assert resolve_model("resnet18", "DEFAULT").pretrained == "DEFAULT"


def test_a_gallery_model_is_used_only_when_nothing_is_named(clean_env):
    spec = {"model": "resnet18", "pretrained": "none", "input_size": 64}
    assert resolve_model(gallery_spec=spec) == resolve_model("resnet18", "none", 64)
    assert resolve_model(input_size=96, gallery_spec=spec).model == DEFAULT_MODEL
    assert resolve_model(gallery_spec=None).model == DEFAULT_MODEL


def test_a_recognizer_without_model_or_gallery_uses_the_default(clean_env, tmp_path):
    from facerec.gallery.recognizer import FaceRecognizer

    with FaceRecognizer(gallery=tmp_path / "none-yet") as recognizer:
        assert recognizer.embedder.name == "dlib-resnet"
        assert recognizer.model_record().spec["model"] == "dlib-resnet"


def test_offline_clip_weights_fail_without_touching_the_network(clean_env, monkeypatch):
    import socket

    import open_clip

    def no_network(*args, **kwargs):
        raise AssertionError("the network was tried although HF_HUB_OFFLINE is set")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(open_clip, "download_pretrained", no_network)
    monkeypatch.setattr("facerec.models.clip._cached_weights", lambda cfg: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE is set.*--pretrained none"):
        load_model("clip-vit-b-32", pretrained="openai", input_size=64)


def test_unreachable_weight_hosts_fail_before_any_download(clean_env, monkeypatch):
    import open_clip

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted although the host is unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(open_clip, "download_pretrained", no_download)
    monkeypatch.setattr("facerec.models.clip._cached_weights", lambda cfg: None)
    monkeypatch.setattr("facerec.models.weights.reachable", lambda host, port=443, timeout=3.0: False)
    with pytest.raises(ModelError, match="unreachable"):
        load_model("clip-vit-b-32", pretrained="openai", input_size=64)


def fake_lfw(root, sample_dir):
    """An LFW root of sample photos: pairsDevTrain.txt only (a DevTest file that would fail if read)."""
    images = root / "lfw-deepfunneled"
    names = ["Aaron_Peirsol", "Bob_Hope", "Ashanti", "Al_Sharpton"]
    for name in names:
        (images / name).mkdir(parents=True)
        for i in range(1, 5):
            (images / name / f"{name}_{i:04d}.jpg").symlink_to(sample_dir / name / f"{name}_{i:04d}.jpg")
    same = [f"{n}\t{i}\t{j}" for n in names for i, j in ((1, 2), (3, 4))]
    diff = [f"{a}\t{i}\t{b}\t{i}" for i in (1, 2) for a, b in zip(names, names[1:] + names[:1])]
    (root / "pairsDevTrain.txt").write_text("\n".join([str(len(same)), *same, *diff]) + "\n")
    (root / "pairsDevTest.txt").write_text("1\nNobody\t1\t2\n")


def test_calibrate_writes_a_model_directory_from_view1_train_pairs(tmp_path, sample_dir, capsys):
    fake_lfw(tmp_path / "lfw", sample_dir)
    out = tmp_path / "calibrated"
    argv = ["calibrate", "--model", "resnet18", "--pretrained", "none", "--input-size", "32"]
    argv += ["--data", str(tmp_path / "lfw"), "--no-crop", "--out", str(out), "--json"]
    argv += ["--threshold-file", str(tmp_path / "t.json")]
    assert main(argv) == 0
    meta = json.loads((out / "model.json").read_text())
    calibration = meta["calibration"]
    assert calibration["pairs"] == "pairsDevTrain.txt" and calibration["n_pairs"] == 16
    assert calibration["data"] == str(tmp_path / "lfw") and meta["threshold"] == calibration["threshold"]
    assert json.loads((tmp_path / "t.json").read_text())["calibrations"][0]["threshold"] == meta["threshold"]
    reloaded = load_model(str(out))
    assert reloaded.threshold == meta["threshold"] and reloaded.fingerprint == calibration["fingerprint"]
    assert json.loads(capsys.readouterr().out)["threshold"] == meta["threshold"]
