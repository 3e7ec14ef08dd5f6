"""Every registered embedder, offline (pretrained none, small inputs): the embedder contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from facerec.errors import ModelError
from facerec.models import available_embedders, create_embedder, load_model, load_model_dir, save_model_dir

CNNS = ["efficientnet_b0", "mobilenet_v2", "mobilenet_v3_large", "resnet18", "resnet50"]
SIZE = {"clip-vit-b-32": 64}  # CNNs: 64


def size_of(name: str) -> int:
    return SIZE.get(name, 64)


@pytest.fixture(scope="module")
def built() -> dict:
    """One embedder per registered name, built once (ViT-B/32 holds 88M parameters)."""
    return {
        name: create_embedder(name, pretrained="none", input_size=size_of(name))
        for name in available_embedders(trainable=True)
    }


def batch(size: int, n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_registry_lists_every_backbone_and_the_frozen_face_model():
    assert set(available_embedders(trainable=True)) == {"clip-vit-b-32", *CNNS}
    assert available_embedders(trainable=False) == ["dlib-resnet"]
    assert set(available_embedders()) == {"clip-vit-b-32", "dlib-resnet", *CNNS}


@pytest.mark.parametrize("name", ["clip-vit-b-32", *CNNS])
def test_embed_shape_dtype_unit_norm_and_determinism(built, name):
    embedder = built[name]
    x = batch(embedder.input_size)
    embedder.train()  # embed() must switch to eval itself and restore the mode
    first = embedder.embed(x)
    assert embedder.training
    second = embedder.embed(x)
    assert first.shape == (3, 512) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first[0], first[1])  # different images, different vectors


@pytest.mark.parametrize("name", ["clip-vit-b-32", *CNNS])
def test_blocks_are_ordered_disjoint_and_cover_the_backbone(built, name):
    embedder = built[name]
    keys_before = list(embedder.state_dict())
    blocks = embedder.blocks()
    assert len(blocks) >= 4
    block_params = [id(p) for block in blocks for p in block.parameters()]
    assert len(block_params) == len(set(block_params))
    assert set(block_params) == {id(p) for p in embedder.backbone.parameters()}
    assert not set(block_params) & {id(p) for p in embedder.head.parameters()}
    # order: the first call of any module inside block i comes before block i+1's
    first_call: dict[int, int] = {}

    def record(index: int):
        def hook(*_) -> None:  # returning None keeps the module's output
            first_call.setdefault(index, len(first_call))

        return hook

    hooks = [module.register_forward_hook(record(i)) for i, block in enumerate(blocks) for module in block.modules()]
    try:
        embedder.embed(batch(embedder.input_size, n=1))
    finally:
        for hook in hooks:
            hook.remove()
    assert sorted(first_call) == list(range(len(blocks)))
    assert [first_call[i] for i in range(len(blocks))] == sorted(first_call.values())
    # blocks are views, never attached: the state dict is unchanged and holds each parameter once
    assert list(embedder.state_dict()) == keys_before


@pytest.mark.parametrize("name", ["clip-vit-b-32", *CNNS])
def test_preprocess_makes_a_unit_range_tensor_of_the_input_size(built, name):
    embedder = built[name]
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (250, 250, 3), dtype=np.uint8))
    tensor = embedder.preprocess(image)
    assert tensor.shape == (3, embedder.input_size, embedder.input_size) and tensor.dtype == torch.float32
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0


@pytest.mark.parametrize("name", ["clip-vit-b-32", "resnet18"])
def test_same_seed_rebuilds_the_same_model_other_seed_or_size_does_not(built, name):
    embedder = built[name]
    x = batch(embedder.input_size)
    state = torch.random.get_rng_state()
    again = create_embedder(name, pretrained="none", input_size=embedder.input_size)
    assert torch.equal(torch.random.get_rng_state(), state)  # the seeded build leaves global RNG alone
    assert again.fingerprint == embedder.fingerprint
    np.testing.assert_array_equal(again.embed(x), embedder.embed(x))
    reseeded = create_embedder(name, pretrained="none", input_size=embedder.input_size, seed=1)
    assert reseeded.fingerprint != embedder.fingerprint
    resized = create_embedder(name, pretrained="none", input_size=embedder.input_size + 32)
    assert resized.fingerprint != embedder.fingerprint
    assert resized.embed(batch(resized.input_size)).shape == (3, 512)


def test_fingerprint_names_model_size_dim_and_changes_with_weights(built):
    embedder = create_embedder("resnet18", input_size=64)
    before = embedder.fingerprint
    assert before.startswith("resnet18/64px/512d/")
    with torch.no_grad():
        embedder.head.weight.add_(0.01)
    embedder.invalidate_fingerprint()
    assert embedder.fingerprint != before


def test_clip_head_options(built):
    clip = built["clip-vit-b-32"]
    assert isinstance(clip.head, torch.nn.Identity) and clip.spec.options["head"] == "identity"
    with pytest.raises(ModelError, match="head=linear"):
        create_embedder("clip-vit-b-32", input_size=64, embedding_dim=128)
    for name in CNNS:
        assert isinstance(built[name].head, torch.nn.Linear)


def test_clip_linear_head_and_model_dir_round_trip(tmp_path):
    clip = create_embedder("clip-vit-b-32", input_size=64, embedding_dim=128, head="linear", seed=7)
    assert clip.embedding_dim == 128 and clip.head.weight.shape == (128, 512)
    x = batch(64)
    loaded = load_model_dir(save_model_dir(clip, tmp_path / "model"))
    assert loaded.fingerprint == clip.fingerprint
    np.testing.assert_array_equal(loaded.embed(x), clip.embed(x))


@pytest.mark.parametrize("size", [100, 16])
def test_clip_input_size_must_be_a_multiple_of_32(size):
    with pytest.raises(ModelError, match="multiple of 32"):
        create_embedder("clip-vit-b-32", input_size=size)


def test_cnn_input_size_floor():
    with pytest.raises(ModelError, match="at least 32"):
        create_embedder("resnet18", input_size=16)


def test_clip_tag_offline_fails_with_instructions(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as info:
        create_embedder("clip-vit-b-32", pretrained="openai", input_size=64)
    message = str(info.value)
    assert "cannot download open_clip weights 'openai' for ViT-B-32" in message
    assert "--pretrained /path/to/checkpoint.pt" in message and "--pretrained none" in message


def test_torchvision_tag_offline_fails_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # a closed port: offline, whatever the machine
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(ModelError, match=r"cannot download torchvision weights .*--pretrained none"):
        create_embedder("resnet18", pretrained="DEFAULT", input_size=64)


@pytest.mark.parametrize("name", ["clip-vit-b-32", "resnet18"])
def test_unknown_weights_name_lists_the_choices(name):
    with pytest.raises(ModelError, match="unknown weights 'imagenet-faces'"):
        create_embedder(name, pretrained="imagenet-faces", input_size=64)
    with pytest.raises(ModelError, match="does not exist"):
        create_embedder(name, pretrained="/nowhere/weights.pt", input_size=64)


def test_clip_local_checkpoint_round_trip_and_position_embedding_resize(built, tmp_path):
    source = built["clip-vit-b-32"]  # 64 px: a 2x2 patch grid
    tower = {k: v.clone() for k, v in source.backbone.state_dict().items()}
    torch.save(tower, tmp_path / "tower.pt")  # image-tower-only state dict
    full = {f"visual.{k}": v for k, v in tower.items()} | {"logit_scale": torch.tensor(4.6)}
    torch.save(full, tmp_path / "clip.pt")  # a whole open_clip state dict (text keys ignored)

    x = batch(64)
    for file in ("tower.pt", "clip.pt"):
        loaded = create_embedder("clip-vit-b-32", pretrained=str(tmp_path / file), input_size=64, seed=99)
        np.testing.assert_array_equal(loaded.embed(x), source.embed(x))
        assert loaded.fingerprint == source.fingerprint and loaded.spec.pretrained == str(tmp_path / file)

    bigger = create_embedder("clip-vit-b-32", pretrained=str(tmp_path / "tower.pt"), input_size=96)
    pos = bigger.backbone.positional_embedding
    assert pos.shape == (1 + 3 * 3, 768)  # interpolated 2x2 -> 3x3 grid, class token kept
    torch.testing.assert_close(pos[0], tower["positional_embedding"][0])
    torch.testing.assert_close(bigger.backbone.conv1.weight, tower["conv1.weight"])
    assert bigger.embed(batch(96)).shape == (3, 512)


def test_torchvision_local_checkpoint_round_trip_and_bad_files(tmp_path):
    with torch.random.fork_rng():
        torch.manual_seed(123)
        reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    loaded = create_embedder("resnet18", pretrained=str(tmp_path / "resnet18.pth"), input_size=64)
    torch.testing.assert_close(loaded.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    x = batch(64)
    reference.fc = torch.nn.Identity()
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(loaded.head(reference.eval()((x - loaded.mean) / loaded.std)), dim=-1)
    np.testing.assert_allclose(loaded.embed(x), expected.numpy(), atol=1e-5)

    torch.save(torchvision.models.mobilenet_v2().state_dict(), tmp_path / "other.pth")
    with pytest.raises(ModelError, match="does not fit ResNet"):
        create_embedder("resnet18", pretrained=str(tmp_path / "other.pth"), input_size=64)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    for name in ("resnet18", "clip-vit-b-32"):
        with pytest.raises(ModelError, match="cannot read checkpoint"):
            create_embedder(name, pretrained=str(tmp_path / "junk.pt"), input_size=64)


@pytest.mark.parametrize("name", ["clip-vit-b-32", "resnet18"])
def test_a_model_directory_starts_a_new_model_with_its_backbone_and_a_head_of_its_own(built, name, tmp_path):
    # A distilled student as the start of a fine-tune (a strategy study): its directory, or its weights.pt,
    # is `pretrained`; the backbone's weights carry over and the new model may take a linear head.
    source = built[name]
    save_model_dir(source, tmp_path / "student")
    x = batch(64)
    for start in (tmp_path / "student", tmp_path / "student" / "weights.pt"):
        same = create_embedder(name, pretrained=str(start), input_size=64)  # the same seed: the same new head
        np.testing.assert_array_equal(same.embed(x), source.embed(x))
        probe = create_embedder(name, pretrained=str(start), input_size=64, head="linear", embedding_dim=32)
        for ours, theirs in zip(probe.backbone.parameters(), source.backbone.parameters()):
            torch.testing.assert_close(ours, theirs)
        assert probe.embed(x).shape == (3, 32)
    with pytest.raises(ModelError, match="does not exist"):
        create_embedder(name, pretrained=str(tmp_path / "nothing" / "weights.pt"), input_size=64)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("resnet18?heda=linear", "resnet18 has no option heda; its options: align, head, seed"),
        ("dlib-resnet?align=dlib-chip", "dlib-resnet has no option align; its options: backend, box, flip"),
    ],
)
def test_an_option_a_model_does_not_take_is_a_one_line_model_error(spec, message):
    with pytest.raises(ModelError, match=message.replace("?", r"\?")):
        load_model(spec)
