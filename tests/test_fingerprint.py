"""The weight fingerprint is hashed once and cached, and the cached value follows the weights."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torchvision

from facerec.models import create_embedder, load_model_dir, save_model_dir
from facerec.models import fingerprint as fingerprints


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(fingerprints.CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture()
def no_hashing(monkeypatch):
    """Fail if anything hashes weights: what a cached load must not do."""

    def refuse(embedder):
        raise AssertionError("weights were hashed")

    monkeypatch.setattr(fingerprints, "hash_state", refuse)


def small(seed: int = 0):
    return create_embedder("resnet18", pretrained="none", input_size=64, embedding_dim=32, seed=seed)


def test_a_saved_model_directory_loads_its_fingerprint_without_hashing(tmp_path, request):
    model = small()
    expected = model.fingerprint
    path = save_model_dir(model, tmp_path / "model")
    assert json.loads((path / "model.json").read_text())["weights_stamp"]["size"] > 0
    request.getfixturevalue("no_hashing")
    assert load_model_dir(path).fingerprint == expected


def test_replacing_the_weights_file_changes_the_loaded_fingerprint(tmp_path):
    path = save_model_dir(small(seed=0), tmp_path / "model")
    other = small(seed=1)
    torch.save(other.state_dict(), path / "weights.pt")  # model.json still holds seed 0's fingerprint
    loaded = load_model_dir(path)
    assert loaded.fingerprint == fingerprints.hash_state(other)
    assert loaded.fingerprint != json.loads((path / "model.json").read_text())["fingerprint"]


def test_a_restamped_weights_file_with_other_content_is_hashed_again(tmp_path):
    # Same size (same architecture), new mtime: the stamp no longer matches, so the file is hashed.
    path = save_model_dir(small(seed=0), tmp_path / "model")
    stamp = json.loads((path / "model.json").read_text())["weights_stamp"]
    torch.save(small(seed=2).state_dict(), path / "weights.pt")
    assert os.stat(path / "weights.pt").st_mtime_ns != stamp["mtime_ns"]
    assert load_model_dir(path).fingerprint == fingerprints.hash_state(small(seed=2))


def test_editing_the_input_size_in_model_json_is_not_hidden_by_the_cache(tmp_path):
    path = save_model_dir(small(), tmp_path / "model")
    meta = json.loads((path / "model.json").read_text())
    (path / "model.json").write_text(json.dumps({**meta, "input_size": 96}))
    loaded = load_model_dir(path)
    assert loaded.fingerprint.startswith("resnet18/96px/32d/")


def test_an_unstamped_model_directory_is_hashed_once_then_cached_per_user(tmp_path, monkeypatch):
    model = small()
    path = save_model_dir(model, tmp_path / "model")
    meta = json.loads((path / "model.json").read_text())
    del meta["weights_stamp"]  # as written before stamps existed
    (path / "model.json").write_text(json.dumps(meta))
    assert load_model_dir(path).fingerprint == model.fingerprint  # hashed, then remembered

    calls = []
    real = fingerprints.hash_state
    monkeypatch.setattr(fingerprints, "hash_state", lambda e: calls.append(1) or real(e))
    assert load_model_dir(path).fingerprint == model.fingerprint
    assert calls == []


def test_a_registry_model_with_a_checkpoint_file_is_hashed_once_and_rehashed_when_the_file_changes(
    tmp_path, monkeypatch
):
    checkpoint = tmp_path / "resnet18.pth"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        torch.save(torchvision.models.resnet18().state_dict(), checkpoint)
    first = create_embedder("resnet18", pretrained=str(checkpoint), input_size=64)
    assert first.fingerprint == fingerprints.hash_state(first)

    calls = []
    real = fingerprints.hash_state
    monkeypatch.setattr(fingerprints, "hash_state", lambda e: calls.append(1) or real(e))
    assert create_embedder("resnet18", pretrained=str(checkpoint), input_size=64).fingerprint == first.fingerprint
    assert calls == []

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(6)
        torch.save(torchvision.models.resnet18().state_dict(), checkpoint)
    changed = create_embedder("resnet18", pretrained=str(checkpoint), input_size=64)
    assert calls == [1]
    assert changed.fingerprint != first.fingerprint


def test_random_initialisation_is_never_taken_from_the_cache(tmp_path):
    small().fingerprint  # noqa: B018 - computing it must not leave a cache entry
    assert not (tmp_path / "cache").exists()


def test_trained_weights_get_a_new_fingerprint_and_never_overwrite_the_cached_one(tmp_path):
    path = save_model_dir(small(), tmp_path / "model")
    loaded = load_model_dir(path)
    before = loaded.fingerprint
    with torch.no_grad():
        loaded.head.weight.add_(1.0)  # what a training step does
    loaded.invalidate_fingerprint()
    assert loaded.fingerprint != before
    assert load_model_dir(path).fingerprint == before


@pytest.mark.parametrize("name", ["resnet18", "clip-vit-b-32"])
def test_a_model_directory_loads_exactly_its_weights_without_paying_for_random_init(tmp_path, name):
    model = create_embedder(name, pretrained="none", input_size=64, embedding_dim=32, head="linear", seed=3)
    loaded = load_model_dir(save_model_dir(model, tmp_path / "model"))
    batch = torch.rand(2, 3, 64, 64)
    assert (model.embed(batch) == loaded.embed(batch)).all()
    assert fingerprints.hash_state(loaded) == model.fingerprint
    # the skipped initialisation stays inside the load: a model built afterwards is initialised as before
    again = create_embedder(name, pretrained="none", input_size=64, embedding_dim=32, head="linear", seed=3)
    assert fingerprints.hash_state(again) == model.fingerprint
